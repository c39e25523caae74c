"""Parent side of a run: the trusted processes and the sandboxed ones, under a clock the parent owns.

One run = preflight → train → evaluate → audit → a RunRecord:
- preflight: a GPU where the profile needs one, the data prepared (cached), the sandbox planned, the
  scored rows of the run's split cut; a run that cannot start is a record with the reason.
- train: the feeder (trusted, feeder.py) serves batches of the train split to the trainer (candidate
  code, sandboxed, worker.py `train`), counts the tokens and starts the clock; the trainer returns
  weights (model.pt). The process group is killed at startup allowance + budget (+ a grace for the
  last step and the save; 10 × the budget in fixed-token mode): `timeout`. A trainer that hands in
  its weights later than the grace after its budget is a `violation`.
- evaluate: the scorer (trusted, scorer.py) scores the weights through two sandboxed model
  processes and never imports candidate code; it also counts every tensor of the weights file.
- audit: the harness's package and the task's files are hashed before and after; a change is a
  `violation` (so is any change to the results files but the rows the harness appended).
One outcome rule (_outcome) turns each child's end into the record's status: a violation it reported,
else a timeout, else a failure (no result), else its result; the audit may still make it a violation.
Tokens and seconds in the record are the feeder's and the runner's; steps, peak memory and MFU are
what the candidate logged. Nothing the candidate prints is parsed.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import compile_cache, files, git, process
from . import sandbox as sandboxing
from .candidate import Candidate
from .protocol import FeederSpec, ScorerSpec, TrainSpec
from .storage import appends, fingerprints, schema
from .task import Profile, Task, grace_s, source_defaults

if TYPE_CHECKING:  # imported where a run needs it: numpy, pyarrow and tiktoken cost every pytest session
    from . import data

COMPILE_CACHE = "compile-cache"  # in the trainer's scratch folder: its private copy of the trusted cache
FEEDER_REPORT_S = 10  # the feeder's final count, once the trainer is gone


def harness_digest(task: Task) -> str:
    """sha256 over the harness's package and the task's own files (task.toml, tests, docs, train.py;
    not candidates/, which tests and agents add to): what no run may change."""
    package = Path(__file__).resolve().parent
    files = sorted(package.rglob("*.py")) + sorted(
        p
        for p in task.root.resolve().rglob("*")
        if p.suffix in (".py", ".toml", ".md")
        and p.is_file()
        and "candidates" not in p.relative_to(task.root.resolve()).parts
        and "__pycache__" not in p.parts
    )
    h = hashlib.sha256()
    for path in files:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    return h.hexdigest()


class Curve:
    """The loss curve of a run from its progress reports, kept with its record (extra["curve"]):
    [step, elapsed seconds, loss] points, at most MAX_POINTS (every other point is dropped when
    full, so the curve stays spread over the whole run however often the candidate logs). The
    reports come from candidate code: only numbers are kept, for display; nothing is scored on them."""

    MAX_POINTS = 256

    def __init__(self):
        self.points: list[list[float | None]] = []
        self.stride, self.seen = 1, 0

    def add(self, report: dict) -> None:
        step, elapsed, loss = (report.get(k) for k in ("step", "elapsed", "loss"))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, elapsed)):
            return
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        finite = isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss)
        self.points.append([int(step), round(float(elapsed), 3), float(loss) if finite else None])
        if len(self.points) >= self.MAX_POINTS:
            self.points, self.stride = self.points[::2], self.stride * 2


@dataclass(frozen=True)
class Stages:
    """What one run's stages share once preflight has made it ready: the task, profile, candidate and
    seed, the prepared data and scored rows of its split, the sandbox plan, the GPU of its children (and
    how many runs share it), their threads, and its scratch folder."""

    task: Task
    profile: Profile
    candidate: Candidate
    seed: int
    prepared: data.PreparedData
    rows: Path
    eval_split: str
    plan: sandboxing.Plan
    gpu: str | None
    gpu_sharing: int
    threads: int
    tmp: Path


def _outcome(
    record: schema.RunRecord, child: process.Child, stage: str, timed_out: str, succeeded: bool = True
) -> dict | None:
    """The one outcome rule of a run's child processes: a violation it reported, else a timeout (the
    error timed_out says why), else a failure (it gave no result, or succeeded is False), goes into
    the record's status and error; otherwise its result report is returned."""
    result = child.last("result")
    if attempt := child.last("violation"):
        record.status, record.error = "violation", f"{stage}: {attempt['error']}"
    elif timed_out:
        record.status, record.error = "timeout", timed_out
    elif result is None or not succeeded:
        record.status, record.error = process.failure(child, stage)
        if tb := (child.last("error") or {}).get("traceback"):
            record.extra["traceback"] = tb
    else:
        return result
    return None


