"""prepare(spec, task): the spec checked and hashed into a data id, shards, tokenizer and token files
into the cache, each step skipped when done; the scored splits' files (eval_split) and the check for
validation text a sandbox would show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .cache import (
    BOS_TOKEN,
    CACHE_ENV,
    COMMON_KEYS,
    FORMAT_VERSION,
    LATER_KEYS,
    RUNTIME_KEYS,
    SCORE_MODES,
    SOURCE_KEYS,
    SPECIAL_TOKENS,
    SPLITS,
    TEXT_ONLY_KEYS,
    TOKENIZERS,
    VALIDATION_DOCS,
    DataError,
    PreparedData,
    _locked,
    atomic_write_bytes,
    cache_replacing,
    cache_root,
)
from .modular import check_modular, write_modular
from .packing import eval_rows_and_mask
from .sources import build_shards, download_climbmix, existing_shards, iter_texts
from .tokenizer import load_tokenizer, token_bytes, train_tokenizer, write_byte_tokenizer
from .tokens import docs_path, tokenize_shards

# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def prepare(spec: dict, task_name: str, log: Callable[[str], None] = print) -> PreparedData:
    """Build (or find in the cache) the shards, tokenizer and token files of a [data] table."""
    data, runtime = _normalize(spec)
    named = {k: v for k, v in data.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **named}, sort_keys=True).encode())
    root = cache_root() / task_name / digest.hexdigest()[:12]
    if prepared := _read_prepared(root, log):
        return prepared
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data cache {root}: {e.strerror}; set {CACHE_ENV}") from None
    with _locked(root, log):
        if prepared := _read_prepared(root, log):  # another process finished it while we waited
            return prepared
        t0 = time.perf_counter()
        log(f"data: preparing {data['source']} data for {task_name} in {root}")
        atomic_write_bytes(root / "spec.json", json.dumps(data, indent=2, sort_keys=True).encode())
        tok_dir = root / "tokenizer"
        if data["source"] == "modular":
            write_modular(data, root, log)
        else:
            if data["source"] == "climbmix":
                train_shards, val_shard = download_climbmix(data, runtime, root, log)
            elif data["source"] == "parquet":
                train_shards, val_shard = existing_shards(data)
            else:
                train_shards, val_shard = build_shards(data, root, log)
            if data["tokenizer"] == "bytes":
                write_byte_tokenizer(tok_dir)
            elif not (tok_dir / "tokenizer.pkl").exists():
                train_tokenizer(train_shards, data["vocab_size"], data["tokenizer_max_chars"], tok_dir, log)
            enc = load_tokenizer(tok_dir)
            tokenize_shards(enc, train_shards, root / "train.npy", log)
            tokenize_shards(enc, [val_shard], root / VALIDATION_DOCS, log)
        enc = load_tokenizer(tok_dir)
        _close_private(root)
        meta = {
            "vocab_size": enc.n_vocab,
            "bos_id": enc.encode_single_token(BOS_TOKEN),
            "n_train_tokens": len(np.load(root / "train.npy", mmap_mode="r")),
            "n_val_tokens": len(np.load(root / VALIDATION_DOCS, mmap_mode="r")),
            "raw_paths": [str(root / "shards"), str(root / "val")]
            + ([str(Path(data["dir"]).expanduser().resolve())] if data["source"] == "parquet" else []),
        }
        atomic_write_bytes(root / "prepared.json", json.dumps(meta, indent=2).encode())
        log(
            f"data: ready in {time.perf_counter() - t0:.1f} s: {meta['n_train_tokens']:,} train and "
            f"{meta['n_val_tokens']:,} validation tokens, vocab {meta['vocab_size']}"
        )
    return _read_prepared(root)


def validation_copies(prepared: PreparedData, roots: Iterable[str], log: Callable[[str], None] = print) -> list[str]:
    """Files under roots (what a sandbox shows: the system and Python folders) whose bytes equal a
    validation document: a corpus of the machine's own files (source "files", or parquet shards built
    from them, as the offline h100 corpus of /usr and /opt) lies readable beside the candidate. They
    cannot be hidden (the Python installation is among them: on the H200, ctypes/__init__.py was a
    validation document), so records count them and --ar-sandbox strict refuses such data.
    Computed once per data spec (val/visible_copies.json)."""
    cache = prepared.root / "val" / "visible_copies.json"
    if cache.exists():
        return json.loads(cache.read_text())
    spec = json.loads((prepared.root / "spec.json").read_text())
    shard = {
        "files": prepared.root / "val" / "val.parquet",
        "parquet": Path(spec.get("dir", ".")).expanduser() / str(spec.get("val_shard")),
    }.get(spec["source"])
    found: list[str] = []
    if shard is not None and shard.exists():
        t0 = time.perf_counter()
        raw = [text.encode() for batch in iter_texts([shard]) for text in batch]
        docs = {hashlib.blake2b(b, digest_size=16).digest() for b in raw}
        sizes = {len(b) for b in raw}
        for top in roots:
            for dirpath, _, filenames in os.walk(top):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISREG(st.st_mode) or st.st_size not in sizes:
                            continue
                        with open(path, "rb") as f:
                            if hashlib.blake2b(f.read(), digest_size=16).digest() in docs:
                                found.append(path)
                    except OSError:
                        continue
        if found:
            log(
                f"data: warning: {len(found):,} files that candidate code can read (system and Python folders) "
                f"hold validation documents, e.g. {found[0]}: this corpus is not secret from candidates "
                f"({time.perf_counter() - t0:.1f} s, once)"
            )
    atomic_write_bytes(cache, json.dumps(sorted(set(found))).encode())
    return sorted(set(found))


def _normalize(spec: dict) -> tuple[dict, dict]:
    """Split a [data] table into the keys that define the data (defaults filled) and runtime keys."""
    source = spec.get("source")
    if source not in SOURCE_KEYS:
        raise DataError(f"unknown data source {source!r}; set source to one of {', '.join(SOURCE_KEYS)}")
    common = {k: v for k, v in COMMON_KEYS.items() if source != "modular" or k not in TEXT_ONLY_KEYS}
    defaults = {**common, **SOURCE_KEYS[source]}
    unknown = set(spec) - set(defaults) - set(RUNTIME_KEYS) - {"source"}
    if unknown:
        raise DataError(
            f"unknown [data] keys {sorted(unknown)} for source {source!r}; "
            f"allowed: {sorted({*defaults, *RUNTIME_KEYS})}"
        )
    data = {"source": source, **{k: spec.get(k, v) for k, v in defaults.items()}}
    runtime = {k: spec.get(k, v) for k, v in RUNTIME_KEYS.items()}
    if runtime["score"] not in SCORE_MODES:
        raise DataError(f"score must be one of {', '.join(SCORE_MODES)}, not {runtime['score']!r}")
    vocab = data["vocab_size"]
    if source == "modular":
        check_modular(data)
    elif data["tokenizer"] not in TOKENIZERS:
        raise DataError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {data['tokenizer']!r}")
    elif data["tokenizer"] == "bytes" and vocab != 257:
        raise DataError(f'tokenizer = "bytes" has 257 tokens (256 bytes + BOS); set vocab_size = 257, not {vocab!r}')
    elif data["tokenizer"] == "bpe" and (not isinstance(vocab, int) or vocab < 256 + len(SPECIAL_TOKENS) + 1):
        raise DataError(
            f"vocab_size must be an integer of at least {256 + len(SPECIAL_TOKENS) + 1} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens + merges), not {vocab!r}"
        )
    if "val_fraction" in data and not 0 < data["val_fraction"] < 1:
        raise DataError(f"val_fraction must be between 0 and 1, not {data['val_fraction']!r}")
    return data, runtime


def _read_prepared(root: Path, log: Callable[[str], None] = print) -> PreparedData | None:
    """The PreparedData of a complete cache folder, or None when anything is missing; a complete
    folder of layout 1 is moved into this layout first."""
    paths = [
        root / "prepared.json",
        root / "train.npy",
        root / "train.docs.npy",
        root / VALIDATION_DOCS,
        docs_path(root / VALIDATION_DOCS),
        root / "tokenizer" / "tokenizer.pkl",
    ]
    old = root / "val" / "val.npy"
    if (root / "prepared.json").exists() and old.exists() and docs_path(old).exists() and not paths[3].exists():
        log(
            f"data: moving {root}'s validation documents to private/ (cache layout 2: the league's held-out rows "
            f"apart from the validation rows); the data id stays"
        )
        (root / "private").mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another process moved them meanwhile
            os.replace(docs_path(old), paths[4])
            os.replace(old, paths[3])
        _close_private(root)
    if not all(p.exists() for p in paths):
        return None
    meta = json.loads(paths[0].read_text())
    meta["raw_paths"] = tuple(meta.get("raw_paths", ()))
    return PreparedData(
        root=root,
        train_tokens=paths[1],
        val_tokens=paths[3],
        tokenizer_dir=paths[5].parent,
        data_id=_data_id(paths[3], paths[4], paths[5].parent),
        **meta,
    )


def _close_private(root: Path) -> None:
    """val/, splits/ and private/ (and what they hold) readable by this user alone."""
    for folder in (root / "val", root / "splits", root / "private"):
        with contextlib.suppress(OSError):  # a cache of another user's: theirs to close
            folder.chmod(0o700)
            for path in folder.iterdir():
                path.chmod(0o600)


def eval_split(
    prepared: PreparedData, n_tokens: int, seq_len: int, crop: bool = False, score: str = "tokens", split: str = "val"
) -> Path:
    """The file of a split's scored rows (rows and mask, as eval_rows_and_mask gives them): "val", the
    first n_tokens of the validation documents, packed, what experiments are scored on; "test", up to as
    many rows again right after them, held out for the league (at least a quarter as many, else
    ValueError). Both are cut on first use of a setting; the test file lies in private/."""
    if split not in SPLITS:
        raise DataError(f"eval_split must be one of {', '.join(SPLITS)}, not {split!r}")
    key = f"{seq_len}-{n_tokens}-{'crop' if crop else 'keep'}-{score}"
    files = {"val": prepared.root / "splits" / f"val-{key}.npz", "test": prepared.root / "private" / f"test-{key}.npz"}
    if not files[split].exists():
        rows, mask = eval_rows_and_mask(prepared.val_tokens, 2 * n_tokens, seq_len, crop, score)
        n_val = math.ceil(n_tokens / seq_len)  # the packer fills rows in order: these are the n_tokens rows
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            files[name].parent.mkdir(exist_ok=True)
            with cache_replacing(files[name]) as tmp, open(tmp, "wb") as f:
                np.savez(f, rows=rows[part], mask=mask[part])
        _close_private(prepared.root)
    if split == "test":
        n_val, held = math.ceil(n_tokens / seq_len), len(np.load(files["test"])["rows"])
        if held < max(1, n_val // 4):
            raise ValueError(
                f"the validation split has {held} rows after the {n_val} scored ones, too few for a "
                f"held-out test; lower eval_tokens or raise val_fraction in [data]"
            )
    return files[split]


def _data_id(val_tokens: Path, val_docs: Path, tokenizer_dir: Path) -> str:
    """12 hex digits of SHA-256 over the validation tokens, their document bounds and the bytes of
    every token: all a score depends on besides the model. Two runs' scores compare only where it is
    equal: the same data spec can give other validation text on another machine (a `files` or
    `parquet` source that saw one file more) or another tokenizer."""
    digest = hashlib.sha256()
    for array in (np.load(val_tokens), np.load(val_docs), token_bytes(tokenizer_dir)):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:12]
