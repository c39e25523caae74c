"""Step-time probe for a task's train.py on one GPU, with no data movement at all: every batch is
one GPU-resident random batch, so the step time is the model's and the optimizer's alone (the
ceiling the real run, whose batches come from the feeder, is measured against).

    python benchmarks/step_time.py tasks/gpt_pretrain h100 [STEPS] [--profile]

Prints per-step milliseconds, tokens/s and peak memory; with --profile, also torch.profiler's table
of the GPU time of three steps after ten, by kernel (where a step's time goes). The real run's figures come from
`benchmarks/boundary_cost.py` (the whole pipeline: feeder, sandboxed trainer, scorer).
"""

import importlib.util
import statistics
import sys
import time

import torch

from autoresearch_bench.context import TrainContext
from autoresearch_bench.device import choose_settings, detect
from autoresearch_bench.task import load_task

task = load_task(sys.argv[1])
profile = task.profile(sys.argv[2])
args = [a for a in sys.argv[3:] if a != "--profile"]
steps = int(args[0]) if args else 30
profiler = (
    torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
        schedule=torch.profiler.schedule(wait=10, warmup=2, active=3, repeat=1),
    )
    if "--profile" in sys.argv
    else None
)
spec = importlib.util.spec_from_file_location("candidate", task.train_file)
candidate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(candidate)
cfg = profile.model_config()
per_step = cfg.get("total_batch_size", 524288)


class Resident:
    """ctx's batch client, serving one random batch from GPU memory until `steps` steps' tokens."""

    t0 = time.perf_counter() + 600  # the clock starts at the first batch

    def __init__(self):
        self.tokens, self.streams = 0, 0

    def new_stream(self):
        self.streams += 1
        return self.streams

    def fetch(self, stream, rows):
        if self.tokens >= steps * per_step:
            return False
        self.t0 = min(self.t0, time.perf_counter())
        self.tokens += rows.shape[0] * (rows.shape[1] - 1)
        return True


class Log:
    def __init__(self):
        self.times, self.last = [], None

    def write(self, line):
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now
        if profiler:
            profiler.step()

    def flush(self):
        pass


class ResidentContext(TrainContext):
    def batches(self, batch_size, seq_len=None):
        x = torch.randint(0, self.vocab_size, (batch_size, (seq_len or self.seq_len) + 1), device="cuda")
        rows = x.new_empty((batch_size, (seq_len or self.seq_len) + 1), device="cpu").int().numpy()
        stream = self._client.new_stream()
        while self._client.fetch(stream, rows):
            self._taken += batch_size * (seq_len or self.seq_len)
            yield x[:, :-1].contiguous(), x[:, 1:].contiguous()


log = Log()
ctx = ResidentContext(
    device="cuda",
    seed=0,
    cfg=cfg,
    budget_s=1e9,
    max_tokens=steps * per_step,
    client=Resident(),
    settings=choose_settings(cfg, detect(), profile.memory_per_row_gb, profile.memory_overhead_gb),
    progress_out=log,
)
t0 = time.perf_counter()
if profiler:
    profiler.start()
candidate.train(ctx)
torch.cuda.synchronize()
if profiler:
    profiler.stop()
    events = profiler.key_averages()
    print(events.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=70))
tail = log.times[5:]
print(
    f"{len(log.times) + 1} steps in {time.perf_counter() - t0:.1f} s (compile included); step ms after 5: "
    f"median {1e3 * statistics.median(tail):.0f} min {1e3 * min(tail):.0f} max {1e3 * max(tail):.0f}; "
    f"{per_step / statistics.median(tail) / 1e6:.2f} M tok/s; peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB"
)
