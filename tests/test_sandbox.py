"""Hostile candidates: the sandbox protects the machine and the user, and the honest run still works.

Each hostile candidate wraps the honest tiny candidate's train() with one attack. Attacks that need
Linux namespaces (network, PID) are skipped where the machine has none; the rest hold everywhere.
The candidates whose runs must still succeed share one batch of runs, two at a time.
"""

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from autoresearch_bench import sandbox
from autoresearch_bench.candidate import Candidate
from autoresearch_bench.executor import Run, make_executor
from autoresearch_bench.runner import run_candidate
from autoresearch_bench.storage.schema import RunRecord
from autoresearch_bench.task import load_task

needs_namespaces = pytest.mark.skipif(
    sandbox.namespaces_available() is None, reason="Linux namespaces are not available on this machine"
)


def hostile(task_dir, name: str, attack: str) -> Candidate:
    """The honest candidate, with `attack` run at the start of train(ctx)."""
    source = (task_dir / "train.py").read_text().replace("def train(ctx):", "def honest_train(ctx):")
    body = "".join(f"    {line}\n" for line in attack.strip().splitlines())
    path = task_dir / "candidates" / f"{name}.py"
    path.write_text(
        f"{source}\n\ndef train(ctx):\n    import os, socket, subprocess, time\n{body}    return honest_train(ctx)\n"
    )
    return Candidate(name, path)


# Fixed tokens and a generous start-up allowance: a run on a loaded machine finishes (or is caught)
# for what it does, not killed for starting slowly; the clock only stops a runaway (10 × 1 s + 60 s).
FIXED_TOKENS = dict(budget_s=1, max_tokens=8192)


def generous(task):
    return replace(task.profile("cpu"), startup_allowance_s=60)


def run(task, candidate, isolation="auto", **kw):
    return run_candidate(
        task, generous(task), candidate, seed=0, sandbox=isolation, log=lambda m: None, **FIXED_TOKENS, **kw
    )


STEALS_KEYS = """
leaked = {k: v for k, v in os.environ.items() if "secret" in v or k.endswith(("_KEY", "_TOKEN", "_SECRET"))}
if leaked:
    raise RuntimeError(f"stole {leaked}")"""
PHONES_HOME = """
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"exfiltrated")
except OSError:
    pass"""
WRITES_REPO = """
for path in ({paths}):
    subprocess.run(["sh", "-c", f"echo forged >> {{path}}"])"""  # a shell escapes the audit hook


READS_ENVIRONMENTS = """
import glob
for path in glob.glob("/proc/*/environ"):
    try:
        if b"sk-secret" in open(path, "rb").read():
            raise RuntimeError("FOUND the harness's API key in " + path)
    except PermissionError:
        pass"""
CHECKS_PRIVILEGES = """
status = open("/proc/self/status").read()
caps = [line for line in status.splitlines() if line.startswith(("CapEff", "CapPrm", "CapBnd"))]
if any(int(line.split()[1], 16) for line in caps) or "NoNewPrivs:\t1" not in status:
    raise RuntimeError(f"privileged: uid {os.getuid()}, {caps}")
if os.geteuid() == 0 and os.path.exists("/etc/shadow") and os.access("/etc/shadow", os.R_OK):
    raise RuntimeError("can read /etc/shadow")"""


def orphan_marker(isolation: str) -> str:
    return f"{os.getpid()}{len(isolation)}.4242"


def leaves_orphan(isolation: str) -> str:
    escape = isolation == "auto"  # in a PID namespace even a setsid() escapee dies with the run
    return f'subprocess.Popen(["sleep", "{orphan_marker(isolation)}"], start_new_session={escape})'


@dataclass
class Survived:
    """Runs of hostile candidates whose attacks must fail while the runs themselves succeed."""

    records: dict[str, RunRecord]
    listener: socket.socket  # the port on localhost that phones_home tried to reach
    results: Path  # the results file, and task_dir/task.toml: what writes_repo tried to forge
    task_dir: Path


