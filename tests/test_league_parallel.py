"""A league over N slots: (agent, task) loops at once, each pinned to its own GPU, baselines first.

The scheduling is tested with a stand-in for AgentLoop (no training); one end-to-end run of the CLI on
the tiny task checks the real thing: two agent commands at work at once on GPUs 3 and 5 (faked with
CUDA_VISIBLE_DEVICES, which a CPU build of torch ignores), Ctrl-C, and the resume.
"""

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from gitrepo import commit_all

from autoresearch_bench import league as lg
from autoresearch_bench.agent import AgentError, AgentSpec, Experiment, Settings
from autoresearch_bench.executor import gpu_for

# --- scheduling, with AgentLoop replaced by a stand-in ---------------------------------------------


class Loops:
    """Stands in for the AgentLoop class: records every run (agent, task, GPU, the baseline it was
    given, start and end). A run with max_experiments 0 (a task's baseline) returns experiment 0; a
    full run keeps one change after it. `barrier`: every baseline run waits there for the others."""

    def __init__(self, barrier: threading.Barrier | None = None, failing: set = frozenset()):
        self.runs, self.lock, self.barrier, self.failing = [], threading.Lock(), barrier, failing

    def __call__(self, task_dir, spec, tag, settings, *, out_dir, log, baseline, gpu):
        return FakeLoop(self, spec.name, Path(task_dir).name, settings.max_experiments == 0, baseline, gpu)


@dataclass
class FakeLoop:
    loops: Loops
    agent: str
    task: str
    baseline_only: bool
    baseline: Experiment | None
    gpu: str | None

    def run(self) -> list[Experiment]:
        start = time.monotonic()
        if self.baseline_only and self.loops.barrier:
            self.loops.barrier.wait(timeout=30)  # raises unless the other baselines run at the same time
        time.sleep(0.02)
        if (self.agent, self.task) in self.loops.failing:
            raise AgentError("the endpoint is down")
        base = self.baseline or Experiment(0, f"{self.task}-base", 2.0, 0.1, "keep", "baseline")
        history = [base] if self.baseline_only else [base, Experiment(1, self.agent, 1.9, 0.1, "keep", "x")]
        with self.loops.lock:
            self.loops.runs.append({**vars(self), "start": start, "end": time.monotonic()})
        return history


def league(monkeypatch, tmp_path, loops: Loops, slots: int, agents="abc", gpus=("3", "5")) -> tuple[list, dict]:
    """A league of null agents on tasks t1 and t2 with stand-in loops; (leaderboard, league.json)."""
    monkeypatch.setattr(lg, "AgentLoop", loops)
    monkeypatch.setattr(lg, "visible_gpus", lambda: list(gpus))
    monkeypatch.setattr(
        lg.League,
        "_heldout",
        lambda self, task, entries, done: [
            setattr(e, "improvement_sigma", 1.0 + (e.agent == "a")) for e in entries if e.agent in done
        ],
    )
    tasks = [SimpleNamespace(name=t, root=tmp_path / t, direction="lower") for t in ("t1", "t2")]
    out = tmp_path / f"slots{slots}"
    rows = lg.League(
        [AgentSpec(a, kind="null") for a in agents],
        tasks,
        experiments=1,
        settings=Settings(),
        out_dir=out,
        slots=slots,
        log=lambda m: None,
    ).run()
    return rows, json.loads((out / "league.json").read_text())


def overlapping(runs: list[dict]) -> list[tuple[dict, dict]]:
    return [
        (r, s) for i, r in enumerate(runs) for s in runs[i + 1 :] if r["start"] < s["end"] and s["start"] < r["end"]
    ]


def most_at_once(runs: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])  # an end before a start
    return max(itertools.accumulate(step for _, step in events))


def test_slots_run_loops_at_once_on_their_own_gpus_after_each_tasks_baseline(monkeypatch, tmp_path):
    loops = Loops(barrier=threading.Barrier(2))  # both tasks' baselines must run at once
    rows, saved = league(monkeypatch, tmp_path, loops, slots=2)
    baselines = {r["task"]: r for r in loops.runs if r["baseline_only"]}
    assert sorted((r["agent"], r["task"]) for r in baselines.values()) == [("a", "t1"), ("a", "t2")]  # once each
    assert {baselines["t1"]["gpu"], baselines["t2"]["gpu"]} == {"3", "5"}
    agents = [r for r in loops.runs if not r["baseline_only"]]
    assert sorted((r["agent"], r["task"]) for r in agents) == [(a, t) for a in "abc" for t in ("t1", "t2")]
    for r in agents:  # each loop starts from its task's baseline, measured before it, shared
        assert r["start"] >= baselines[r["task"]]["end"] and r["baseline"].commit == f"{r['task']}-base"
    assert most_at_once(loops.runs) == 2
    assert all(r["gpu"] != s["gpu"] for r, s in overlapping(loops.runs))  # never two on one GPU

    serial_loops = Loops()
    serial_rows, serial_saved = league(monkeypatch, tmp_path, serial_loops, slots=1)
    assert most_at_once(serial_loops.runs) == 1 and {r["gpu"] for r in serial_loops.runs} == {"3"}
    assert rows == serial_rows and saved["entries"] == serial_saved["entries"]  # the same league, sooner
    assert [r["agent"] for r in rows] == ["a", "b", "c"] and rows[0]["experiments"] == 2


