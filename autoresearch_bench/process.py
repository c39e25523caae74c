"""Child processes: a scrubbed environment, an own session, the sandbox, a result pipe, and no orphans.

`start(entry, spec, tmp, plan, ...)` runs `python -m autoresearch_bench.ENTRY SPEC` in its own
session (so its process group can be killed whole), with PR_SET_PDEATHSIG so that it dies with the
thread that started it (SIGTERM, SIGKILL or a crash of the harness leaves nothing running; Ctrl-C
unwinds the waiting thread, whose `finally` kills its children, and `kill_all` ends the others), inside
the sandbox when `plan` has namespaces (then the PID namespace takes every process of it along).
Its JSON-line reports arrive on a private pipe (`Child.reports`); its stdout and stderr go to a log
file and are never parsed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import protocol, sandbox

# Variables a child may inherit; everything else (API keys, tokens, cloud credentials, the cache path) is dropped.
ENV_KEEP = {
    "PATH",
    "LANG",
    "LC_ALL",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "CUDA_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
}
ENV_KEEP_PREFIXES = ("NCCL_", "NVSHMEM_", "TORCH_SYMM_MEM_")
_PR_SET_PDEATHSIG = 1
_live: set[Child] = set()  # started and not yet killed: what kill_all() ends
_live_lock = threading.Lock()


def child_env(gpu: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The scrubbed environment of a child; `gpu` pins it to that one GPU, `threads` caps its threads."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def usable_cores() -> int:
    """Cores this process may use: its affinity mask (taskset), capped by a cgroup CPU quota (docker --cpus)."""
    cores = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    return cores


def die_with_parent() -> None:
    """preexec_fn: the child is killed when the thread that started it ends (SIGKILL of the harness too)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec(device: str, limits: bool) -> None:
    """preexec_fn of a child: it dies with the thread that started it; the sandbox's resource limits."""
    die_with_parent()
    if limits:
        sandbox.set_limits(device)


def kill_all() -> int:
    """SIGKILL every child still running (Ctrl-C with runs in other threads); how many there were.
    Their threads then see them gone and return their records, which the caller drops."""
    with _live_lock:
        children = list(_live)
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
    return len(children)


@dataclass(eq=False)
class Child:
    """A started child: its process, its report pipe and its log."""

    proc: subprocess.Popen
    reports_fd: int
    log: Path
    buffer: bytes = b""
    records: list[dict] = field(default_factory=list)
    eof: bool = False

    def reports(self, deadline: float, watch_processes: bool = True) -> Iterator[dict]:
        """Yield reports until the child closes the pipe or exits, the deadline passes, or the run
        starts more processes than the sandbox allows (then a violation report is yielded)."""
        while (remaining := deadline - time.perf_counter()) > 0:
            if watch_processes and (count := sandbox.processes_in_session(self.proc.pid)) > sandbox.MAX_PROCESSES:
                record = {
                    "kind": "violation",
                    "error": f"the run started {count} processes (limit {sandbox.MAX_PROCESSES}); it was killed",
                }
                self.records.append(record)
                yield record
                return
            if self.eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=remaining)
                return
            ready, _, _ = select.select([self.reports_fd], [], [], min(remaining, 0.5))
            if not ready:
                if self.proc.poll() is not None:  # exited; a leftover grandchild may hold the pipe
                    return
                continue
            chunk = os.read(self.reports_fd, 1 << 16)
            self.eof = not chunk
            *lines, self.buffer = (self.buffer + chunk).split(b"\n")
            for record in filter(None, map(_parse, lines)):
                self.records.append(record)
                yield record

    def last(self, *kinds: str) -> dict | None:
        return next((r for r in reversed(self.records) if r.get("kind") in kinds), None)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the child's process group (orphans included), reap it, close the pipe."""
        with _live_lock:
            _live.discard(self)
        kill_group(self.proc)
        with contextlib.suppress(OSError):
            os.close(self.reports_fd)
        self.reports_fd = -1


def kill_group(proc: subprocess.Popen, reap: bool = True) -> None:
    """SIGKILL the process group of a child started in its own session, orphans included (also when
    the child itself has exited), then reap the child; reap=False where another thread waits on it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if reap:
        proc.wait()


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def start(
    entry: tuple[str, ...],
    spec,
    tmp: Path,
    plan: sandbox.Plan,
    *,
    device: str = "cpu",
    gpu: str | None = None,
    pass_fds: tuple[int, ...] = (),
    readonly: list[str] = (),
    threads: int | None = None,
    stdin=subprocess.DEVNULL,
    name: str | None = None,
    limits: bool = True,
    hidden: list[str] = (),
    env: dict[str, str] | None = None,
) -> Child:
    """Start `python -m autoresearch_bench.ENTRY[0] *ENTRY[1:] SPEC` (sandboxed where plan says); tmp
    holds its scratch folder (tmp/work, the sandbox's /scratch), its spec and its log."""
    name = name or entry[-1]
    scratch = sandbox.prepare_scratch(tmp, plan)
    spec_path = scratch / f"{name}.json"
    protocol.write_spec(spec_path, spec)
    if plan.uid is not None:
        os.chown(spec_path, plan.uid, plan.uid)
    inner = f"{sandbox.SCRATCH}/{spec_path.name}" if plan.isolated else str(spec_path)
    read_fd, write_fd = os.pipe()
    env = {**child_env(gpu, threads), **(env or {}), protocol.RESULT_FD_ENV: str(write_fd)}
    if not plan.isolated:
        env.update(HOME=str(scratch), TMPDIR=str(scratch))
    command = sandbox.wrap(
        [sys.executable, "-m", f"autoresearch_bench.{entry[0]}", *entry[1:], inner],
        plan,
        tmp,
        scratch,
        readonly=list(readonly),
        hidden=list(hidden),
    )
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=scratch,
            env=env,
            stdin=stdin,
            stdout=out,
            stderr=out,
            pass_fds=(write_fd, *pass_fds),
            start_new_session=True,
            preexec_fn=lambda: preexec(device, limits),
        )
    os.close(write_fd)
    child = Child(proc, read_fd, log)
    with _live_lock:
        _live.add(child)
    return child


def failure(child: Child, what: str) -> tuple[str, str]:
    """(status, one-line error) for a child that did not produce a result."""
    record = child.last("error", "violation")
    if record:
        return ("violation" if record["kind"] == "violation" else "crash"), f"{what}: {record['error']}"
    code = child.proc.returncode
    if code is not None and code > 128 and code - 128 in signal.valid_signals():
        code = -(code - 128)  # the sandbox's pid 1 reports a worker killed by signal N as 128 + N
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return "crash", f"{what}: killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    last_line = next((l for l in reversed(child.tail().splitlines()) if l.strip()), "no output")
    return "crash", f"{what}: exited with code {code} ({last_line.strip()})"
