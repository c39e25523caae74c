"""The feeder's token budget, as the trainer's pipes see it: no batch takes the count past max_tokens,
however many rows one request asks for (an attack: tests/cheats/one_giant_batch.py)."""

import os
import threading
import time

import numpy as np
import pytest

from autoresearch_bench.feeder import Count, serve
from autoresearch_bench.protocol import BATCH_HEADER, BATCH_REQUEST, FeederSpec, read_exact, write_all

SEQ_LEN, ROWS = 16, 4  # a batch of 64 tokens
BUDGET = 10 * ROWS * SEQ_LEN


@pytest.fixture
def feeder(tmp_path):
    """Requests in, (rows served, tokens counted) out, from a feeder serving a token file of 40 documents."""
    tokens = np.tile(np.arange(1, 101, dtype=np.uint16), 40)
    np.save(tmp_path / "train.npy", tokens)
    np.save(tmp_path / "train.docs.npy", np.arange(0, tokens.size + 1, 100, dtype=np.int64))
    request_r, request_w = os.pipe()
    batch_r, batch_w = os.pipe()
    spec = FeederSpec(str(tmp_path / "train.npy"), 0, False, 60.0, BUDGET, time.perf_counter() + 60, request_r, batch_w)
    count = Count()
    server = threading.Thread(target=serve, args=(spec, count), daemon=True)
    server.start()

    def ask(rows: int) -> tuple[int, int]:
        write_all(request_w, BATCH_REQUEST.pack(1, rows, SEQ_LEN))
        nbytes, _, counted = BATCH_HEADER.unpack(read_exact(batch_r, BATCH_HEADER.size))
        if nbytes:
            assert read_exact(batch_r, nbytes) is not None
        return nbytes // (4 * (SEQ_LEN + 1)), counted

    yield ask
    os.close(request_w)
    server.join(5)
    for fd in (request_r, batch_r, batch_w):
        os.close(fd)


def test_one_request_of_many_budgets_is_refused_whole(feeder):
    assert feeder(8 * BUDGET // SEQ_LEN) == (0, 0)  # the cheat: 8 budgets in one batch
    assert feeder(ROWS) == (ROWS, ROWS * SEQ_LEN)  # the budget is all still there


def test_batches_are_served_until_the_next_would_pass_the_budget(feeder):
    served = [feeder(ROWS) for _ in range(10)]  # honest: exactly the budget
    assert served[-1] == (ROWS, BUDGET)
    assert feeder(ROWS) == (0, BUDGET) and feeder(1) == (0, BUDGET)
