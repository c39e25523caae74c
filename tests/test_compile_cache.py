"""The compile cache: every run starts from the trusted file's kernels; nothing a candidate writes there
reaches another run (not the base it is compared with, not its own next seed)."""

from dataclasses import replace
from pathlib import Path

import pytest

from autoresearch_bench import compile_cache
from autoresearch_bench.candidate import Candidate
from autoresearch_bench.files import file_digest
from autoresearch_bench.runner import run_candidate
from autoresearch_bench.task import load_task

TOKENS = 4 * 16 * 64  # 4 steps of the tiny task

# Each probe lists what its private cache held when it started, then leaves a file of its own there: for
# the trusted file that is its kernels, for a candidate a planted "kernel" for the base's graph, or the
# weights it would hand to its next seed.
PROBE = """
import os as _os

def train(ctx):
    cache = _os.environ["TORCHINDUCTOR_CACHE_DIR"]
    seen = sorted(_os.listdir(cache))
    with open(_os.path.join(cache, {mark!r}), "w") as f:
        f.write("planted")
    model = honest_train(ctx)
    ctx.log(step=0, loss=0.0, seen=",".join(seen))
    return model
"""


def probe(task_dir: Path, name: str) -> Candidate:
    source = (task_dir / "train.py").read_text().replace("def train(ctx):", "def honest_train(ctx):")
    path = task_dir / "candidates" / f"{name}.py"
    path.write_text(source + PROBE.format(mark=f"from-{name}"))
    return Candidate(name, path, "candidates")


@pytest.fixture
def runs(tiny_task_dir, tmp_path, monkeypatch):
    """run(name, seed) → (record, what its cache held at the start); `base` is the trusted file."""
    trusted = tmp_path / "trusted-cache"
    monkeypatch.setattr(compile_cache, "trusted_dir", lambda *key: trusted)
    task = load_task(tiny_task_dir)
    profile = replace(task.profile("cpu"), startup_allowance_s=60)
    files = {name: probe(tiny_task_dir, name) for name in ("base", "candidate")}
    trusted_sources = frozenset({file_digest(files["base"].path)})

    def run(name: str, seed: int = 0):
        seen = []
        record = run_candidate(
            task,
            profile,
            files[name],
            seed,
            max_tokens=TOKENS,
            trusted_sources=trusted_sources,
            on_progress=lambda r: seen.extend(r["seen"].split(",") if "seen" in r else ()),
            log=lambda m: None,
        )
        assert record.status == "ok", record.error
        return record, sorted(filter(None, seen))

    run.trusted = trusted
    return run


def test_a_run_starts_from_the_trusted_files_kernels_and_its_own_writes_die_with_it(runs):
    _, first = runs("base")
    assert first == []  # nothing published yet: a cold start
    assert (runs.trusted / "inductor" / "from-base").is_file()  # the trusted file's run published its cache

    _, seen = runs("candidate")
    assert "from-base" in seen  # warm: the candidate starts from the trusted kernels
    _, next_seed = runs("candidate", seed=1)
    assert "from-candidate" not in next_seed  # nothing it wrote reaches its own next seed
    _, base_again = runs("base", seed=1)
    assert "from-candidate" not in base_again  # nor the base it is compared with
    assert sorted(p.name for p in (runs.trusted / "inductor").iterdir()) == ["from-base"]


def test_only_a_file_with_the_trusted_digest_publishes(runs):
    runs("candidate")
    assert not runs.trusted.exists()


def test_runs_that_end_at_once_each_publish_a_whole_cache(tmp_path):
    """Several slots of one session are one process: their publications must not share a staging folder."""
    import threading

    trusted = tmp_path / "compile" / "task__machine"
    caches = []
    for n in range(4):
        private = tmp_path / f"private-{n}"
        for sub, files in (("inductor", 30), ("triton", 30)):
            (private / sub).mkdir(parents=True)
            for i in range(files):
                (private / sub / f"kernel-{i}").write_text(f"run {n}")
        caches.append(private)
    errors = []

    def publish(private):
        try:
            for _ in range(5):
                compile_cache.publish(private, trusted)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=publish, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    kept = {p.read_text() for p in trusted.rglob("kernel-*")}
    assert len(kept) == 1 and len(list(trusted.rglob("kernel-*"))) == 60  # one run's cache, whole
    assert sorted(p.name for p in trusted.parent.iterdir()) == ["task__machine", "task__machine.lock"]