@pytest.fixture(scope="module")
def survived(shared_tiny_task_dir: Path) -> Iterator[Survived]:
    """One run of each such candidate, two runs at a time, with API keys in the harness's
    environment; the attacks that need namespaces only where the machine has them."""
    task_dir = shared_tiny_task_dir
    task = load_task(task_dir)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    results = task_dir.parent.parent / "results.tsv"
    results.write_text("commit\n")
    attacks = {"steals_keys": ("off", STEALS_KEYS), "leaves_orphan_off": ("off", leaves_orphan("off"))}
    if sandbox.namespaces_available() is not None:
        writes = WRITES_REPO.format(paths=f"{str(task_dir / 'task.toml')!r}, {str(results)!r}")
        attacks.update(
            phones_home=("auto", PHONES_HOME.format(port=listener.getsockname()[1])),
            writes_repo=("auto", writes),
            leaves_orphan_auto=("auto", leaves_orphan("auto")),
            reads_parent_env=("auto", READS_ENVIRONMENTS),
            checks_privileges=("auto", CHECKS_PRIVILEGES),
        )
    runs = [
        Run(
            task,
            generous(task),
            hostile(task_dir, name, attack),
            0,
            dict(**FIXED_TOKENS, sandbox=isolation, results_paths=(results,) if name == "writes_repo" else ()),
        )
        for name, (isolation, attack) in attacks.items()
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-secret")
        env.setenv("HF_TOKEN", "hf-secret")
        records = make_executor("local", slots=2).map(runs, log=lambda m: None)
    time.sleep(0.5)  # killed processes take a moment to go
    yield Survived({run.candidate.name: r for run, r in zip(runs, records)}, listener, results, task_dir)
    listener.close()


def test_api_keys_do_not_reach_the_candidate(survived):
    record = survived.records["steals_keys"]
    assert record.status == "ok", record.error


@needs_namespaces
def test_the_harness_s_processes_and_their_environment_are_out_of_sight(survived):
    assert survived.records["reads_parent_env"].status == "ok", survived.records["reads_parent_env"].error


@needs_namespaces
def test_candidate_code_runs_without_root_and_without_capabilities(survived):
    record = survived.records["checks_privileges"]
    assert record.status == "ok", record.error


@needs_namespaces
def test_a_user_namespace_works_too(tiny_task, monkeypatch):
    """Where the harness is an ordinary user: a user namespace, every capability dropped."""
    userns = sandbox.Plan("userns", (sandbox.UNSHARE[0], "--user", "--map-root-user", *sandbox.UNSHARE[1:]))
    monkeypatch.setattr(sandbox, "namespaces_available", lambda: userns)
    record = run(tiny_task, Candidate("train", tiny_task.train_file))
    assert record.status == "ok" and record.extra["sandbox"] == "userns", record.error


@needs_namespaces
def test_no_network_even_to_localhost(survived):
    record = survived.records["phones_home"]
    assert record.status == "ok" and record.extra["sandbox"] in ("unprivileged", "userns"), record.error
    assert select.select([survived.listener], [], [], 0)[0] == []  # no connection waits to be accepted


@needs_namespaces
def test_repo_and_results_are_read_only(survived):
    assert survived.results.read_text() == "commit\n"
    assert "forged" not in (survived.task_dir / "task.toml").read_text()
    record = survived.records["writes_repo"]
    assert record.status == "ok", record.error


@pytest.mark.parametrize("isolation", ["off", pytest.param("auto", marks=needs_namespaces)])
def test_no_process_outlives_its_run(survived, isolation):
    record = survived.records[f"leaves_orphan_{isolation}"]
    alive = subprocess.run(["pgrep", "-f", f"sleep {orphan_marker(isolation)}"], capture_output=True, text=True).stdout
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


# Kernel key rings are kept per uid, outside every namespace: the red team's keyring_carries_validation_rows
# stored the validation inputs a scoring model process saw there, and the next run's models read them
# back (val_bpb 0.106 against 3.538). add_key(2) and keyctl(2) through libc, as its candidate reached them.
KEYRING = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
KEY_SPEC_USER_KEYRING, KEYCTL_SEARCH, KEYCTL_READ = -4, 10, 11
if sys.argv[1] == "store":
    payload = b"validation rows"
    key = libc.syscall(248, b"user", b"ar-rows", payload, len(payload), KEY_SPEC_USER_KEYRING)  # add_key
    sys.exit(0 if key > 0 else 3)
key = libc.syscall(250, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", b"ar-rows", 0)  # keyctl
buffer = ctypes.create_string_buffer(64)
size = libc.syscall(250, KEYCTL_READ, key, buffer, 64) if key > 0 else -1  # keyctl
print(buffer.raw[:size].decode() if size > 0 else "")
"""


def in_sandbox(plan: sandbox.Plan, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    tmp.mkdir()
    scratch = sandbox.prepare_scratch(tmp, plan)
    command = sandbox.wrap([sys.executable, "-c", KEYRING, *args], plan, tmp, scratch)
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@needs_namespaces
def test_what_one_run_keeps_in_the_kernel_s_key_rings_the_next_run_cannot_read(tmp_path):
    if os.uname().machine != "x86_64":
        pytest.skip("the syscall numbers above are x86_64's")
    first, second = sandbox.plan("auto"), sandbox.plan("auto")
    stored = in_sandbox(first, tmp_path / "store", "store")
    assert stored.returncode == 0, stored.stderr
    assert in_sandbox(first, tmp_path / "same", "read").stdout.strip() == "validation rows"  # the channel is real
    assert in_sandbox(second, tmp_path / "next", "read").stdout.strip() == ""  # and closed between runs
    if first.uid is not None:
        assert first.uid != second.uid and sandbox.RUN_UIDS[0] <= first.uid < sandbox.RUN_UIDS[-1]


@needs_namespaces
def test_hidden_files_read_as_empty_inside(tmp_path):
    plan = sandbox.namespaces_available()
    scratch = sandbox.prepare_scratch(tmp_path, plan)
    command = sandbox.wrap(["cat", "/etc/hostname", "/etc/passwd"], plan, tmp_path, scratch, hidden=["/etc/hostname"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == Path("/etc/passwd").read_text(), done.stderr


def test_validation_copies_are_the_visible_files_that_hold_a_validation_document(tmp_path, monkeypatch):
    from autoresearch_bench import data

    monkeypatch.setenv("AR_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"f{i}.txt").write_text(f"document {i} " * 20)
    spec = {
        "source": "files",
        "paths": [str(corpus)],
        "extensions": [".txt"],
        "val_fraction": 0.1,
        "tokenizer": "bytes",
        "vocab_size": 257,
        "min_bytes": 1,
    }
    prepared = data.prepare(spec, "copies", log=lambda m: None)
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    val_texts = [t for batch in data.sources.iter_texts([prepared.root / "val" / "val.parquet"]) for t in batch]
    (copy / "same_bytes.py").write_text(val_texts[0])
    found = data.validation_copies(prepared, [str(corpus), str(copy)], log=lambda m: None)
    assert str(copy / "same_bytes.py") in found and len(found) == len(val_texts) + 1