def test_a_failed_baseline_is_measured_by_the_next_agent_and_no_gpu_means_no_pin(monkeypatch, tmp_path):
    loops = Loops(failing={("x", "t1")})
    rows, saved = league(monkeypatch, tmp_path, loops, slots=2, agents="xa", gpus=())
    assert sorted((r["agent"], r["task"], r["baseline_only"]) for r in loops.runs) == [
        ("a", "t1", False),
        ("a", "t1", True),
        ("a", "t2", False),
        ("x", "t2", False),
        ("x", "t2", True),
    ]
    assert {r["gpu"] for r in loops.runs} == {None}  # the loops share the CPU
    board = {r["agent"]: r for r in rows}
    assert board["x"]["errors"] == "the endpoint is down" and board["x"]["experiments"] == 1


def test_slot_k_gets_gpu_k_round_robin():
    assert [gpu_for(k, ["3", "5"]) for k in range(4)] == ["3", "5", "3", "5"]
    assert gpu_for(0, []) is None


# --- end to end: the CLI, two agent commands on the tiny task ------------------------------------

AGENT = textwrap.dedent("""
    import json, os, pathlib, sys, time
    folder, me = pathlib.Path(sys.argv[1]), sys.argv[2]
    when = "resumed" if (folder / "resume").exists() else "first"
    seen = {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (folder / f"{me}.{when}.json").write_text(json.dumps(seen))
    if when == "first":
        time.sleep(120)  # both agents wait here at once, until the league is interrupted
""")
# The pytest run of each experiment notes the GPU it was given (loaded from the task folder).
CONFTEST = (
    "import os\nwith open(os.environ['AR_TEST_PYTEST_GPUS'], 'a') as f:\n"
    "    f.write(os.environ.get('CUDA_VISIBLE_DEVICES', '-') + '\\n')\n"
)


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def repo(tiny_task_dir: Path) -> Path:
    (tiny_task_dir / "conftest.py").write_text(CONFTEST)
    (tiny_task_dir / "program.md").write_text("Lower val_bpb.")
    return commit_all(tiny_task_dir.parent.parent, ignore=".ar/\nout/\n")


def test_two_loops_at_once_on_two_gpus_share_the_baseline_stop_on_ctrl_c_and_resume(repo, tmp_path):
    seen, script, agents = tmp_path / "seen", tmp_path / "agent.py", tmp_path / "agents.toml"
    seen.mkdir()
    script.write_text(AGENT)
    agents.write_text(
        "".join(f'[agents.{a}]\nkind = "command"\ncmd = "{sys.executable} {script} {seen} {a}"\n' for a in "ab")
    )
    cli = [
        sys.executable,
        "-m",
        "autoresearch_bench.cli",
        "league",
        "--agents",
        str(agents),
        "--tasks",
        "tiny",
        "--experiments",
        "1",
        "--heldout-seeds",
        "2",
        "--name",
        "par",
        "--slots",
        "2",
        "--profile",
        "cpu",
        "--tokens",
        "8192",
        "--out",
        "out",
        "--sandbox",
        "off",
    ]  # the agent notes its pid and GPU in `seen`
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5", "AR_TEST_PYTEST_GPUS": str(tmp_path / "pytest_gpus")}
    # SIG_DFL: Ctrl-C reaches the league even when these tests run as a job that ignores SIGINT
    proc = subprocess.Popen(
        cli,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        started = [seen / f"{a}.first.json" for a in "ab"]
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in started) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(p.exists() for p in started), proc.communicate()[0]  # both agents are at work at once
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, output
    assert "league: 2 loops at once, on GPUs 3, 5" in output
    first = {a: json.loads((seen / f"{a}.first.json").read_text()) for a in "ab"}
    assert {a: s["gpu"] for a, s in first.items()} == {"a": "3", "b": "5"}
    for a in "ab":
        assert f"[{a}/tiny] interrupted; 1 experiments recorded" in output
        deadline = time.monotonic() + 10
        while alive(first[a]["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(first[a]["pid"])  # the agent command was killed with the league
    out = repo / "out/tiny"
    assert [r["description"] for r in rows(out / "a/results.tsv")] == ["baseline"]
    assert [r["description"] for r in rows(out / "b/results.tsv")] == ["baseline (shared)"]

    (seen / "resume").touch()
    done = subprocess.run(cli, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = {a: json.loads((seen / f"{a}.resumed.json").read_text())["gpu"] for a in "ab"}
    assert resumed == {"a": "3", "b": "5"}
    assert (tmp_path / "pytest_gpus").read_text() == "3\n"  # one pytest run: the baseline, on slot 0's GPU
    a, b = rows(out / "a/results.tsv"), rows(out / "b/results.tsv")
    assert [r["status"] for r in a] == [r["status"] for r in b] == ["keep", "discard"]
    assert a[0]["val_bpb"] == b[0]["val_bpb"] and b[0]["description"] == "baseline (shared)"
    assert not (out / "b/bench.jsonl").exists()  # b never measured the baseline itself
    board = json.loads((repo / "out/league.json").read_text())["leaderboard"]
    assert [(r["agent"], r["experiments"], r["keeps"], r["improvement (σ)"]) for r in board] == [
        ("a", 1, 0, 0.0),
        ("b", 1, 0, 0.0),
    ]  # neither changed the file: the baseline's score
    assert "[b/tiny] experiment 1: discard (the change is empty)" in done.stdout
