"""Generated data: every modular-arithmetic equation once, split by a seeded permutation."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tiktoken

from .cache import BOS_TOKEN, MODULAR_OPS, VALIDATION_DOCS, DataError, atomic_write_bytes
from .tokens import save_tokens

# ---------------------------------------------------------------------------------------------
# modular arithmetic: generated data
# ---------------------------------------------------------------------------------------------


def check_modular(data: dict) -> None:
    p, op, frac = data["modulus"], data["operation"], data["train_fraction"]
    if not isinstance(p, int) or not 2 <= p <= 4096:
        raise DataError(f"modulus must be an integer from 2 to 4096, not {p!r}")
    if op not in MODULAR_OPS:
        raise DataError(f"operation must be one of {' '.join(MODULAR_OPS)}, not {op!r}")
    if op == "/" and any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        raise DataError(f'operation "/" needs a prime modulus (every b ≠ 0 invertible); {p} is not prime')
    if not 0 < frac < 1:
        raise DataError(f"train_fraction must be between 0 and 1, not {frac!r}")
    if data["vocab_size"] != p + 3:
        raise DataError(
            f'source = "modular" has modulus + 3 tokens (residues, op, =, BOS); '
            f"set vocab_size = {p + 3}, not {data['vocab_size']!r}"
        )


def modular_equations(modulus: int, operation: str, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) int64 [n, 6] rows BOS a op b = c, every pair (a, b) once (b ≠ 0 for "/"), split by a
    permutation from seed: round(train_fraction · n) rows train, the rest validate."""
    p = modulus
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(int(operation == "/"), p), indexing="ij"))
    if operation == "/":
        c = a * np.array([pow(int(x), p - 2, p) for x in b]) % p  # Fermat: b^(p-2) is b's inverse
    else:
        c = {"+": a + b, "-": a - b, "*": a * b}[operation] % p
    op_id, eq_id, bos_id = p, p + 1, p + 2
    rows = np.stack([np.full_like(a, bos_id), a, np.full_like(a, op_id), b, np.full_like(a, eq_id), c], axis=1)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    n_train = min(len(rows) - 1, max(1, round(train_fraction * len(rows))))
    return rows[:n_train], rows[n_train:]


def write_modular(data: dict, root: Path, log: Callable[[str], None]) -> None:
    """The modular source's decoding tokenizer and its train and val token files."""
    p, op = data["modulus"], data["operation"]
    enc = tiktoken.Encoding(
        name=f"ar-modular-{p}",
        pat_str=r"\d+",
        mergeable_ranks={str(i).encode(): i for i in range(p)},
        special_tokens={f" {op} ": p, " = ": p + 1, BOS_TOKEN: p + 2},
    )
    atomic_write_bytes(root / "tokenizer" / "tokenizer.pkl", pickle.dumps(enc))
    train, val = modular_equations(p, op, data["train_fraction"], data["seed"])
    for rows, out in ((train, root / "train.npy"), (val, root / VALIDATION_DOCS)):
        save_tokens(out, [rows.astype(np.uint16).ravel()], np.arange(0, rows.size + 1, rows.shape[1]))
    log(f"data: generated {len(train):,} train and {len(val):,} validation equations a {op} b mod {p}")
