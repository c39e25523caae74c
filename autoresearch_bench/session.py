"""A benchmark session: which candidates run, with which seeds, in which order, and their verdicts.

The plugin owns pytest; this module owns the experiment.
- Seeds of different candidates are interleaved (seed 0 of every candidate, then seed 1 of every
  candidate, …) so that drift of the machine (clocks, thermals, other load) hits them alike. The
  first benchmark item of a task submits the task's whole schedule, in that order, to the executor
  (autoresearch_bench.executor: local, xdist or ray), which runs as many at once as it has slots and
  returns the records in order; every item then reports its own. Under pytest-xdist each worker is a
  session of its own: an item runs only its candidate's seeds (and the base's, side by side on the
  worker's GPU, when --ar-base-ref needs them), and the worker sends the result to the controller
  (to_report / merge_report) for the table.
- Each candidate is compared with a baseline: the stored one for this task × machine fingerprint ×
  mode (`baselines/<task>/<fingerprint>.json`), or, when none matches and `--ar-base-ref REF` is
  given, the task's editable file at REF, measured side by side in the same interleaved schedule.
- The verdict (better / worse / no difference / undecided) comes from stats.decide_family: a t-test
  (Holm-adjusted over a task's candidates) plus a threshold from the measured noise (the stored
  baseline's own, else the profile's `noise` table for this mode and budget; --ar-min-effect
  overrides), never below the task's practical floor. The test is paired by seed where two or more
  seeds ran on both sides (the base at --ar-base-ref runs the candidates' seeds; stored baselines keep
  their seeds), else Welch's; one run against one decides nothing ("undecided", with the seeds a
  decision needs). A seed fixes the initialization and batch order: on an H100 a seed's rerun moved
  gpt_pretrain by about 0.001 where seeds differ by 0.007 (BENCHMARKS.md), so per-seed differences
  see what the seeds' spread hides from Welch's test. A stored baseline scored on other data (its
  data id, the hash of the validation tokens and tokenizer, differs from the run's) gives the verdict
  "not comparable" instead, which fails the regression gate: the same data spec can yield other
  validation text on another machine, and a number measured on other text proves nothing about this one.
- `--ar-seeds auto` (stats.Sequential): every candidate starts with 3 seeds; while a decision is open
  (undecided, and its interval still reaches past the threshold) the open candidates, and the base
  beside them, run one more seed, up to 8 (or the seeds a stored baseline has). Each look tests at its
  share of alpha, so a no-op gets a verdict at some look with probability <= alpha.
- Under a time budget the machine's speed is part of the score. A time-mode schedule measures it
  before and after its runs (autoresearch_bench.calibrate, a plain subprocess); each record carries
  the speed before (`extra["calibration"]`), a saved baseline both, with its steps and the digest
  of the train.py it ran. The verdict is "not comparable", with the measured change and what to do,
  when the two measurements disagree, when the speed departs from the stored baseline's, or when
  the task's own train.py, unchanged since the stored baseline, ran far fewer (or more) steps: each
  by more than calibrate.TOLERANCE. Fixed-token mode is not measured and not affected.
- Every run of a schedule is accounted for: when the schedule stops early (an error, Ctrl-C, a
  timeout), each candidate that lacks runs is marked `stopped` with the reason, so that its item
  fails with it instead of passing with no runs.
- The base is a role: its internal name BASE cannot be a candidate's (names are slugs of file
  stems and refs, which never hold "@"), so a candidates/base.py runs as itself; tables show it as
  "base @REF". A candidate taken from a git ref (--ar-candidate REF, the base) records the ref's
  commit, not the checkout's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import calibrate, files, stats
from .candidate import BASE, Candidate, display_name, file_at_ref, git_ref
from .executor import LocalExecutor, Run
from .storage import baselines, fingerprints, schema
from .task import Profile, Task, TaskError

# Advice of a time-mode verdict that machine speed made not comparable.
SPEED_ADVICE = (
    "use fixed-token mode --ar-tokens N, or record the baseline again with --ar-save-baseline on an idle machine"
)
DRIFT_ADVICE = "use fixed-token mode --ar-tokens N, or rerun on an idle machine"
# A benchmark item's time limit beyond its runs' own limits: per run (process start-up, hashing the
# results files) and once per task (data preparation on first use, downloads included; calibrations).
RUN_SLACK_S, TASK_SLACK_S = 60, 1800
AUTO = "auto"  # --ar-seeds auto
SEQUENTIAL = stats.Sequential()  # its looks


@dataclass(frozen=True)
class Reference:
    """What candidates are compared with: a stored baseline's runs, or the base's."""

    runs: list[tuple[int | None, float]]
    label: str
    data_id: str | None = None
    noise: stats.Noise = stats.Noise()


@dataclass
class Options:
    enabled: bool = False
    profile: str = "auto"  # as asked (the report's settings); each task's own is chosen by the plugin
    seeds: int | str = 1  # or AUTO
    seed_base: int = 0
    budget_s: float | None = None
    max_tokens: int | None = None
    results_tsv: Path = Path("results.tsv")
    candidates: tuple[str, ...] = ()  # as asked (the report's settings); the plugin resolves them per task
    description: str = ""
    baseline: str = "auto"  # auto | none | path to a baseline json
    baselines_dir: Path = Path("baselines")
    save_baseline: bool = False
    base_ref: str | None = None
    min_effect: float | None = None
    fail_on_regression: bool = False
    scratch: Path = Path(".ar")
    sandbox: str = "auto"
    trusted_ref: str | None = None  # whose file's runs publish their compile cache (compile_cache.py)

    @property
    def results_jsonl(self) -> Path:
        return self.results_tsv.with_suffix(".jsonl")

    @property
    def seed_list(self) -> list[int]:
        """The seeds every candidate runs (under --ar-seeds auto, the first look's)."""
        return list(range(self.seed_base, self.seed_base + (SEQUENTIAL.start if self.seeds == AUTO else self.seeds)))


@dataclass
class CandidateResult:
    task: Task
    profile: Profile
    candidate: Candidate
    records: list[schema.RunRecord] = field(default_factory=list)
    skipped: str = ""  # why it was not benchmarked (a failed check)
    stopped: str = ""  # why its schedule stopped before all its runs were in
    decision: stats.Decision | None = None
    baseline: str = ""  # what it was compared with
    calibration: dict | None = None  # machine speed around its schedule: {"before": …, "after": …}

    @property
    def label(self) -> str:
        """The candidate's name in tables and records: "base @REF" for the base."""
        return display_name(self.candidate)

    @property
    def runs(self) -> list[tuple[int, float]]:
        """(seed, value) of the ok runs: decisions pair them by seed with the baseline's."""
        return [(r.seed, r.value) for r in self.records if r.status == "ok" and r.value is not None]

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.runs]

    @property
    def status(self) -> str:
        if self.skipped:
            return "not run"
        bad = [r.status for r in self.records if r.status != "ok"]
        return bad[0] if bad else "interrupted" if self.stopped else "ok"

    @property
    def error(self) -> str:
        return self.skipped or next((r.error for r in self.records if r.error), self.stopped)


