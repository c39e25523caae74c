"""Ctrl-C, SIGTERM, SIGKILL: within 5 s no child of the session is left running (pytest itself may take
longer to print its report on a loaded machine), and nothing interrupted is recorded as `ok`.

The session trains two candidates at once (--ar-slots 2): the task's own and one that never logs and
ignores ctx.done(), training on cached batches forever. Every process of the session is found by a
marker in its environment (PYTHONHASHSEED, which the harness passes on to its children).
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNAWAY = """

def train(ctx):
    model = build_model(ctx.cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [b for _, b in zip(range(4), ctx.batches(ctx.cfg["batch_size"]))]
    while True:                    # never logs, never looks at ctx.done()
        for x, y in batches:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
"""


def marked(marker: str) -> list[int]:
    """Processes whose environment holds PYTHONHASHSEED=marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"PYTHONHASHSEED={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def training(marker: str) -> bool:
    for pid in marked(marker):
        try:
            if b"autoresearch_bench.worker\0train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def signal_while_training(command: list[str], cwd: Path, marker: str, sig: int, start_s: float):
    """Start `command` with its processes marked `marker`, send it `sig` once one of them trains (within
    start_s on a busy machine); within 5 s no process of it but itself may be left (training, evaluation,
    checks, their children, the sandboxes); it may take longer to print its report. (the process, its output)"""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONHASHSEED": marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # SIG_DFL: Ctrl-C reaches it even when these tests run as a job that ignores SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + start_s
        while not training(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert training(marker), proc.communicate()[0]
        time.sleep(1)
        proc.send_signal(sig)
        sent = time.monotonic()
        children = lambda: [p for p in marked(marker) if p != proc.pid]
        while children() and time.monotonic() < sent + 5:
            time.sleep(0.1)
        left = children()
        assert left == [], (left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left])
        proc.wait(timeout=120)  # its report may take long on a loaded machine (30 s was too short at load 8)
    finally:
        proc.kill()
        output = proc.communicate()[0]
    return proc, output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_nothing_outlives_an_interrupted_session(sig, tiny_task_dir, tmp_path):
    source = (tiny_task_dir / "train.py").read_text().replace("def train(ctx):", "def honest_train(ctx):")
    (tiny_task_dir / "candidates" / "runaway.py").write_text(source + RUNAWAY)
    marker = str(4000 + os.getpid() % 1000 * 3 + [signal.SIGINT, signal.SIGTERM, signal.SIGKILL].index(sig))
    results = tmp_path / "results.tsv"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-q",
        str(tiny_task_dir),
        "--autoresearch",
        "-k",
        "benchmark",
        "--ar-budget",
        "60",
        "--ar-slots",
        "2",
        "--ar-results",
        str(results),
        "--ar-baseline",
        "none",
    ]
    proc, output = signal_while_training(command, tmp_path, marker, sig, start_s=120)
    rows = list(csv.DictReader(results.open(), delimiter="\t")) if results.exists() else []
    assert not [r for r in rows if r["status"] == "ok" and "runaway" in r["description"]], output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_nothing_outlives_an_agent_loop_killed_while_its_pytest_run_trains(sig, tiny_task_dir):
    """The loop's pytest run has a process group of its own (a Ctrl-C at the terminal does not reach it
    twice); a signal to the loop must still end it and everything below it, also while the run prints
    nothing (its train.py never logs: a dead loop's pipe would break only at the next line)."""
    from gitrepo import commit_all

    train = tiny_task_dir / "train.py"
    train.write_text(train.read_text().replace("def train(ctx):", "def honest_train(ctx):") + RUNAWAY)
    repo = commit_all(tiny_task_dir.parent.parent, ignore=".ar/\n")
    marker = str(5000 + os.getpid() % 1000 * 2 + [signal.SIGTERM, signal.SIGKILL].index(sig))
    cli = [
        sys.executable,
        "-m",
        "autoresearch_bench.cli",
        "agent",
        "--task",
        str(repo / "tasks/tiny"),
        "--tag",
        "t",
        "--agent",
        "random-search",
        "--profile",
        "cpu",
        "--budget",
        "60",
        "--max-experiments",
        "1",
    ]
    proc, output = signal_while_training(cli, repo, marker, sig, start_s=300)  # the loop's checks first
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "rerun the same command to resume" in output, output
    results = repo / ".ar/agent/t/results.tsv"
    rows = list(csv.DictReader(results.open(), delimiter="\t")) if results.exists() else []
    assert not [r for r in rows if r["status"] == "keep" and "baseline" not in r["description"]], output
