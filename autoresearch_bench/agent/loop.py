"""The agent loop itself: Settings, one experiment's stages (screen, confirm) as pytest runs in the
agent's worktree (worktree.py), the keep rule, the records and the time split.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from .. import calibrate, git, htmlreport, options, sandbox, stats
from ..data import cache_root
from ..git import GitError
from ..patch import SCRATCH, changed_files
from ..process import kill_group
from ..storage import appends, baselines, fingerprints, schema
from ..task import default_profile, load_task
from .children import Children
from .plot import write_progress_plot
from .proposers import PROPOSERS, CommandProposer
from .replies import apply_proposal
from .spec import SPEED_ADVICE, AgentError, AgentSpec, Context, Experiment
from .worktree import Worktree

# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """How each experiment is run and judged; equal for every agent of a league."""

    profile: str = "auto"
    seeds: int = 1  # screening seeds (0 …)
    confirm_seeds: int = 3  # fresh seeds that confirm a change that passed the screen
    budget_s: float | None = None
    max_tokens: int | None = None  # fixed-token mode of the harness
    sandbox: str = "auto"
    min_effect: float | None = None  # the paired threshold (still floored); default: from the noise
    max_experiments: int | None = None  # after the baseline, counting earlier sessions of this tag
    max_hours: float | None = None  # this invocation's wall clock
    max_api_tokens: int | None = None  # prompt + completion tokens over the tag's whole run
    run_timeout_s: float | None = None  # limit of one pytest run; default from the profile

    @property
    def mode(self) -> tuple[str, float | None]:
        """(time | tokens, the budget given; None: the profile's)."""
        return ("tokens", self.max_tokens) if self.max_tokens else ("time", self.budget_s)


@dataclass
class Measured:
    """What one run of the task's suite on some seeds gave: a status (ok | crash | discard), the
    candidate's and the re-measured best's {seed: value}, peak memory and the runs' device seconds."""

    status: str
    seeds: tuple[int, ...]
    reason: str = ""
    memory_gb: float = 0.0
    runs: dict[int, float] = field(default_factory=dict)
    best_runs: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    split: dict[str, float] = field(default_factory=dict)
    speed: dict | None = None  # the machine's speed before these runs (calibrate; time mode only)


# Where an experiment's wall time goes, summed over its stages and runs: the pytest runs' wall, the
# checks (JUnit times of the items that are not benchmarks), the runs' parts (runner.py's split) and
# the training itself; "other" is the rest (pytest's start and collection, git, the records).
SPLIT = ("wall", "checks", "data", "cache_copy", "process_start", "setup", "training", "evaluation", "audit", "other")


def time_split(wall: float, checks: float, records: list) -> dict[str, float]:
    """An experiment stage's SPLIT from its pytest wall time, its checks' time and its run records."""
    parts = {"wall": wall, "checks": checks}
    for key in ("data", "cache_copy", "process_start", "setup", "audit"):
        parts[key] = math.fsum(r.extra.get("split", {}).get(key, 0.0) for r in records)
    parts["training"] = math.fsum(r.seconds for r in records)
    parts["evaluation"] = math.fsum(r.eval_seconds for r in records)
    parts["other"] = wall - math.fsum(v for k, v in parts.items() if k != "wall")
    return {k: round(parts[k], 2) for k in SPLIT}


class AgentLoop:
    def __init__(
        self,
        task_dir: str | Path,
        spec: AgentSpec,
        tag: str,
        settings: Settings,
        out_dir: str | Path | None = None,
        log: Callable[[str], None] = print,
        baseline: Experiment | None = None,
        gpu: str | None = None,
    ):
        """baseline: a measurement of the same starting commit under the same settings (a league
        measures it once per task), recorded as experiment 0 instead of running it again.
        gpu: the only GPU (a CUDA_VISIBLE_DEVICES entry) that the loop's child processes see; None:
        those of this process. A league runs one loop per GPU at once this way."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", tag):
            raise AgentError(f"tag {tag!r}: use letters, digits, '.', '_' and '-' only")
        if settings.confirm_seeds < 2:  # measured on the H200: one seed a side, every change was discarded
            raise AgentError(
                f"--confirm-seeds {settings.confirm_seeds} can never keep a change (a paired test needs 2 seeds "
                "a side); use 2 or more (default 3)"
            )
        self.spec, self.tag, self.settings, self.log, self.baseline = spec, tag, settings, log, baseline
        self.start_commit: str | None = None  # set by run()
        self.gpu = gpu
        self.children = Children({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
        task_dir = Path(task_dir).resolve()
        self.task = load_task(task_dir)
        try:
            self.repo = git.toplevel(task_dir)
        except GitError as e:
            raise AgentError(f"{task_dir} must be inside a git repository: {e}") from None
        self.task_rel = task_dir.relative_to(self.repo).as_posix()
        self.worktree = Worktree(self.repo, tag, self.task_rel)
        self.out = Path(out_dir).resolve() if out_dir else self.repo / ".ar" / "agent" / tag
        self.results_tsv, self.jsonl = self.out / "results.tsv", self.out / "experiments.jsonl"
        self.bench_tsv = self.out / "bench.tsv"
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        profile_name = settings.profile
        import torch

        self.profile = (
            default_profile(self.task, torch.cuda.is_available())
            if profile_name == "auto"
            else self.task.profile(profile_name)
        )
        mode, budget = settings.mode
        screen = tuple(range(settings.seeds))
        stored = self._stored_baseline(self.repo)  # this machine's measured noise, as the gate and the league use it
        self.keep_rule = stats.KeepRule(
            self.task.rule(
                self.profile,
                mode,
                budget or self.profile.budget_s,
                stored.noise if stored else stats.Noise(),
                min_effect=settings.min_effect,
            ),
            screen,
            tuple(range(len(screen), len(screen) + settings.confirm_seeds)),
        )
        self.proposer = self._command_proposer() if spec.kind == "command" else PROPOSERS[spec.kind](spec)

    def _command_proposer(self) -> CommandProposer:
        """The agent command's proposer, sandboxed at the candidates' level (--sandbox)."""
        try:
            plan = sandbox.plan(self.settings.sandbox, self.profile.device, memo_dir=cache_root() / "probes")
        except sandbox.SandboxError as e:
            raise AgentError(str(e)) from None
        if plan.isolated:
            self.log(f"the agent command runs sandboxed ({plan.level}): it sees its worktree and a copy of results.tsv")
        elif self.settings.sandbox != "off":
            self.log(
                "warning: no Linux namespaces here: the agent command runs unisolated (it can read the data "
                "cache and write the records); use --sandbox strict to refuse that"
            )
        task_dir = self.worktree.task_dir
        secrets = [self.out, self.repo / ".ar"]  # not shown anyway, unless under a shown folder (the cache: wrap)
        hidden = [str(p) for p in secrets if not task_dir.is_relative_to(p)]
        return CommandProposer(self.spec, self.out / "logs", self.children, plan, self.profile.device, hidden)

    def interrupt(self) -> None:
        """Stop run() from another thread as Ctrl-C stops it in this one: the child processes are killed,
        the experiment in flight is not recorded, the branch is reset and run() raises KeyboardInterrupt."""
        self.children.stop()

    # -- records --------------------------------------------------------------------------------------
    def history(self) -> list[Experiment]:
        rows = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                try:
                    rows.append(Experiment(**json.loads(line)))
                except (ValueError, TypeError):
                    self.log(f"{self.jsonl}: skipping an unreadable line (torn by a crash?)")
        return rows

    def _record(self, e: Experiment, history: list[Experiment]) -> None:
        """Append e to the records files and to history (the in-memory copy), then redraw the plot."""
        header = f"commit\t{self.task.metric}\tmemory_gb\tstatus\tdescription\n"
        appends.append_lines([(self.results_tsv, e.tsv_row(), header), (self.jsonl, json.dumps(asdict(e)) + "\n", "")])
        history.append(e)
        write_progress_plot(history, self.out / "progress.png", self.task, f"{self.task.name} / {self.tag}", self.log)
        htmlreport.write_agent_report(self.out, self.task, self.tag, self.spec, self.settings, self.profile, self.log)

    # -- one experiment -------------------------------------------------------------------------------
    def _evaluate(
        self, n: int, commit: str, description: str, stage: str, seeds: tuple[int, ...], best: str | None = None
    ) -> Measured:
        """One run of the task's suite on the worktree's file with these seeds (a screen runs the checks
        too, a confirmation the benchmark only); with the best kept commit `best` beside it, seed by seed
        interleaved, where the best's runs on these seeds are to be re-measured."""
        s, p = self.settings, self.profile
        before = len(schema.read_results(self.bench_tsv.with_suffix(".jsonl")))
        name = f"{n}" if stage == "screen" else f"{n}.{stage}"
        junit, log_path = self.out / "logs" / f"{name}.xml", self.out / "logs" / f"{name}.log"
        own = Path(self.task.editable[0]).stem
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            self.task_rel,
            "--autoresearch",
            "-k",
            f"[{own}]" + (f" or [{best}]" if best else ""),
            *options.pytest_args(
                {"profile": p.name, "budget_s": s.budget_s, "max_tokens": s.max_tokens, "sandbox": s.sandbox}
            ),  # the keep rule applies min_effect itself
            "--ar-seed-base",
            str(seeds[0]),
            "--ar-seeds",
            str(len(seeds)),
            "--ar-results",
            str(self.bench_tsv),
            "--ar-baseline",
            "none",
            "--ar-description",
            description,
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rN",
        ]
        cmd += (["--ar-candidate", best] if best else []) + (["-m", "autoresearch"] if stage == "confirm" else [])
        runs = len(seeds) * (2 if best else 1)  # the runner's own clock rule, and 300 s for pytest around them
        limit = s.run_timeout_s or runs * p.run_limit_s(s.budget_s, s.max_tokens) + 300
        cmd += ["--ar-trusted-ref", self.start_commit or "none"]  # the loop's start: its runs alone publish kernels
        expired, wall = threading.Event(), time.perf_counter()
        with (
            open(log_path, "w") as log_file,
            self.children.start(
                cmd,
                env={"PYTHONDONTWRITEBYTECODE": "1"},
                cwd=self.worktree.path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ) as proc,
        ):
            timer = threading.Timer(limit, lambda: (expired.set(), kill_group(proc, reap=False)))
            timer.start()
            try:
                for line in proc.stdout:  # the whole output to the log, progress lines to the terminal
                    log_file.write(line)
                    if "[autoresearch]" in line or " | step " in line:
                        self.log("    " + line.strip())
                code = proc.wait()
            finally:
                timer.cancel()
        wall = time.perf_counter() - wall
        records = [
            r for r in schema.read_results(self.bench_tsv.with_suffix(".jsonl"))[before:] if r.task == self.task.name
        ]
        memory = max((r.peak_mem_gb for r in records), default=0.0)
        seconds = math.fsum(r.seconds + r.overhead_seconds for r in records)
        split = time_split(wall, _check_seconds(junit), records)
        speed = next((r.extra["calibration"] for r in records if r.extra.get("calibration")), None)
        measured = lambda status, reason="", mine=(), theirs=(): Measured(
            status, seeds, reason, memory, dict(mine), dict(theirs), seconds, split, speed
        )
        if expired.is_set():
            return measured("crash", f"{stage}: the suite ran past {limit:.0f} s and was killed (log: {log_path})")
        if code not in (0, 1):
            raise AgentError(f"pytest could not run the task's suite (exit code {code}); see {log_path}")
        if bad := [r for r in records if r.status != "ok"]:
            whose = "" if bad[0].candidate == own else f"the best ({best}), re-measured: "
            return measured(
                "discard" if bad[0].status == "violation" else "crash",
                f"{stage}: {whose}{bad[0].status}: {bad[0].error}",
            )
        mine = {r.seed: r.value for r in records if r.candidate == own}
        theirs = {r.seed: r.value for r in records if r.candidate == best}
        if set(mine) != set(seeds):
            return measured("discard", _first_failure(junit) or f"no benchmark ran (log: {log_path})")
        if best and set(theirs) != set(seeds):
            return measured("discard", f"{stage}: the best ({best}) could not be re-measured (log: {log_path})")
        return measured("ok", "", mine, theirs)

    def run(self) -> list[Experiment]:
        self.worktree.prepare(self.log)
        history = self.history()
        # the commit the loop started from (experiment 0's): the only file whose runs publish compile caches
        self.start_commit = history[0].commit if history else self.worktree.head()
        kept = [e for e in history if e.status == "keep"]
        self.worktree.reset(kept[-1].commit if kept else self.worktree.head(short=False))
        s, start = self.settings, time.monotonic()
        self.log(
            f"agent {self.spec.name} on {self.task.name} ({self.profile.name}), tag {self.tag}"
            + (f", GPU {self.gpu}" if self.gpu is not None else "")
            + f": {len(history)} experiments so far; records in {self.out}"
        )
        try:
            while True:
                self.children.check()
                kept = [e for e in history if e.status == "keep"]
                n = len(history)
                if kept and s.max_experiments is not None and n - 1 >= s.max_experiments:
                    self.log(f"reached --max-experiments {s.max_experiments}")
                    break
                if s.max_hours is not None and time.monotonic() - start > s.max_hours * 3600:
                    self.log(f"reached --max-hours {s.max_hours}")
                    break
                used = sum(e.prompt_tokens + e.completion_tokens for e in history)
                if kept and s.max_api_tokens is not None and used >= s.max_api_tokens:
                    self.log(f"reached the API token limit ({used:,} ≥ {s.max_api_tokens:,})")
                    break
                self._record(self._experiment(n, kept[-1] if kept else None, history), history)
        except KeyboardInterrupt:
            last = [e for e in history if e.status == "keep"]
            if last:
                self.worktree.reset(last[-1].commit)
            self.log(
                f"interrupted; {len(history)} experiments recorded in {self.results_tsv}; "
                f"rerun the same command to resume"
            )
            raise
        return history

    def _experiment(self, n: int, kept: Experiment | None, history: list[Experiment]) -> Experiment:
        t0 = time.monotonic()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        head = self.worktree.head()
        rule = self.keep_rule
        if kept is None and self.baseline and self.baseline.commit == head and not history:
            self.log(f"experiment {n}: baseline at {head}, measured once for all agents")
            return Experiment(**{**asdict(self.baseline), "description": "baseline (shared)", "started_at": started})
        if kept is None:  # experiment 0 (or a baseline that crashed before): the unchanged file
            self.log(f"experiment {n}: baseline at {head}")
            m = self._evaluate(n, head, "baseline", "screen", rule.screen_seeds)
            record = _outcome(
                n, head, "baseline", [m], rule.screen_seeds, started_at=started, seconds=time.monotonic() - t0
            )
            if m.status != "ok":
                self._record(replace(record, status="crash", reason=m.reason), history)
                raise AgentError(
                    f"the baseline {self.task_rel}/{self.task.editable[0]} at {head} does not run "
                    f"({m.reason}); fix it before starting the agent"
                )
            return replace(record, status="keep")
        files = {name: (self.worktree.task_dir / name).read_text() for name in self.task.editable}
        program = self.worktree.task_dir / "program.md"
        ctx = Context(
            self.task,
            self.worktree.task_dir,
            program.read_text() if program.is_file() else "",
            files,
            history,
            kept.value,
            n,
            self.results_tsv,
            frozenset(self.profile.model_config()),
        )
        self.log(f"experiment {n}: asking {self.spec.name} ({self.spec.kind})")
        proposal = self.proposer.propose(ctx)
        tokens = {
            "prompt_tokens": proposal.prompt_tokens,
            "completion_tokens": proposal.completion_tokens,
            "cost": (proposal.prompt_tokens * self.spec.price_in + proposal.completion_tokens * self.spec.price_out)
            / 1e6,
        }
        stages: list[Measured] = []

        notes: list[str] = []  # said beside the reason: dead edits, where the best's runs came from

        def end(status: str, reason: str, commit: str = head, p: float | None = None) -> Experiment:
            if status != "keep":
                self.worktree.reset(kept.commit)
            reason = "; ".join([reason, *notes])
            e = _outcome(
                n,
                commit,
                proposal.description,
                stages,
                rule.screen_seeds,
                status,
                reason,
                p,
                started_at=started,
                seconds=time.monotonic() - t0,
                **tokens,
            )
            self.log(
                f"experiment {n}: {status}"
                + (f" ({reason})" if reason else "")
                + (f", {self.task.metric} {e.value:.6f}" if e.value is not None else "")
            )
            return e

        if proposal.error:
            return end("discard", proposal.error)
        patch = self.out / "logs" / f"{n}.diff"
        if not proposal.applied and (why := apply_proposal(self.worktree.path, self.task_rel, proposal, patch)):
            return end("discard", why)
        try:
            paths = {p for p in changed_files(self.worktree.path, kept.commit) if not p.startswith(SCRATCH)}
        except GitError as e:
            raise AgentError(str(e)) from None
        allowed = {f"{self.task_rel}/{e}" for e in self.task.editable}
        if outside := sorted(paths - allowed):
            return end(
                "discard",
                f"the change touches {', '.join(outside[:5])} outside the editable surface "
                f"({', '.join(sorted(allowed))})",
            )
        if not paths:
            return end("discard", "the change is empty")
        editable = self.task.editable[0]
        if dead := self.profile.dead_edits(
            (self.worktree.task_dir / editable).read_text(),
            self.worktree.show(kept.commit, editable),
        ):
            note = f"profile {self.profile.name} sets {', '.join(dead)}: these edits have no effect on it"
            self.log(f"experiment {n}: {note}")
            notes.append(note)
        commit = self.worktree.commit(kept.commit, f"experiment {n}: {proposal.description}")
        best, best_speeds = best_runs_of(history, kept), best_runs_of(history, kept, "speeds", "best_speeds")
        for stage, seeds in (("screen", rule.screen_seeds), ("confirm", rule.confirm_seeds)):
            self.log(f"experiment {n}: {proposal.description} ({commit}); {stage}, seeds {', '.join(map(str, seeds))}")
            if stage == "confirm" and kept.n == 0 and (stored := self._stored_start(kept, seeds)):
                best, best_speeds, origin = {**stored[0], **best}, {**stored[1], **best_speeds}, stored[2]
                notes.append(f"the best's seeds {', '.join(map(str, seeds))}: {origin}")
                self.log(f"experiment {n}: the best's seeds {', '.join(map(str, seeds))} from the {origin}")
            missing = any(seed not in best for seed in seeds)  # the best is re-measured beside it
            stages.append(
                self._evaluate(n, commit, proposal.description, stage, seeds, kept.commit if missing else None)
            )
            best.update(stages[-1].best_runs)
            best_speeds.update({seed: stages[-1].speed for seed in stages[-1].best_runs})
            if stages[-1].status != "ok":
                return end(stages[-1].status, stages[-1].reason, commit)
            if why := speed_departs(stages[-1].speed, seeds, best_speeds):
                return end("discard", f"{stage}: {stats.NOT_COMPARABLE}: {why}: {SPEED_ADVICE}", commit)
            if stage == "screen" and not (screened := rule.screen(stages[0].runs, best))[0]:
                return end("discard", screened[1], commit)
        decision = rule.confirm(stages[1].runs, best)
        return end(
            "keep" if decision.verdict == "better" else "discard", f"confirm: {decision.reason}", commit, decision.p
        )

    def _stored_baseline(self, root: Path) -> baselines.Baseline | None:
        """The gate's stored baseline under root/baselines for this task, machine, mode and budget, or
        None (also for a broken file: the gate reports it)."""
        mode, budget = self.settings.mode
        fingerprint = {
            **fingerprints.machine_fingerprint(self.profile.name, self.profile.device),
            "mode": mode,
            "budget": budget or self.profile.budget_s,
        }
        try:
            return baselines.load_baseline(root / "baselines", self.task.name, fingerprint)
        except ValueError:
            return None

    def _stored_start(self, kept: Experiment, seeds: tuple[int, ...]) -> tuple[dict, dict, str] | None:
        """The gate's stored baseline (baselines/<task>/ at the start commit) when it holds the loop's
        starting file, run on this machine, mode and budget, on the data the loop's runs see, and every
        one of these seeds: its per-seed means, the machine's speed around its runs, and its name; so
        that the first confirmation need not re-measure the start beside the candidate. Else None."""
        stored = self._stored_baseline(self.worktree.path)
        try:
            start = self.worktree.show(kept.commit, self.task.editable[0])
        except AgentError:
            return None
        runs = schema.read_results(self.bench_tsv.with_suffix(".jsonl"))
        if (
            stored is None
            or stored.source != hashlib.sha256(start.encode()).hexdigest()
            or not runs
            or stored.data_id != runs[-1].extra.get("data_id")
        ):
            return None
        means = stats.seed_means(stored.runs)
        if not all(seed in means for seed in seeds):
            return None
        speed = calibrate.around(stored.calibration) if stored.calibration else None
        return (
            {s: means[s] for s in seeds},
            ({s: speed for s in seeds} if speed else {}),
            f"stored baseline @{stored.commit}",
        )