def _train(
    record: schema.RunRecord,
    run: Stages,
    budget_s: float,
    max_tokens: int | None,
    on_progress: Callable[[dict], None] | None,
    trusted_cache: Path,
) -> Path | None:
    """The training half of a run; fills the record's training fields, returns the weights or None.
    The trainer compiles into a private copy of the trusted compile cache (compile_cache.py), beside
    the weights in its scratch folder."""
    (run.tmp / "feeder").mkdir()
    (run.tmp / "train").mkdir()
    scratch = sandboxing.prepare_scratch(run.tmp / "train", run.plan)
    inner = sandboxing.place(run.candidate.path, scratch, "candidate.py", run.plan)
    split = record.extra.setdefault("split", {})
    copied = time.perf_counter()
    cache_env = compile_cache.private_copy(
        trusted_cache, scratch / COMPILE_CACHE, f"{Path(inner).parent}/{COMPILE_CACHE}", run.plan.uid
    )
    started = time.perf_counter()
    split["cache_copy"] = started - copied
    latest_start = started + run.profile.startup_allowance_s
    request_r, request_w = os.pipe()
    batch_r, batch_w = os.pipe()
    feeder = trainer = None
    try:
        feeder = process.start(
            ("feeder",),
            FeederSpec(
                train_tokens=str(run.prepared.train_tokens),
                seed=run.seed,
                crop=bool(run.profile.data.get("crop", False)),
                budget_s=budget_s,
                max_tokens=max_tokens,
                latest_start=latest_start,
                request_fd=request_r,
                batch_fd=batch_w,
            ),
            run.tmp / "feeder",
            sandboxing.Plan("off", ()),
            pass_fds=(request_r, batch_w),
            limits=False,
        )
        trainer = process.start(
            ("worker", "train"),
            TrainSpec(
                candidate=inner,
                cfg=run.profile.model_config(),
                device=run.profile.device,
                seed=run.seed,
                budget_s=budget_s,
                max_tokens=max_tokens,
                latest_start=latest_start,
                memory_per_row_gb=run.profile.memory_per_row_gb,
                memory_overhead_gb=run.profile.memory_overhead_gb,
                gpu_sharing=run.gpu_sharing,
                scoring_memory_gb=run.profile.scoring_memory_gb,
                request_fd=request_w,
                batch_fd=batch_r,
                file_defaults=source_defaults(run.candidate.path.read_text()),
            ),
            run.tmp / "train",
            run.plan,
            device=run.profile.device,
            gpu=run.gpu,
            threads=run.threads,
            pass_fds=(request_w, batch_r),
            env=cache_env,
        )
        for fd in (request_r, request_w, batch_r, batch_w):
            os.close(fd)
        limit = run.profile.train_limit_s(budget_s, max_tokens)
        done_at, called_at, last_step, curve = None, None, -1, Curve()
        for report in trainer.reports(started + limit):
            if report.get("kind") == "started":
                called_at = time.perf_counter()
            elif report.get("kind") == "progress":
                last_step = report.get("step", last_step)
                curve.add(report)
                if on_progress:
                    on_progress(report)
            elif report.get("kind") == "result":
                done_at = time.perf_counter()
        timed_out = trainer.proc.poll() is None and done_at is None
        trainer.kill()
        served = next(
            (
                r
                for r in feeder.reports(time.perf_counter() + FEEDER_REPORT_S, watch_processes=False)
                if r.get("kind") == "served"
            ),
            {},
        )
    finally:
        for child in (trainer, feeder):
            if child is not None:
                child.kill()
    record.tokens = int(served.get("tokens", 0))
    t0 = float(served.get("t0", latest_start))
    record.steps = last_step + 1
    record.extra["train_wall"] = time.perf_counter() - started
    if called_at is not None:  # where a trainer's start goes: the process and imports, then train()'s own setup
        split["process_start"] = called_at - started
        split["setup"] = max(0.0, min(t0, done_at or t0) - called_at)  # build, compile, warm-up: until the first batch
    if curve.points:
        record.extra["curve"] = curve.points
    over = (
        (
            f"training ran past its limit of {limit:.0f} s (budget {budget_s:.0f} s + "
            f"{run.profile.startup_allowance_s:.0f} s startup allowance) and was killed; "
            f"make train(ctx) return once ctx.done() is True"
        )
        if timed_out
        else ""
    )
    result = _outcome(record, trainer, "training", over, succeeded=trainer.proc.returncode == 0)
    if result is None:
        return None
    if not max_tokens and done_at > t0 + budget_s + grace_s(budget_s):
        record.status = "violation"
        record.error = (
            f"training: the weights came {done_at - t0 - budget_s:.1f} s after the {budget_s:.0f} s "
            f"budget (grace {grace_s(budget_s):.0f} s): stop training once ctx.done() is True"
        )
        return None
    record.seconds = max(0.0, done_at - t0)
    record.steps, record.peak_mem_gb = result["steps"], float(result["peak_mem_gb"])
    record.extra.update(settings=result["settings"], mfu=result["mfu"])
    return scratch / "model.pt"


