"""Parent side of a run: training and evaluation in child processes under a clock the parent owns.

One run = prepare data (cached) → `worker train` (hard kill at budget + startup allowance → status
`timeout`) → `worker evaluate` in a fresh process → a RunRecord. Nothing the candidate prints is
parsed; the worker reports over a private pipe. Children get a scrubbed environment (no API keys or
tokens), a scratch folder as their working and temp directory, and their own process group, which is
killed when the run ends so that no orphan outlives it. The results files are hashed before and after
the children run: a candidate that touches them is a `violation`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from . import data, sandbox, storage
from .task import Profile, Task
from .worker import RESULT_FD_ENV

# Variables a run may inherit; everything else (API keys, tokens, cloud credentials) is dropped.
ENV_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "USER", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "PYTHONPATH",
            "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "OMP_NUM_THREADS", "PYTHONHASHSEED",
            "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"}
ENV_KEEP_PREFIXES = ("NCCL_", "NVSHMEM_", "TORCH_SYMM_MEM_")
TOKEN_MODE_TIME_FACTOR = 10  # in fixed-token mode the clock only stops runaways: 10 × the time budget


@dataclass(frozen=True)
class Candidate:
    """A file that satisfies the task contract, and the name its test ids and records use."""
    name: str
    path: Path
    origin: str = "task"


@dataclass
class ChildResult:
    returncode: int | None  # None: killed at the deadline
    wall: float
    records: list[dict] = field(default_factory=list)
    stderr_tail: str = ""

    def last(self, *kinds: str) -> dict | None:
        return next((r for r in reversed(self.records) if r.get("kind") in kinds), None)


def protected_paths(task: Task) -> list[str]:
    """What candidate code may read but never write: the repository holding the task (its tests,
    task.toml, baselines), the harness's own package, and the Python installation (torch included),
    so that no run can change the code that a later run or evaluation imports."""
    repo = task.root.resolve()
    while repo.parent != repo and not (repo / ".git").exists():
        repo = repo.parent
    return sorted({str(repo if (repo / ".git").exists() else task.root.resolve().parent),
                   str(Path(__file__).resolve().parent), sys.prefix, sys.base_prefix})


def ancestor_procs() -> list[str]:
    """/proc folders of this process and its ancestors: their environments and memory hold what the
    scrubbed child environment leaves out (API keys, the cache path)."""
    found, pid = [], os.getpid()
    while pid > 1:
        found.append(f"/proc/{pid}")
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def child_env(scratch: Path, gpu: str | None = None) -> dict[str, str]:
    """The scrubbed environment of a worker; `gpu` pins it to that one GPU (CUDA_VISIBLE_DEVICES)."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cache = data.cache_root()
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))  # compiled kernels survive runs
    env.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    env.update(TMPDIR=str(scratch), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


class RecordPipe:
    """Reads the JSON-line records a worker writes to its result pipe, with deadlines."""

    def __init__(self, fd: int, proc: subprocess.Popen):
        self.file = os.fdopen(fd, "rb", buffering=0)
        self.proc = proc
        self.buffer = b""
        self.eof = False

    def read(self, deadline: float) -> Iterator[dict]:
        """Yield records until the worker closes the pipe or exits, the deadline passes, or the run
        starts more processes than the sandbox allows (then a violation record is yielded)."""
        while (remaining := deadline - time.perf_counter()) > 0:
            if (count := sandbox.processes_in_session(self.proc.pid)) > sandbox.MAX_PROCESSES:
                yield {"kind": "violation", "error": f"the run started {count} processes (limit "
                                                     f"{sandbox.MAX_PROCESSES}); it was killed"}
                return
            if self.eof:  # the worker closed its end: wait for it to exit, within the deadline
                try:
                    self.proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    pass
                return
            ready, _, _ = select.select([self.file], [], [], min(remaining, 0.5))
            if not ready:
                if self.proc.poll() is not None:  # exited; a leftover grandchild may hold the pipe
                    return
                continue
            chunk = self.file.read(65536)
            self.eof = not chunk
            *lines, self.buffer = (self.buffer + chunk).split(b"\n")
            yield from filter(None, map(_parse, lines))

    def close(self) -> None:
        self.file.close()


def start_worker(mode: str, spec: dict, scratch: Path, isolation: sandbox.Plan, hidden: list[str] = (),
                 stdin=subprocess.DEVNULL) -> tuple[subprocess.Popen, RecordPipe]:
    """Start `python -m autoresearch_bench.worker MODE SPEC` in its own process group (and, where
    the sandbox plan has them, its own namespaces): spec["readonly"] is mounted read-only there and
    `hidden` is covered by an empty tmpfs."""
    spec_path = scratch / f"{mode}.json"
    spec_path.write_text(json.dumps(spec))
    read_fd, write_fd = os.pipe()
    env = child_env(scratch, spec.get("gpu"))
    env[RESULT_FD_ENV] = str(write_fd)
    command = sandbox.wrap([sys.executable, "-m", "autoresearch_bench.worker", mode, str(spec_path)],
                           isolation, readonly=spec.get("readonly", []), hidden=list(hidden))
    with open(scratch / f"{mode}.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=scratch, env=env, stdin=stdin, stdout=log, stderr=log,
                                pass_fds=(write_fd,), start_new_session=True,
                                preexec_fn=functools.partial(sandbox.set_limits, spec.get("device", "cpu")))
    os.close(write_fd)
    return proc, RecordPipe(read_fd, proc)


def spawn(mode: str, spec: dict, scratch: Path, limit_s: float, isolation: sandbox.Plan, hidden: list[str] = (),
          on_record: Callable[[dict], None] | None = None) -> ChildResult:
    """Run a worker until it exits or limit_s passes (then its process group is killed)."""
    t0 = time.perf_counter()
    proc, pipe = start_worker(mode, spec, scratch, isolation, hidden)
    result = ChildResult(returncode=None, wall=0.0)
    for record in pipe.read(t0 + limit_s):
        result.records.append(record)
        if on_record:
            on_record(record)
    pipe.close()
    result.returncode = proc.poll()
    kill_group(proc)
    result.wall = time.perf_counter() - t0
    result.stderr_tail = _tail(scratch / f"{mode}.log")
    return result


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def kill_group(proc: subprocess.Popen, reap: bool = True) -> None:
    """SIGKILL the process group of a child started in its own session, orphans included (also when
    the child itself has exited), then reap the child; reap=False where another thread waits on it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if reap:
        proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _failure(result: ChildResult, what: str) -> tuple[str, str]:
    """(status, one-line error) for a child that did not produce a result."""
    record = result.last("error", "violation")
    if record:
        return ("violation" if record["kind"] == "violation" else "crash"), f"{what}: {record['error']}"
    if result.returncode is not None and result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return "crash", f"{what}: killed by {name}{hint}"
    last_line = next((l for l in reversed(result.stderr_tail.splitlines()) if l.strip()), "no output")
    return "crash", f"{what}: exited with code {result.returncode} ({last_line.strip()})"


def run_candidate(task: Task, profile: Profile, candidate: Candidate, seed: int, *,
                  budget_s: float | None = None, max_tokens: int | None = None,
                  results_paths: tuple[Path, ...] = (), description: str = "", isolation: str = "auto",
                  on_progress: Callable[[dict], None] | None = None, eval_split: str = "val",
                  gpu: str | None = None, log: Callable[[str], None] = print) -> storage.RunRecord:
    """Train and evaluate one candidate with one seed; always returns a record, never raises for
    a bad candidate (its failure is the record's status and error). eval_split "test" scores the
    held-out rows that follow the validation rows (the league's; see evaluate.load_eval_data).
    gpu: run both children on that GPU alone (a CUDA_VISIBLE_DEVICES entry); None: as this process."""
    t_start = time.perf_counter()
    commit, dirty = storage.git_state(candidate.path.parent)
    budget_s = float(budget_s or profile.budget_s)
    fingerprint = storage.machine_fingerprint(profile.name, profile.device)
    record = storage.RunRecord(
        task=task.name, candidate=candidate.name, commit=commit, dirty=dirty, profile=profile.name,
        seed=seed, mode="tokens" if max_tokens else "time", budget=max_tokens or budget_s,
        metric=task.metric, value=None, status="crash", description=description or candidate.name,
        error="", seconds=0.0, tokens=0, steps=0, peak_mem_gb=0.0, params=0, eval_seconds=0.0,
        overhead_seconds=0.0, machine=storage.fingerprint_id(fingerprint),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra={})
    if profile.device == "cuda" and not _cuda_available():
        record.error = (f"profile {profile.name!r} needs a CUDA GPU and none is visible; "
                        f"run on a GPU machine or pass --ar-profile cpu")
        return record
    try:
        prepared = data.prepare(profile.data, task.name, log=log)
    except Exception as e:  # data problems are the task's, but the run must still be recorded
        record.error = f"data: {e}"
        return record
    try:
        plan = sandbox.plan(isolation, profile.device, tuple(protected_paths(task)))
    except sandbox.SandboxError as e:
        record.error = str(e)
        return record
    record.extra["sandbox"], record.extra["eval_split"] = plan.level, eval_split
    record.extra["data_id"] = prepared.data_id
    marks = {p: storage.results_mark(p) for p in results_paths}  # concurrent runs may append meanwhile
    with tempfile.TemporaryDirectory(prefix=f"ar-{task.name}-{candidate.name}-") as tmp:
        scratch = Path(tmp)
        common = {"candidate": str(candidate.path.resolve()), "cfg": profile.model_config(),
                  "device": profile.device, "seed": seed, "scratch": str(scratch), "gpu": gpu,
                  "crop": bool(profile.data.get("crop", False)),
                  "forbidden": [str(q.resolve()) for p in results_paths for q in (p, storage.ledger_path(p))]
                               + ancestor_procs(),
                  "readonly": [str(prepared.root), *protected_paths(task),
                               *(str(p.resolve()) for p in results_paths if p.exists())]}
        closed = common["forbidden"] + [*prepared.raw_paths, str(prepared.tokenizer_dir)]
        train_spec = {**common, "budget_s": budget_s, "max_tokens": max_tokens,
                      "startup_allowance_s": profile.startup_allowance_s,
                      "memory_per_row_gb": profile.memory_per_row_gb, "memory_overhead_gb": profile.memory_overhead_gb,
                      "train_tokens": str(prepared.train_tokens), "forbidden": closed}
        limit = (budget_s * TOKEN_MODE_TIME_FACTOR if max_tokens else budget_s) + profile.startup_allowance_s
        trained = spawn("train", train_spec, scratch, limit, plan, hidden=closed,
                        on_record=lambda r: on_progress(r) if on_progress and r.get("kind") == "progress" else None)
        done = trained.last("result")
        if attempt := trained.last("violation"):
            record.status, record.error = "violation", f"training: {attempt['error']}"
        elif trained.returncode is None:
            record.status = "timeout"
            record.error = (f"training ran past its limit of {limit:.0f} s (budget {budget_s:.0f} s + "
                            f"{profile.startup_allowance_s:.0f} s startup allowance) and was killed; "
                            f"make train(ctx) return once ctx.done() is True")
        elif trained.returncode != 0 or done is None:
            record.status, record.error = _failure(trained, "training")
        else:
            record.seconds, record.tokens = done["seconds"], done["tokens"]
            record.steps, record.peak_mem_gb = done["steps"], done["peak_mem_gb"]
            record.extra.update(settings=done["settings"], mfu=done["mfu"])  # device.py: mfu None = unknown
            eval_spec = {**common, "model_path": str(scratch / "model.pt"), "val_tokens": str(prepared.val_tokens),
                         "forbidden": closed, "tokenizer_dir": str(prepared.tokenizer_dir),
                         "eval_tokens": profile.eval_tokens, "eval_batch_size": profile.eval_batch_size,
                         "max_params": task.max_params, "eval_split": eval_split,
                         "metric": task.metric, "score": profile.data.get("score", "tokens")}
            evaluated = spawn("evaluate", eval_spec, scratch, profile.eval_timeout_s, plan)
            result = evaluated.last("result")
            record.eval_seconds = evaluated.wall
            if attempt := evaluated.last("violation"):
                record.status, record.error = "violation", f"evaluation: {attempt['error']}"
            elif evaluated.returncode is None:
                record.status = "timeout"
                record.error = f"evaluation ran past {profile.eval_timeout_s:.0f} s and was killed"
            elif evaluated.returncode != 0 or result is None:
                record.status, record.error = _failure(evaluated, "evaluation")
            else:
                record.value, record.params = result["value"], result["params"]
                record.extra.update((k, v) for k, v in result.items() if k not in ("kind", "value", "params"))
                record.status = "ok"
        record.extra["train_wall"] = trained.wall
    tampered = [str(p) for p, m in marks.items() if not storage.appended_only(p, m)]
    if tampered:
        record.status, record.value = "violation", None
        record.error = f"results files were modified while candidate code ran: {', '.join(tampered)}"
    elif record.status == "ok" and task.max_vram_gb and record.peak_mem_gb > task.max_vram_gb:
        record.status = "violation"
        record.error = f"memory limit: peak {record.peak_mem_gb:.1f} GB > limit {task.max_vram_gb} GB"
    record.overhead_seconds = time.perf_counter() - t_start - record.seconds
    return record


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


class CheckServer:
    """An isolated child that imports one candidate once and answers check requests.

    Checks run candidate code, so they never run in the pytest process: a candidate that patched
    the harness there could forge every later result.
    """

    def __init__(self, task: Task, profile: Profile, candidate: Candidate, seed: int = 0,
                 results_paths: tuple[Path, ...] = (), isolation: str = "auto", start_timeout_s: float = 120):
        self._tmp = tempfile.TemporaryDirectory(prefix=f"ar-checks-{candidate.name}-")
        spec = {"candidate": str(candidate.path.resolve()), "cfg": profile.model_config(), "seed": seed,
                "device": "cpu", "allowed_imports": list(task.imports), "max_params": task.max_params,
                "forbidden": [str(q.resolve()) for p in results_paths for q in (p, storage.ledger_path(p))]
                             + [str(data.cache_root() / task.name)]
                             + ancestor_procs(),
                "readonly": protected_paths(task)}
        self.proc, self.pipe = start_worker("checks", spec, Path(self._tmp.name), sandbox.plan(isolation),
                                            hidden=[str(data.cache_root() / task.name)], stdin=subprocess.PIPE)
        ready = next(self.pipe.read(time.perf_counter() + start_timeout_s), None)
        self.start_error = None if ready and ready.get("kind") == "ready" else self._crash("starting")

    def _crash(self, what: str) -> str:
        tail = _tail(Path(self._tmp.name) / "checks.log")
        last = next((l for l in reversed(tail.splitlines()) if l.strip()), "no output")
        return f"the check process died while {what}: {last.strip()}"

    def run(self, name: str, timeout_s: float = 300, **params) -> dict:
        """Run one named check; returns {"ok": bool, "detail" or "error": str, "seconds": float}."""
        if self.start_error:
            return {"ok": False, "error": self.start_error, "seconds": 0.0}
        try:
            self.proc.stdin.write((json.dumps({"check": name, **params}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"ok": False, "error": self._crash(f"running {name}"), "seconds": 0.0}
        for record in self.pipe.read(time.perf_counter() + timeout_s):
            if record.get("kind") == "violation":
                return {"ok": False, "error": record["error"], "seconds": 0.0}
            if record.get("kind") == "check" and record.get("name") == name:
                return record
        alive = self.proc.poll() is None
        return {"ok": False, "seconds": timeout_s if alive else 0.0,
                "error": f"check {name} did not finish within {timeout_s:.0f} s" if alive
                else self._crash(f"running {name}")}

    def close(self) -> None:
        kill_group(self.proc)
        self.pipe.close()
        self._tmp.cleanup()
