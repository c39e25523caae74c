"""Evaluation in a fresh process: the harness computes the metric itself from the model's logits.

Metrics (the task's [task] metric picks one; the record's extra fields hold the others):
- val_bpb = sum over scored tokens of the cross-entropy in nats / (ln 2 × sum of their UTF-8 bytes);
  special tokens (BOS) have zero bytes and are excluded from both sums, as in autoresearch;
- val_loss = mean cross-entropy in nats per scored position;
- val_accuracy = fraction of scored positions whose argmax logit is the target.
The scored positions are a bool mask over the targets that the data layer derives from document
boundaries, per the task's `[data] score` (data.eval_rows_and_mask): "tokens" (default) scores
every target but BOS; "answers" only the last token of each document, e.g. the c of a modular
equation "BOS a + b = c", so that the given a and b are never scored. The model still sees whole
rows, so the probes below are the same for every metric.

The validation rows are read *before* candidate code is imported; afterwards the validation folder is
forbidden to the process as well, so build_model cannot read the answers. The first batch is scored
first, then probed on the trained model in exactly the scoring mode (eval, no_grad, same shapes, real
data), so a model cannot look causal only when a check runs:
- causality: tokens after position t replaced with another row's → logits at ≤ t must not move;
- batch independence: the other rows replaced → row 0's logits must not move;
- determinism: the same batch again → the same logits (no state carried between calls).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Probe tolerance: |Δlogits| ≤ ATOL + RTOL · max|logits|. CPU runs in fp32; CUDA under bf16 autocast,
# where the same row computed in a different batch composition may differ by bf16 rounding.
PROBE_TOL = {"cpu": (1e-4, 1e-5), "cuda": (3e-2, 1e-2)}


class EvalViolation(Exception):
    """The trained model broke a rule (shape, finiteness, causality, batch independence, limits)."""


@dataclass(frozen=True)
class Targets:
    """What is scored: mask [N, seq_len] over the targets rows[:, 1:]; for val_bpb, the byte length of
    every token id (None for the other metrics)."""
    mask: torch.Tensor
    token_bytes: torch.Tensor | None


def load_eval_data(spec: dict) -> tuple[torch.Tensor, Targets]:
    """The scored rows and their Targets. Split "val": the first eval_tokens of the validation split,
    the score agents see. Split "test": up to as many rows again right after them, held out for the
    league (no agent gets a number from them); at least a quarter as many."""
    from .data import eval_rows_and_mask, token_bytes
    n_tokens, seq_len, path = spec["eval_tokens"], spec["cfg"]["seq_len"], Path(spec["val_tokens"])
    score = spec.get("score", "tokens")
    if spec.get("eval_split", "val") == "test":
        n_val = math.ceil(n_tokens / seq_len)
        rows, mask = (a[n_val:] for a in eval_rows_and_mask(path, 2 * n_tokens, seq_len, spec["crop"], score))
        if len(rows) < max(1, n_val // 4):
            raise ValueError(f"the validation split has {len(rows)} rows after the {n_val} scored ones, too "
                             f"few for a held-out test; lower eval_tokens or raise val_fraction in [data]")
    else:
        rows, mask = eval_rows_and_mask(path, n_tokens, seq_len, spec["crop"], score)
    nbytes = (torch.from_numpy(token_bytes(Path(spec["tokenizer_dir"])).astype(np.int64))
              if spec.get("metric", "val_bpb") == "val_bpb" else None)
    return torch.from_numpy(rows), Targets(torch.from_numpy(mask), nbytes)


def _forward(model, x: torch.Tensor, vocab: int, device: str) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        logits = model(x)
    if type(logits) is not torch.Tensor or logits.shape != (*x.shape, vocab):  # a subclass could fake ops
        got = tuple(logits.shape) if type(logits) is torch.Tensor else type(logits).__name__
        raise EvalViolation(f"wrong logits shape: forward({tuple(x.shape)}) returned {got}, "
                            f"expected {(*x.shape, vocab)}")
    return logits.float()


def _assert_close(name: str, a: torch.Tensor, b: torch.Tensor, device: str, what: str) -> float:
    atol, rtol = PROBE_TOL[device]
    diff = (a - b).abs().max().item()
    tol = atol + rtol * a.abs().max().item()
    if not diff <= tol:
        raise EvalViolation(f"{name}: {what} (max |Δlogits| {diff:.3g} > tolerance {tol:.3g}) "
                            f"on the trained model in eval mode")
    return diff


def probe(model, x: torch.Tensor, logits: torch.Tensor, vocab: int, device: str, seed: int) -> dict:
    """Causality, batch-independence and determinism probes on one scored batch (needs ≥ 2 rows)."""
    B, T = x.shape
    t = int(torch.randint(T // 4, max(T // 4 + 1, 3 * T // 4), (1,),
                          generator=torch.Generator().manual_seed(seed)))
    other = torch.roll(x, 1, dims=0)
    future = x.clone()
    future[:, t + 1:] = other[:, t + 1:]
    result = {"probe_position": t}
    result["causality_diff"] = _assert_close(
        "causality", logits[:, :t + 1], _forward(model, future, vocab, device)[:, :t + 1], device,
        f"logits at positions ≤ {t} changed when later tokens changed — the model sees the future")
    neighbours = x.clone()
    neighbours[1:] = torch.flip(x[1:], dims=[1])
    result["batch_diff"] = _assert_close(
        "batch independence", logits[0], _forward(model, neighbours, vocab, device)[0], device,
        "row 0's logits changed when the other rows of the batch changed — rows leak into each other")
    result["determinism_diff"] = _assert_close(
        "determinism", logits, _forward(model, x, vocab, device), device,
        "the same batch gave different logits on a second call — the model keeps state between calls")
    return result


def evaluate_model(build_model, spec: dict, eval_data) -> dict:
    """Build the candidate's model, load the trained weights, score the validation rows."""
    device, cfg = spec["device"], spec["cfg"]
    rows, targets = eval_data
    vocab = int(cfg["vocab_size"])
    model = build_model(dict(cfg))
    if not isinstance(model, torch.nn.Module):
        raise EvalViolation(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
    params = sum(p.numel() for p in model.parameters())
    if spec.get("max_params") and params > spec["max_params"]:
        raise EvalViolation(f"parameter limit: {params:,} parameters > limit {spec['max_params']:,}")
    state = torch.load(spec["model_path"], map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EvalViolation(f"the trained weights do not fit build_model(cfg): {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    nbytes = targets.token_bytes.to(device) if targets.token_bytes is not None else None
    t0 = time.perf_counter()
    nats = correct = scored = byte_nats = total_bytes = 0.0
    probes, batch = {}, spec["eval_batch_size"]
    for i in range(0, len(rows), batch):
        chunk, mask = rows[i:i + batch].to(device), targets.mask[i:i + batch].to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = _forward(model, x, vocab, device)
        if not torch.isfinite(logits).all():
            raise EvalViolation(f"finite: the model produced NaN or inf logits on validation batch {i // batch}")
        nll = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1), reduction="none").view_as(y)
        nats += nll[mask].sum().item()
        correct += (logits.argmax(-1) == y)[mask].sum().item()
        scored += mask.sum().item()
        if nbytes is not None:
            weights = nbytes[y] * mask
            byte_nats += (nll * (weights > 0)).sum().item()
            total_bytes += weights.sum().item()
        if i == 0 and spec.get("probes", True) and len(x) > 1:
            probes = probe(model, x, logits, vocab, device, spec["seed"])
    if scored == 0 or (nbytes is not None and total_bytes == 0):
        raise EvalViolation("the validation rows hold no scored positions; check the task's data and score")
    metrics = {"val_loss": nats / scored, "val_accuracy": correct / scored}
    if nbytes is not None:
        metrics.update(val_bpb=byte_nats / (math.log(2) * total_bytes), val_loss_nats_per_byte=byte_nats / total_bytes)
    return {"value": metrics[spec.get("metric", "val_bpb")], **metrics, "eval_tokens": int(rows[:, 1:].numel()),
            "scored_tokens": int(scored), "params": params, "eval_seconds": time.perf_counter() - t0, **probes}
