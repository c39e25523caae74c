"""The `ctx` a candidate's `train(ctx)` receives: the whole of the harness that training code sees.

    ctx.device, ctx.seed, ctx.cfg (same dict as build_model's), ctx.vocab_size, ctx.seq_len
    ctx.batches(batch_size)  infinite iterator of (x, y) int64 [B, T] on ctx.device, train split only
    ctx.time_left()          seconds left of the time budget
    ctx.progress()           fraction of the budget used, in [0, 1]: time, or tokens in fixed-token mode
    ctx.done()               True once the budget (time or tokens) is spent: stop and return the model
    ctx.log(step, loss, **k) progress for the terminal; never parsed for a score
    ctx.tokens               tokens served by ctx.batches so far (counted by the harness)
    ctx.settings             execution settings the harness chose for this device (device.py):
                             device_batch_size and grad_accum (memory-fitted, same total batch),
                             dtype, loss_scaling, attention (flex | sdpa), compile, peak_flops
                             (None: MFU unknown). cfg stays the profile's, so the model is the
                             same on every device; only how it is executed adapts.

The budget clock starts when the first training batch is served, or once the startup allowance
has passed since train() was called, whichever comes first. So compiling and warming up on dummy
inputs before touching data is free up to the allowance (upstream autoresearch likewise leaves its
first steps out of the budget), and no candidate can use the allowance to train on data. The
parent process hard-kills the run at startup allowance + budget after it starts, whatever ctx says.

In fixed-token mode (`max_tokens` set) the batch iterator stops after max_tokens tokens, so a
candidate cannot train on more; the wall clock still hard-kills a run that overstays.
"""
from __future__ import annotations

import json
import math
import time
from typing import IO, Any, Callable, Iterator

import torch

from . import device as device_info


class TrainContext:
    def __init__(self, *, device: str, seed: int, cfg: dict[str, Any], budget_s: float,
                 max_tokens: int | None, make_loader: Callable[[int, int], Iterator],
                 startup_allowance_s: float = 0.0, progress_out: IO[str] | None = None,
                 settings: dict[str, Any] | None = None):
        self.device = device
        self.settings = settings if settings is not None else device_info.choose_settings(
            cfg, device_info.detect() if torch.device(device).type == "cuda" else None)
        self.seed = seed
        self.cfg = dict(cfg)
        self.vocab_size = int(cfg["vocab_size"])
        self.seq_len = int(cfg["seq_len"])
        self.budget_s = float(budget_s)
        self.max_tokens = max_tokens
        self.tokens = 0
        self._make_loader = make_loader
        self._progress_out = progress_out
        self._latest_start = time.perf_counter() + startup_allowance_s
        self._t0: float | None = None  # set when the first batch is served

    def elapsed(self) -> float:
        """Seconds of the budget used so far."""
        now = time.perf_counter()
        start = self._latest_start if self._t0 is None else self._t0
        return max(0.0, now - start)

    def time_left(self) -> float:
        return max(0.0, self.budget_s - self.elapsed())

    def progress(self) -> float:
        if self.max_tokens:
            return min(1.0, self.tokens / self.max_tokens)
        return min(1.0, self.elapsed() / self.budget_s)

    def done(self) -> bool:
        if self.max_tokens:
            return self.tokens >= self.max_tokens
        return self.elapsed() >= self.budget_s

    def batches(self, batch_size: int, seq_len: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seq_len = seq_len or self.seq_len
        for x, y in self._make_loader(batch_size, seq_len):
            if self.max_tokens and self.tokens >= self.max_tokens:
                return
            if self._t0 is None:
                self._t0 = min(time.perf_counter(), self._latest_start)
            self.tokens += x.numel()
            yield x, y

    def log(self, step: int, loss: float, **extra: Any) -> None:
        if self._progress_out is None:
            return
        loss = float(loss)
        record = {"step": int(step), "loss": loss if math.isfinite(loss) else None,
                  "tokens": self.tokens, "elapsed": round(self.elapsed(), 3),
                  "progress": round(self.progress(), 4),
                  **{k: v for k, v in extra.items() if isinstance(v, (int, float, str))}}
        self._progress_out.write(json.dumps(record) + "\n")
        self._progress_out.flush()
