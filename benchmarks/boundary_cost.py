"""One run of a task's train.py through whichever harness is importable, with its timings as JSON.

    python benchmarks/boundary_cost.py TASK PROFILE TOKENS|0 [SEED] > record.json

Run it twice in one call, once with PYTHONPATH at another checkout of the harness (e.g. the last
commit before the trust boundary: `git archive e9a86b2 autoresearch_bench | tar -x -C old/`), to
see what the boundary costs: training step time (tokens / seconds), evaluation seconds, the score.
"""

import json
import sys
import time

from autoresearch_bench.candidate import Candidate
from autoresearch_bench.runner import run_candidate
from autoresearch_bench.task import load_task

task = load_task(sys.argv[1])
profile = task.profile(sys.argv[2])
tokens = int(sys.argv[3]) or None
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
t0 = time.perf_counter()
last = {}


def progress(record):
    last.update(record)
    if record.get("step", 0) % 25 == 0:
        print(f"step {record['step']} loss {record.get('loss')} tok/s {record.get('tok_per_s')}", file=sys.stderr)


record = run_candidate(
    task,
    profile,
    Candidate("train", task.train_file),
    seed,
    max_tokens=tokens,
    on_progress=progress,
    log=lambda m: print(m, file=sys.stderr),
)
out = record.to_dict()
out["wall"] = time.perf_counter() - t0
out["tokens_per_s"] = record.tokens / record.seconds if record.seconds else None
out["last_progress"] = last
print(json.dumps(out))