def _start_scorer(run: Stages) -> process.Child:
    """The scorer, loading the rows and starting its model processes; it waits for the weights' path."""
    (run.tmp / "eval").mkdir()
    (run.tmp / "models").mkdir()
    spec = ScorerSpec(
        candidate=str(run.candidate.path.resolve()),
        cfg=run.profile.model_config(),
        device=run.profile.device,
        seed=run.seed,
        rows=str(run.rows),
        tokenizer_dir=str(run.prepared.tokenizer_dir),
        eval_batch_size=run.profile.eval_batch_size,
        eval_split=run.eval_split,
        metric=run.task.metric,
        max_params=run.task.max_params,
        sandbox_level=run.plan.level,
        sandbox_prefix=run.plan.prefix,
        sandbox_uid=run.plan.uid,
        tmp=str(run.tmp / "models"),
        threads=run.threads,
    )
    return process.start(
        ("scorer",),
        spec,
        run.tmp / "eval",
        sandboxing.Plan("off", ()),
        device=run.profile.device,
        gpu=run.gpu,
        threads=run.threads,
        limits=False,
        stdin=subprocess.PIPE,
    )


def _evaluate(record: schema.RunRecord, profile: Profile, scorer: process.Child, weights: Path) -> None:
    """The evaluation half of a run: hand the scorer the weights, take its result into the record."""
    t0 = time.perf_counter()
    try:
        scorer.proc.stdin.write(f"{weights}\n".encode())
        scorer.proc.stdin.close()
    except BrokenPipeError:  # it failed before (a model process that could not start): its report says why
        pass
    list(scorer.reports(t0 + profile.eval_timeout_s))
    timed_out = scorer.proc.poll() is None
    scorer.kill()
    record.eval_seconds = time.perf_counter() - t0
    over = f"evaluation ran past {profile.eval_timeout_s:.0f} s and was killed" if timed_out else ""
    if (result := _outcome(record, scorer, "evaluation", over)) is not None:
        record.value, record.params = result["value"], result["params"]
        record.extra.update((k, v) for k, v in result.items() if k not in ("kind", "value", "params"))
        record.status = "ok"


def _preflight(
    record: schema.RunRecord,
    task: Task,
    profile: Profile,
    sandbox: str,
    eval_split: str,
    t_start: float,
    log: Callable[[str], None],
) -> tuple[data.PreparedData, sandboxing.Plan, Path] | None:
    """Before any candidate code runs: a GPU where the profile needs one, the data prepared (cached), the
    sandbox planned and the scored rows of this split cut; None, with the record's error saying why,
    when the run cannot start."""
    from . import data

    if profile.device == "cuda" and not _cuda_available():
        record.error = (
            f"profile {profile.name!r} needs a CUDA GPU and none is visible; "
            f"run on a GPU machine or pass --ar-profile cpu"
        )
        return None
    try:
        prepared = data.prepare(profile.data, task.name, log=log)
        record.extra["split"] = {"data": time.perf_counter() - t_start}
    except Exception as e:  # data problems are the task's, but the run must still be recorded
        record.error = f"data: {e}"
        return None
    try:
        plan = sandboxing.plan(sandbox, profile.device, memo_dir=data.cache_root() / "probes")
    except sandboxing.SandboxError as e:
        record.error = str(e)
        return None
    exposed = data.validation_copies(prepared, sandboxing.visible_roots(), log) if plan.isolated else []
    if exposed and sandbox == "strict":
        record.error = (
            f"--ar-sandbox strict: {len(exposed)} files the sandbox must show (the system and Python "
            f"folders) hold validation documents, e.g. {exposed[0]}; build the corpus from files "
            f"outside them (climbmix, or a parquet or files source under your home)"
        )
        return None
    try:  # the scored rows of this split alone: an experiment's scorer never gets the held-out ones
        rows = data.eval_split(
            prepared,
            profile.eval_tokens,
            profile.seq_len,
            bool(profile.data.get("crop", False)),
            profile.data.get("score", "tokens"),
            eval_split,
        )
    except ValueError as e:
        record.status, record.error = "crash", str(e)
        return None
    record.extra.update(
        sandbox=plan.level, eval_split=eval_split, data_id=prepared.data_id, visible_validation_files=len(exposed)
    )
    return prepared, plan, rows