class BenchmarkSession:
    """Runs the benchmark schedule of each task once and keeps every candidate's records.
    measure_speed(device) gives the machine's speed (calibrate.measure) around a time-mode schedule;
    on_record(record) sees each record before it is appended to the results files."""

    def __init__(
        self,
        options: Options,
        log: Callable[[str], None] = print,
        on_progress: Callable[[CandidateResult, int, dict], None] | None = None,
        executor: LocalExecutor | None = None,
        measure_speed: Callable[[str], dict[str, float]] | None = None,
        on_record: Callable[[schema.RunRecord], None] | None = None,
    ):
        self.options = options
        self.on_record = on_record
        self.executor = executor or LocalExecutor()
        self.log = log
        self.on_progress = on_progress
        self.measure_speed = measure_speed or calibrate.measure
        self.results: dict[tuple[str, str], CandidateResult] = {}
        self.pending: dict[str, list[CandidateResult]] = defaultdict(list)  # task → not yet run
        self.baselines: dict[str, baselines.Baseline | None] = {}  # task → its stored baseline, if any
        self.trusted: dict[str, frozenset[str]] = {}  # task → digests of its trusted file

    def plan(self, task: Task, profile: Profile, candidate: Candidate) -> CandidateResult:
        key = (task.name, candidate.name)
        if key not in self.results:
            if task.name not in self.baselines:
                self.baselines[task.name] = self.stored_baseline(task, profile)
                if self.baselines[task.name] is None and self.options.base_ref:
                    ref = self.options.base_ref
                    path, commit = file_at_ref(task, ref, self.options.scratch)
                    self._add(task, profile, Candidate(BASE, path, f"base:{ref}@{commit}"))
            self._add(task, profile, candidate)
        return self.results[key]

    def _add(self, task: Task, profile: Profile, candidate: Candidate) -> None:
        if (
            candidate.name != BASE
            and candidate.path.resolve() != task.train_file.resolve()
            and (dead := profile.dead_edits(candidate.path.read_text(), task.train_file.read_text()))
        ):
            self.log(
                f"{task.name}/{candidate.name}: profile {profile.name} sets {', '.join(dead)}: "
                f"edits of these defaults have no effect on this profile"
            )
        entry = CandidateResult(task, profile, candidate)
        self.results[(task.name, candidate.name)] = entry
        self.pending[task.name].append(entry)

    def fingerprint(self, profile: Profile) -> dict:
        """The machine fingerprint plus the training mode and budget: baselines match on all of it."""
        mode, budget = self.mode(profile)
        return {**fingerprints.machine_fingerprint(profile.name, profile.device), "mode": mode, "budget": budget}

    def mode(self, profile: Profile) -> tuple[str, float]:
        """The training mode (time | tokens) and its budget (seconds or tokens)."""
        o = self.options
        return ("tokens" if o.max_tokens else "time"), o.max_tokens or o.budget_s or profile.budget_s

    def stored_baseline(self, task: Task, profile: Profile) -> baselines.Baseline | None:
        """The stored baseline this session compares the task with (--ar-baseline), or None."""
        choice = self.options.baseline
        if choice == "none":
            return None
        if choice == "auto":
            return baselines.load_baseline(self.options.baselines_dir, task.name, self.fingerprint(profile))
        return baselines.Baseline.from_file(Path(choice))

    def time_limit(self, task: Task) -> float:
        """The most seconds the task's planned runs may take by the harness's own clocks: per run,
        Profile.run_limit_s (training and evaluation) plus RUN_SLACK_S; plus TASK_SLACK_S once."""
        o = self.options
        per_run = [
            e.profile.run_limit_s(o.budget_s, o.max_tokens) + RUN_SLACK_S
            for e in self.results.values()
            if e.task.name == task.name
        ]
        return (SEQUENTIAL.stop if o.seeds == AUTO else o.seeds) * sum(per_run) + TASK_SLACK_S

    def skip(self, task: Task, candidate: Candidate, reason: str) -> None:
        result = self.results.get((task.name, candidate.name))
        if result is not None and not result.skipped:
            result.skipped = reason

    def result(self, task: Task, candidate: Candidate) -> CandidateResult:
        """This candidate's result, running the task's interleaved schedule first if needed (with a
        per-item executor, only this candidate's part of it, plus the base's if not yet run here).
        A schedule that fails leaves the candidates that lack runs `stopped`; Ctrl-C and pytest's
        own interruptions (a timeout) do the same and go on up."""
        mine = self.results[(task.name, candidate.name)]
        pending = self.pending.pop(task.name, [])
        if self.executor.per_item:
            wanted = {candidate.name} | (set() if mine.skipped else {BASE})
            self.pending[task.name] = [r for r in pending if r.candidate.name not in wanted]
            pending = [r for r in pending if r.candidate.name in wanted]
        queue = [r for r in pending if not r.skipped]
        if queue:
            planned = len(self.options.seed_list)
            try:
                self._run(queue, self.options.seed_list)
                self._decide(task, queue)
                if self.options.seeds == AUTO:
                    self._add_seeds(task, queue)
            except BaseException as e:
                why = f"{type(e).__name__}: {e}".rstrip(": ")
                for entry in queue:
                    if len(entry.records) < planned:
                        entry.stopped = (
                            f"the schedule stopped after {len(entry.records)} of its {planned} run(s) ({why})"
                        )
                self.log(f"{task.name}: the schedule stopped ({why})")
                if not isinstance(e, Exception):
                    raise
                self._decide(task, queue)
        return mine

    def _trusted_sources(self, task: Task) -> frozenset[str]:
        """The digest of the task's file at --ar-trusted-ref (none outside git): its runs publish their
        compile cache."""
        if task.name not in self.trusted:
            self.trusted[task.name] = frozenset()
            if ref := self.options.trusted_ref:
                with contextlib.suppress(TaskError):
                    self.trusted[task.name] = frozenset(
                        {files.file_digest(file_at_ref(task, ref, self.options.scratch / "trusted")[0])}
                    )
        return self.trusted[task.name]

    def _add_seeds(self, task: Task, queue: list[CandidateResult]) -> None:
        """--ar-seeds auto: one more seed at a time for the candidates whose question is open (and the
        base beside them), until none is open, the last look, or a seed the stored baseline lacks."""
        o = self.options
        for seed in range(o.seed_base + SEQUENTIAL.start, o.seed_base + SEQUENTIAL.stop):
            still = [e for e in queue if e.decision and e.decision.open]
            if not still:
                break
            base = self.results.get((task.name, BASE))
            beside = [base] if base and seed not in {r.seed for r in base.records} else []
            self._run(still + beside, [seed])
            self._decide(task, still)

    def _run(self, queue: list[CandidateResult], seeds: list[int]) -> None:
        """These seeds of every entry, interleaved (seed 0 of each, then seed 1, …), on the executor;
        in time mode with the machine's speed measured before and after."""
        o = self.options
        options = dict(
            budget_s=o.budget_s,
            max_tokens=o.max_tokens,
            results_paths=(o.results_tsv, o.results_jsonl),
            description=o.description,
            sandbox=o.sandbox,
            trusted_sources=self._trusted_sources(queue[0].task),
        )
        runs = [
            Run(e.task, e.profile, e.candidate, seed, {**options, "description": o.description or e.label})
            for seed in seeds
            for e in queue
        ]
        entry = lambda run: self.results[(run.task.name, run.candidate.name)]
        device = queue[0].profile.device
        before = None if o.max_tokens else self._speed(device)

        def record_done(run: Run, record: schema.RunRecord) -> None:
            if ref := git_ref(run.candidate):  # the file came from the ref's commit, not the checkout
                record.commit, record.dirty = ref[1], False
            if before:
                record.extra["calibration"] = before
            if self.on_record:
                self.on_record(record)
            schema.append_results(record, o.results_tsv, o.results_jsonl)
            entry(run).records.append(record)
            value = f"{record.value:.4f}" if record.value is not None else "-"
            self.log(
                f"{run.task.name}/{entry(run).label} seed {run.seed}: {record.metric} {value} "
                f"[{record.status}] {record.error}".rstrip()
            )

        self.executor.map(
            runs,
            on_record=record_done,
            log=self.log,
            on_progress=(lambda run, r: self.on_progress(entry(run), run.seed, r)) if self.on_progress else None,
        )
        if before and (after := self._speed(device)):
            for e in queue:
                e.calibration = {"before": before, "after": after}

    def _speed(self, device: str) -> dict[str, float] | None:
        """The machine's speed now; None (logged) when it cannot be measured."""
        try:
            return self.measure_speed(device)
        except RuntimeError as e:
            self.log(f"machine speed not measured: {e}; time-mode verdicts do not account for it")
            return None

    def to_report(self, task: Task, name: str) -> dict:
        """A candidate's result as plain data, for a pytest report (xdist worker → controller)."""
        r = self.results[(task.name, name)]
        return {
            "profile": r.profile.name,
            "candidate": dataclasses.asdict(r.candidate) | {"path": str(r.candidate.path)},
            "records": [x.to_dict() for x in r.records],
            "skipped": r.skipped,
            "stopped": r.stopped,
            "baseline": r.baseline,
            "calibration": r.calibration,
            "decision": dataclasses.asdict(r.decision) if r.decision else None,
        }

    def merge_report(self, task: Task, report: dict) -> CandidateResult:
        """Add a result that another process sent (to_report); its records join any already here
        (the base, measured by several xdist workers)."""
        c = report["candidate"]
        candidate = Candidate(c["name"], Path(c["path"]), c["origin"])
        entry = self.results.setdefault(
            (task.name, candidate.name), CandidateResult(task, task.profile(report["profile"]), candidate)
        )
        entry.records += [schema.RunRecord.from_dict(d) for d in report["records"]]
        entry.skipped = entry.skipped or report["skipped"]
        entry.stopped = entry.stopped or report["stopped"]
        entry.calibration = entry.calibration or report["calibration"]
        if report["decision"]:
            entry.decision = stats.Decision(**{**report["decision"], "ci": tuple(report["decision"]["ci"])})
            entry.baseline = report["baseline"]
        return entry

    def _decide(self, task: Task, entries: list[CandidateResult]) -> None:
        """The verdicts of these entries (a task's candidates at one look) against the task's reference,
        as one Holm family: not comparable where the data or the machine's speed differ."""
        base, stored = self.results.get((task.name, BASE)), self.baselines.get(task.name)
        reference = (
            Reference(stored.runs, f"stored baseline @{stored.commit}", stored.data_id, stored.noise)
            if stored
            else Reference(base.runs, base.label)
            if base and base.values
            else None
        )
        family = [e for e in entries if e.candidate.name != BASE and e.values]
        if reference is None or not family:
            return
        o, comparable = self.options, []
        for entry in family:
            entry.baseline = reference.label
            ids = sorted({r.extra.get("data_id") for r in entry.records if r.status == "ok"} - {reference.data_id})
            if reference.data_id and ids:  # another validation text or tokenizer: the numbers do not compare
                entry.decision = _not_comparable(
                    f"the {reference.label} was scored on other data (data id {reference.data_id}, this run "
                    f"{', '.join(map(str, ids))}): record it again here with --ar-save-baseline, or measure the base "
                    f"side by side with --ar-baseline none --ar-base-ref REF"
                )
            elif reason := self._speed_mismatch(entry, stored, reference.label):
                entry.decision = _not_comparable(reason)
            else:
                comparable.append(entry)
        if not comparable:
            return
        rule = task.rule(comparable[0].profile, *self.mode(comparable[0].profile), reference.noise, o.min_effect)
        seeds = len({r.seed for r in comparable[0].records})
        level, last = rule.alpha, True
        if o.seeds == AUTO:  # a stored baseline's runs must have the next seed to pair with it
            level = SEQUENTIAL.level(seeds, rule.alpha)
            last = seeds >= SEQUENTIAL.stop or bool(stored and o.seed_base + seeds not in {s for s, _ in stored.runs})
        decisions = stats.decide_family([e.runs for e in comparable], reference.runs, rule, level, last)
        for entry, decision in zip(comparable, decisions):
            entry.decision = decision

    def _speed_mismatch(self, entry: CandidateResult, stored: baselines.Baseline | None, label: str) -> str:
        """Why machine speed keeps entry's time-mode runs from comparing with the reference, or ""."""
        if self.options.max_tokens:
            return ""
        if entry.calibration and (
            drift := calibrate.mismatch(entry.calibration["after"], entry.calibration["before"], "before the runs")
        ):
            return f"the machine's speed changed during the runs: {drift}: {DRIFT_ADVICE}"
        if stored is None:
            return ""
        if (
            entry.calibration
            and stored.calibration
            and (
                slower := calibrate.mismatch(
                    calibrate.around(entry.calibration),
                    calibrate.around(stored.calibration),
                    f"when the {label} was recorded",
                )
            )
        ):
            return f"{slower}: {SPEED_ADVICE}"
        own = next(
            (
                e
                for e in self.results.values()
                if e.task.name == entry.task.name
                and e.candidate.origin == "task"
                and e.values
                and stored.source == files.file_digest(e.candidate.path)
            ),
            None,
        )
        if own and stored.steps:
            now, then = _mean([r.steps for r in own.records if r.status == "ok"]), _mean(stored.steps)
            if then and abs(now / then - 1) > calibrate.TOLERANCE:
                return (
                    f"the task's own {own.candidate.path.name}, unchanged since the {label}, ran {now:.0f} steps "
                    f"against {then:.0f} then ({abs(now / then - 1):.0%} {'fewer' if now < then else 'more'}): "
                    f"{SPEED_ADVICE}"
                )
        return ""

    def save_baselines(self) -> list[Path]:
        """Store each task's own train.py results as the baseline for this machine and mode, with the
        machine's speed around its runs and the digest of the file."""
        saved = []
        for entry in self.results.values():
            if entry.candidate.origin == "task" and entry.values:
                saved.append(
                    baselines.save_baseline(
                        self.options.baselines_dir,
                        entry.task.name,
                        self.fingerprint(entry.profile),
                        [r for r in entry.records if r.status == "ok"],
                        calibration=entry.calibration,
                        source=files.file_digest(entry.candidate.path),
                    )
                )
        return saved

    def regressions(self) -> list[CandidateResult]:
        """Results that fail the regression gate: worse, or not comparable with their baseline."""
        return [
            r for r in self.results.values() if r.decision and r.decision.verdict in ("worse", stats.NOT_COMPARABLE)
        ]

    def ranked(self) -> list[CandidateResult]:
        """Per task, candidates with scores best first, then the ones without."""

        def key(r: CandidateResult):
            if not r.values:
                return (r.task.name, 1, 0.0)
            mean = stats.summarize(r.values).mean
            return (r.task.name, 0, mean if r.task.direction == "lower" else -mean)

        return sorted(self.results.values(), key=key)


def _not_comparable(reason: str) -> stats.Decision:
    return stats.Decision(stats.NOT_COMPARABLE, math.nan, math.nan, (-math.inf, math.inf), reason)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
