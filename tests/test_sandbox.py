"""Hostile candidates: the sandbox protects the machine and the user, and the honest run still works.

Each hostile candidate wraps the honest tiny candidate's train() with one attack. Attacks that need
Linux namespaces (network, PID) are skipped where the machine has none; the rest hold everywhere.
"""
import os
import socket
import subprocess
import threading
import time
from dataclasses import replace

import pytest

from autoresearch_bench import sandbox
from autoresearch_bench.runner import Candidate, run_candidate

needs_namespaces = pytest.mark.skipif(sandbox.namespaces_available() is None,
                                      reason="Linux namespaces are not available on this machine")


def hostile(task_dir, name: str, attack: str) -> Candidate:
    """The honest candidate, with `attack` run at the start of train(ctx)."""
    source = (task_dir / "train.py").read_text().replace("def train(ctx):", "def honest_train(ctx):")
    body = "".join(f"    {line}\n" for line in attack.strip().splitlines())
    path = task_dir / "candidates" / f"{name}.py"
    path.write_text(f"{source}\n\ndef train(ctx):\n    import os, socket, subprocess, time\n{body}"
                    f"    return honest_train(ctx)\n")
    return Candidate(name, path)


def run(task, candidate, isolation="auto", **kw):
    profile = replace(task.profile("cpu"), startup_allowance_s=8)
    return run_candidate(task, profile, candidate, seed=0, budget_s=1, isolation=isolation,
                         log=lambda m: None, **kw)


def test_api_keys_do_not_reach_the_candidate(tiny_task, tiny_task_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    attack = """
leaked = {k: v for k, v in os.environ.items() if "secret" in v or k.endswith(("_KEY", "_TOKEN", "_SECRET"))}
if leaked:
    raise RuntimeError(f"stole {leaked}")"""
    record = run(tiny_task, hostile(tiny_task_dir, "steals_keys", attack), isolation="off")
    assert record.status == "ok", record.error


def test_the_parents_environment_is_closed(tiny_task, tiny_task_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    attack = 'open(f"/proc/{os.getppid()}/environ", "rb").read()'
    record = run(tiny_task, hostile(tiny_task_dir, "reads_parent_env", attack), isolation="off")
    assert record.status == "violation" and "forbidden" in record.error


@needs_namespaces
def test_no_network_even_to_localhost(tiny_task, tiny_task_dir):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True).start()
    attack = f"""
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"exfiltrated")
except OSError:
    pass"""
    record = run(tiny_task, hostile(tiny_task_dir, "phones_home", attack))
    time.sleep(0.5)
    server.close()
    assert record.status == "ok" and record.extra["sandbox"] == "namespaces", record.error
    assert accepted in ([], [None])


def _accept(server):
    try:
        return server.accept()[0].recv(100)
    except OSError:
        return None


@needs_namespaces
def test_repo_and_results_are_read_only(tiny_task, tiny_task_dir):
    results = tiny_task_dir.parent.parent / "results.tsv"
    results.write_text("commit\n")
    attack = f"""
for path in ({str(tiny_task_dir / 'task.toml')!r}, {str(results)!r}):
    subprocess.run(["sh", "-c", f"echo forged >> {{path}}"])"""  # a shell escapes the audit hook
    record = run(tiny_task, hostile(tiny_task_dir, "writes_repo", attack), results_paths=(results,))
    assert results.read_text() == "commit\n"
    assert "forged" not in (tiny_task_dir / "task.toml").read_text()
    assert record.status == "ok", record.error


@pytest.mark.parametrize("isolation", ["off", pytest.param("auto", marks=needs_namespaces)])
def test_no_process_outlives_its_run(tiny_task, tiny_task_dir, isolation):
    marker = f"{os.getpid()}{len(isolation)}.4242"
    escape = isolation == "auto"  # in a PID namespace even a setsid() escapee dies with the run
    attack = f'subprocess.Popen(["sleep", "{marker}"], start_new_session={escape})'
    record = run(tiny_task, hostile(tiny_task_dir, "leaves_orphan", attack), isolation=isolation)
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert record.status == "ok" and alive == "", (record.error, alive)


def test_fork_bomb_is_killed(tiny_task, tiny_task_dir, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_PROCESSES", 20)
    attack = """
for _ in range(60):
    subprocess.Popen(["sleep", "30"])
time.sleep(30)"""
    record = run(tiny_task, hostile(tiny_task_dir, "fork_bomb", attack), isolation="off")
    assert record.status == "violation" and "processes (limit 20)" in record.error


def test_huge_file_is_stopped(tiny_task, tiny_task_dir, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_FILE_BYTES", 64 << 20)
    attack = """
with open("huge.bin", "wb") as f:
    for _ in range(200):
        f.write(b"0" * (1 << 20))"""
    record = run(tiny_task, hostile(tiny_task_dir, "fills_disk", attack), isolation="off")
    assert record.status == "violation" and "larger than the sandbox's limit" in record.error


def test_strict_fails_clearly_without_namespaces(tiny_task, monkeypatch):
    monkeypatch.setattr(sandbox, "namespaces_available", lambda: None)
    record = run(tiny_task, Candidate("train", tiny_task.train_file), isolation="strict")
    assert record.status == "crash" and "--ar-sandbox strict" in record.error