def run_candidate(
    task: Task,
    profile: Profile,
    candidate: Candidate,
    seed: int,
    *,
    budget_s: float | None = None,
    max_tokens: int | None = None,
    results_paths: tuple[Path, ...] = (),
    description: str = "",
    sandbox: str = "auto",
    on_progress: Callable[[dict], None] | None = None,
    eval_split: str = "val",
    gpu: str | None = None,
    gpu_sharing: int = 1,
    log: Callable[[str], None] = print,
    threads: int | None = None,
    trusted_sources: frozenset[str] = frozenset(),
) -> schema.RunRecord:
    """Train and evaluate one candidate with one seed; always returns a record, never raises for
    a bad candidate (its failure is the record's status and error). eval_split "test" scores the
    held-out rows that follow the validation rows (the league's; see scorer.load_eval_data).
    gpu: run the children on that GPU alone (a CUDA_VISIBLE_DEVICES entry); None: as this process.
    gpu_sharing: how many runs train on that GPU at once (the device batch fits their share of it).
    threads: torch threads per child (default: the cores this process may use).
    trusted_sources: sha256 digests of the files whose runs may publish their compile cache."""
    t_start = time.perf_counter()
    commit, dirty = git.state(candidate.path.parent)
    budget_s = float(budget_s or profile.budget_s)
    fingerprint = fingerprints.machine_fingerprint(profile.name, profile.device)
    record = schema.RunRecord(
        task=task.name,
        candidate=candidate.name,
        commit=commit,
        dirty=dirty,
        profile=profile.name,
        seed=seed,
        mode="tokens" if max_tokens else "time",
        budget=max_tokens or budget_s,
        metric=task.metric,
        value=None,
        status="crash",
        description=description or candidate.name,
        error="",
        seconds=0.0,
        tokens=0,
        steps=0,
        peak_mem_gb=0.0,
        params=0,
        eval_seconds=0.0,
        overhead_seconds=0.0,
        machine=fingerprints.fingerprint_id(fingerprint),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={},
    )
    if (ready := _preflight(record, task, profile, sandbox, eval_split, t_start, log)) is None:
        return record
    prepared, plan, rows = ready
    threads = threads or process.usable_cores()
    marks = {p: appends.results_mark(p) for p in results_paths}  # concurrent runs may append meanwhile
    digest = harness_digest(task)
    trusted = files.file_digest(candidate.path) in trusted_sources
    trusted_cache = compile_cache.trusted_dir(task.name, fingerprint)
    with tempfile.TemporaryDirectory(prefix=f"ar-{task.name}-{candidate.name}-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # the sandbox's uid must reach the scratch folders below
        run = Stages(task, profile, candidate, seed, prepared, rows, eval_split, plan, gpu, gpu_sharing, threads, tmp)
        # the scorer starts while the model trains (its start is then off the experiment's critical path),
        # except on a CPU in time mode, where it would take cores from the clocked training
        scorer = _start_scorer(run) if profile.device == "cuda" or max_tokens else None
        try:
            weights = _train(record, run, budget_s, max_tokens, on_progress, trusted_cache)
            if weights is not None:
                scorer = scorer or _start_scorer(run)
                _evaluate(record, profile, scorer, weights)
        finally:
            if scorer is not None:
                scorer.kill()
        audited = time.perf_counter()
        _audit(record, task, digest, marks)
        if record.status == "ok" and trusted:  # a trusted file's kernels: the next runs start from them
            try:
                compile_cache.publish(weights.parent / COMPILE_CACHE, trusted_cache)
            except OSError as e:  # the run stands; only the next runs' compile is slower
                log(f"[autoresearch] the compile cache was not kept ({e}); later runs compile anew")
        record.extra["split"]["audit"] = time.perf_counter() - audited
    record.overhead_seconds = time.perf_counter() - t_start - record.seconds
    return record


def _audit(record: schema.RunRecord, task: Task, digest: str, marks: dict[Path, object]) -> None:
    """After the run: the harness's and task's files unchanged, the results files only appended to,
    the memory within the task's limit; else the record becomes a violation."""
    tampered = [str(p) for p, m in marks.items() if not appends.appended_only(p, m)]
    if harness_digest(task) != digest:
        record.status, record.value = "violation", None
        record.error = f"the harness's or the task's files changed while candidate code ran ({task.root})"
    elif tampered:
        record.status, record.value = "violation", None
        record.error = f"results files were modified while candidate code ran: {', '.join(tampered)}"
    elif record.status == "ok" and task.max_vram_gb and record.peak_mem_gb > task.max_vram_gb:
        record.status = "violation"
        record.error = f"memory limit: peak {record.peak_mem_gb:.1f} GB > limit {task.max_vram_gb} GB"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