def best_runs_of(history: list[Experiment], kept: Experiment, own: str = "runs", remeasured: str = "best_runs") -> dict:
    """The best kept commit's {seed: value}: its own runs, then its re-measures in the experiments since
    (own="speeds", remeasured="best_speeds": the machine's speed when each was measured)."""
    best = {int(seed): value for seed, value in getattr(kept, own)}
    for e in history:
        if e.n > kept.n:
            best.update({int(seed): value for seed, value in getattr(e, remeasured)})
    return best


def speed_departs(speed: dict | None, seeds: tuple[int, ...], best_speeds: dict[int, dict]) -> str:
    """Why time-mode runs measured at machine speed `speed` do not compare with the best's runs on these
    seeds (the speed when each of those was measured departs by more than calibrate.TOLERANCE), or ''.
    The session gate's rule (session.py), applied to the loop's own comparisons."""
    for seed in seeds if speed else ():
        if best_speeds.get(seed) and (
            why := calibrate.mismatch(speed, best_speeds[seed], f"when the best's seed {seed} was measured")
        ):
            return why
    return ""


def _outcome(
    n: int,
    commit: str,
    description: str,
    stages: list[Measured],
    screen_seeds: tuple[int, ...],
    status: str = "",
    reason: str = "",
    p: float | None = None,
    **extra,
) -> Experiment:
    """The record of an experiment from its stages: value = the mean over the screening seeds (none for
    a crash), the seeds and per-seed values of both sides, memory and device seconds over all runs."""
    runs = {seed: v for m in stages for seed, v in m.runs.items()}
    screen = [runs[seed] for seed in screen_seeds if seed in runs]
    value = math.fsum(screen) / len(screen) if screen and status != "crash" else None
    return Experiment(
        n,
        commit,
        value,
        max((m.memory_gb for m in stages), default=0.0),
        status,
        description,
        reason,
        stage=("", "screen", "confirm")[len(stages)],
        seeds=[seed for m in stages for seed in m.seeds],
        runs=[[seed, v] for seed, v in sorted(runs.items())],
        best_runs=[[seed, v] for m in stages for seed, v in sorted(m.best_runs.items())],
        p=p,
        gpu_seconds=math.fsum(m.seconds for m in stages),
        speeds=[[seed, m.speed] for m in stages if m.speed for seed in sorted(m.runs)],
        best_speeds=[[seed, m.speed] for m in stages if m.speed for seed in sorted(m.best_runs)],
        split={k: round(math.fsum(m.split.get(k, 0.0) for m in stages), 2) for k in SPLIT} if stages else {},
        **extra,
    )


def _check_seconds(junit: Path) -> float:
    """The time of a JUnit report's check items (every test but the benchmarks, test_benchmark*)."""
    try:
        cases = ET.parse(junit).getroot().iter("testcase")
        return math.fsum(float(c.get("time") or 0) for c in cases if not c.get("name", "").startswith("test_benchmark"))
    except (OSError, ET.ParseError, ValueError):
        return 0.0


def _first_failure(junit: Path) -> str:
    """The first failed test of a JUnit XML report, as 'test_x[cand]: message'."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return ""
    for case in root.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            return f"{case.get('name')}: {message[0][:300] if message else 'failed'}"
    return ""
