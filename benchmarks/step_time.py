"""Step-time probe for a task's train.py on one GPU: synthetic (GPU-resident) batches, then the
harness's loader, same compiled model. Prints per-step milliseconds and tokens/s of each phase.

    python benchmarks/step_time.py tasks/gpt_pretrain h100_ref [STEPS]
"""
import importlib.util
import statistics
import sys
import time

import torch

from autoresearch_bench import data
from autoresearch_bench.context import TrainContext
from autoresearch_bench.task import load_task

task = load_task(sys.argv[1])
profile = task.profile(sys.argv[2])
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
spec = importlib.util.spec_from_file_location("candidate", task.train_file)
candidate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(candidate)
prepared = data.prepare(profile.data, task.name)
cfg = profile.model_config()
per_step = cfg.get("total_batch_size", 524288)

for phase in ("synthetic", "loader"):
    times, last = [], [None]

    def make_loader(batch_size, seq_len):
        if phase == "loader":
            yield from data.Loader(prepared.train_tokens, batch_size, seq_len, device="cuda", seed=0)
        x = torch.randint(0, profile.vocab_size, (batch_size, seq_len + 1), device="cuda")
        while True:
            yield x[:, :-1].contiguous(), x[:, 1:].contiguous()

    class Log:
        def write(self, line):
            now = time.perf_counter()
            if last[0] is not None:
                times.append(now - last[0])
            last[0] = now

        def flush(self):
            pass

    ctx = TrainContext(device="cuda", seed=0, cfg=cfg, budget_s=1e9, max_tokens=steps * per_step,
                       make_loader=make_loader, startup_allowance_s=600, progress_out=Log())
    t0 = time.perf_counter()
    candidate.train(ctx)
    torch.cuda.synchronize()
    tail = times[5:]
    print(f"{phase}: {len(times) + 1} steps in {time.perf_counter() - t0:.1f} s (compile included); "
          f"step ms after 5: median {1e3 * statistics.median(tail):.0f} min {1e3 * min(tail):.0f} "
          f"max {1e3 * max(tail):.0f}; {per_step / statistics.median(tail) / 1e6:.2f} M tok/s; "
          f"peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", flush=True)
    print("  first steps ms:", [round(1e3 * t) for t in times[:8]], flush=True)
