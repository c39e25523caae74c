"""The feeder: the trusted process that serves training batches and owns the training clock.

    python -m autoresearch_bench.feeder SPEC.json

It holds the train token file (the training process sees no data file at all), packs rows as
data.RowStream does (BOS-aligned best fit, a fresh shuffled order per stream from the run's seed) and
writes them to the trainer's batch pipe, one batch per request. It counts every token it serves and
starts the clock at the first batch served, or at the spec's latest_start, whichever comes first; it
serves nothing once the budget is spent: no more than max_tokens in fixed-token mode, no batch after
clock start + budget in time mode. A batch that would take the count past max_tokens is refused
whole (an answer of no rows, as for a spent budget): checked before the batch only, one request of
many times the budget would be served. When the trainer is gone (its end of the request pipe closed) it
reports {"kind": "served", "tokens", "t0", "batches"} to the runner, whose record takes the tokens
and the clock from this report alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data
from .protocol import BATCH_HEADER, BATCH_REQUEST, Emitter, FeederSpec, read_exact, read_spec, write_all


@dataclass
class Count:
    tokens: int = 0
    batches: int = 0
    t0: float | None = None


def serve(spec: FeederSpec, count: Count) -> None:
    streams: dict[int, Iterator[np.ndarray]] = {}
    while (raw := read_exact(spec.request_fd, BATCH_REQUEST.size)) is not None:
        stream, rows, seq_len = BATCH_REQUEST.unpack(raw)
        now = time.perf_counter()
        clock = count.t0 if count.t0 is not None else min(now, spec.latest_start)
        spent = count.tokens + rows * seq_len > spec.max_tokens if spec.max_tokens else now >= clock + spec.budget_s
        if spent or rows < 1 or seq_len < 1:
            write_all(spec.batch_fd, BATCH_HEADER.pack(0, clock, count.tokens))
            continue
        if stream not in streams:
            streams[stream] = iter(data.RowStream(Path(spec.train_tokens), rows, seq_len, spec.seed, spec.crop))
        buf = next(streams[stream])
        if buf.shape != (rows, seq_len + 1):  # a stream keeps its shape; another shape starts a stream of its own
            streams[stream] = iter(data.RowStream(Path(spec.train_tokens), rows, seq_len, spec.seed, spec.crop))
            buf = next(streams[stream])
        count.t0 = clock
        count.tokens += rows * seq_len
        count.batches += 1
        write_all(spec.batch_fd, BATCH_HEADER.pack(buf.nbytes, count.t0, count.tokens), buf)


def main(argv: list[str] | None = None) -> int:
    spec = read_spec(Path((sys.argv[1:] if argv is None else argv)[0]))
    count = Count()
    try:
        serve(spec, count)
    except BrokenPipeError:  # the trainer is gone: its end is the run's business, not the feeder's
        pass
    Emitter()(
        "served", tokens=count.tokens, batches=count.batches, t0=count.t0 if count.t0 is not None else spec.latest_start
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
