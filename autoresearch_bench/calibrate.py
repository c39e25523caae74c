"""Machine speed: a short, fixed matmul loop, timed in a plain subprocess, for time-budget comparisons.

Under a time budget the machine's speed is part of the score: the same train.py on a machine
that runs 20% slower (other load, throttling, another GPU clock) trains 20% fewer steps and scores
worse. So a time-mode session measures the speed before and after its runs, stores it with each
record (`extra["calibration"]`) and with a saved baseline, and calls a comparison `not comparable`
when the speed now departs from the baseline's, or the two measurements disagree, by more than
TOLERANCE (the session: autoresearch_bench/session.py).

    measure(device)              GFLOP/s per part of the machine, measured by `python -m
                                 autoresearch_bench.calibrate DEVICE`, which imports torch and
                                 nothing of a candidate and inherits this process's environment
                                 (OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES), as the runs do: {"cpu": …}
                                 with the threads the runs get, or {"cuda": …} for the GPU
    mean(a, b)                   per-device mean of two measurements (before and after the runs)
    around(calibration)          that mean of a stored {"before": …, "after": …}
    mismatch(now, then, what)    why speed `now` departs from `then` by more than TOLERANCE, or ""

The loop multiplies two fixed square matrices (float32 on the CPU; bfloat16, else float16 on a
GPU) for WINDOWS windows of WINDOW_S seconds each and reports the median rate, so that one blip
does not decide; it takes about WINDOWS × WINDOW_S seconds plus the torch (and CUDA) start.
Measured, four processes one after another on idle machines: a 2-core CPU within 1% (512²), down
to an eighth with two other busy processes; an H200 machine's GPU within 1%, its 16 shared cores
within 8% (1024²; 512² within 12%), but one thread of them 20% apart, too noisy for TOLERANCE: so a
GPU's calibration measures the GPU alone, and the steps of the task's own train.py (session.py)
stand for the rest of the machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

TOLERANCE = 0.15  # a speed that departs from another by more than this fraction does not compare
WINDOWS, WINDOW_S = 5, 0.2
SIZES = {"cpu": 1024, "cuda": 4096}
BATCHES = {"cpu": 1, "cuda": 8}  # matmuls per timing step (one synchronization per batch on a GPU)


def _rate(device: str) -> float:
    """GFLOP/s of the fixed matmul loop on device (this process, with its threads)."""
    import torch

    n = SIZES[device]
    dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
    out = torch.empty_like(a)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def batch() -> None:
        for _ in range(BATCHES[device]):
            torch.mm(a, b, out=out)
        sync()

    batch()  # warm-up: allocation, kernel selection
    rates = []
    for _ in range(WINDOWS):
        count, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < WINDOW_S:
            batch()
            count += BATCHES[device]
        rates.append(count * 2 * n**3 / elapsed / 1e9)
    return statistics.median(rates)


def measure(device: str = "cpu", timeout_s: float = 120) -> dict[str, float]:
    """The machine's speed now: {device: GFLOP/s} (see the module's docstring). Raises
    RuntimeError with a one-line reason when the measuring process fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "autoresearch_bench.calibrate", device],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the calibration did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the calibration exited with code {done.returncode} ({last})")
    return json.loads(done.stdout)


def mean(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Per-device mean of two measurements, over the devices both have."""
    return {k: (a[k] + b[k]) / 2 for k in a if k in b}


def around(calibration: dict) -> dict[str, float]:
    """The speed around a schedule's runs: the mean of a calibration's {"before": …, "after": …}."""
    return mean(calibration.get("before", {}), calibration.get("after", {}))


def mismatch(now: dict[str, float], then: dict[str, float], what: str) -> str:
    """'' when every device measured in both is within TOLERANCE of `then`, else a one-line reason
    naming the device that departs most, e.g. "the cpu ran 23% slower than {what} (41.0 against 53.2
    GFLOP/s)"."""
    shared = [k for k in now if then.get(k)]
    if not shared:
        return ""
    key = max(shared, key=lambda k: abs(now[k] / then[k] - 1))
    change = now[key] / then[key] - 1
    if abs(change) <= TOLERANCE:
        return ""
    return (
        f"the {key} ran {abs(change):.0%} {'slower' if change < 0 else 'faster'} than {what} "
        f"({now[key]:.1f} against {then[key]:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    device = sys.argv[1]
    print(json.dumps({device: round(_rate(device), 3)}))
