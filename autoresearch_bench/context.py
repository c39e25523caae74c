"""The `ctx` a candidate's `train(ctx)` receives: the whole of the harness that training code sees.

    ctx.device, ctx.seed, ctx.cfg (same dict as build_model's), ctx.vocab_size, ctx.seq_len
    ctx.batches(batch_size)  iterator of (x, y) int64 [B, T] on ctx.device, train split only; it ends
                             when the budget is spent (the feeder serves no more)
    ctx.time_left()          seconds left of the time budget
    ctx.progress()           fraction of the budget used, in [0, 1]: time, or tokens in fixed-token mode
    ctx.done()               True once the budget (time or tokens) is spent: stop and return the model
    ctx.log(step, loss, **k) progress for the terminal; never parsed for a score
    ctx.tokens               tokens handed to train() so far (batches fetched ahead not counted)
    ctx.settings             execution settings the harness chose for this device (device.py):
                             device_batch_size and grad_accum (memory-fitted, same total batch),
                             dtype, loss_scaling, attention (flex | sdpa), compile, peak_flops
                             (None: MFU unknown). cfg stays the profile's, so the model is the
                             same on every device; only how it is executed adapts.

The batches come from the feeder, a trusted process of its own (feeder.py): it counts the tokens,
starts the clock at the first batch served (or once the startup allowance has passed, whichever
comes first) and serves none past the budget. Nothing in this object is trusted: a candidate that
rewrites it fools only itself, since the record's tokens and seconds are the feeder's and the
runner's. Compiling and warming up on dummy inputs before the first batch is free up to the
allowance (upstream autoresearch likewise leaves its first steps out of the budget).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import torch

from .protocol import BATCH_HEADER, BATCH_REQUEST, read_exact, read_into, write_all

PREFETCH = 3  # batches fetched ahead on CUDA, so the pipe and the copy stay off the GPU's critical path


class BatchClient:
    """The trainer's end of the feeder's pipes; one request, one batch, under a lock."""

    def __init__(self, request_fd: int, batch_fd: int, latest_start: float):
        self.request_fd, self.batch_fd = request_fd, batch_fd
        self.t0 = latest_start
        self._streams = 0
        self._lock = threading.Lock()

    def new_stream(self) -> int:
        self._streams += 1
        return self._streams

    def fetch(self, stream: int, rows: np.ndarray) -> bool:
        """Fill rows (int32 [B, T + 1]) with the stream's next batch; False once the budget is spent."""
        with self._lock:
            write_all(self.request_fd, BATCH_REQUEST.pack(stream, rows.shape[0], rows.shape[1] - 1))
            header = read_exact(self.batch_fd, BATCH_HEADER.size)
            if header is None:
                return False
            nbytes, self.t0, _ = BATCH_HEADER.unpack(header)
            if nbytes == 0:
                return False
            if nbytes != rows.nbytes or not read_into(self.batch_fd, memoryview(rows).cast("B")):
                raise RuntimeError("the feeder sent a batch of the wrong size")
            return True


class TrainContext:
    def __init__(
        self,
        *,
        device: str,
        seed: int,
        cfg: dict[str, Any],
        budget_s: float,
        max_tokens: int | None,
        client: BatchClient,
        settings: dict[str, Any],
        progress_out: IO[str] | None = None,
    ):
        self.device = device
        self.settings = settings
        self.seed = seed
        self.cfg = dict(cfg)
        self.vocab_size = int(cfg["vocab_size"])
        self.seq_len = int(cfg["seq_len"])
        self.budget_s = float(budget_s)
        self.max_tokens = max_tokens
        self._client = client
        self._progress_out = progress_out
        self._taken = 0

    @property
    def tokens(self) -> int:
        return self._taken

    def elapsed(self) -> float:
        """Seconds of the budget used so far."""
        return max(0.0, time.perf_counter() - min(self._client.t0, time.perf_counter()))

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
        shape = (int(batch_size), int(seq_len or self.seq_len) + 1)
        stream = self._client.new_stream()
        if torch.device(self.device).type == "cuda":
            return self._cuda_batches(stream, shape)
        return self._cpu_batches(stream, shape)

    def _cpu_batches(self, stream: int, shape: tuple[int, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = np.empty(shape, dtype=np.int32)
        while self._client.fetch(stream, rows):
            self._taken += rows.shape[0] * (rows.shape[1] - 1)
            yield torch.from_numpy(rows[:, :-1].astype(np.int64)), torch.from_numpy(rows[:, 1:].astype(np.int64))

    def _cuda_batches(self, stream: int, shape: tuple[int, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A thread fetches into pinned buffers ahead of time; the copy to the GPU is asynchronous."""
        slots = [torch.empty(shape, dtype=torch.int32, pin_memory=True) for _ in range(PREFETCH + 1)]
        copied: list[torch.cuda.Event | None] = [None] * len(slots)
        free, ready = queue.Queue(), queue.Queue()
        for i in range(len(slots)):
            free.put(i)

        def produce() -> None:
            try:
                while (i := free.get()) is not None:
                    if copied[i] is not None:
                        copied[i].synchronize()
                    if not self._client.fetch(stream, slots[i].numpy()):
                        ready.put(None)
                        return
                    ready.put(i)
            except BaseException as e:  # hand the error to the consumer
                ready.put(e)

        threading.Thread(target=produce, name="ar-batches", daemon=True).start()
        try:
            while (i := ready.get()) is not None:
                if isinstance(i, BaseException):
                    raise i
                xy = slots[i].to(self.device, non_blocking=True).long()
                copied[i] = torch.cuda.Event()
                copied[i].record()
                free.put(i)
                self._taken += shape[0] * (shape[1] - 1)
                yield xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
        finally:
            free.put(None)

    def log(self, step: int, loss: float, **extra: Any) -> None:
        if self._progress_out is None:
            return
        loss = float(loss)
        record = {
            "step": int(step),
            "loss": loss if math.isfinite(loss) else None,
            "tokens": self.tokens,
            "elapsed": round(self.elapsed(), 3),
            "progress": round(self.progress(), 4),
            **{k: v for k, v in extra.items() if isinstance(v, (int, float, str))},
        }
        self._progress_out.write(json.dumps(record) + "\n")
        self._progress_out.flush()
