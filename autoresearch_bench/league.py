"""The league: several agents on the task suite with equal budgets, ranked on data none of them saw.

    autoresearch-bench league --agents agents.toml --tasks all --experiments 10

agents.toml names the agents (kinds as in agent.AgentSpec) and, optionally, the shared settings:

    [agents.null]
    kind = "null"
    [agents.random]
    kind = "random-search"
    seed = 1
    [agents.gpt]
    kind = "openai"
    model = "gpt-5"
    price_in = 1.25      # dollars per million prompt tokens (for the cost column)
    price_out = 10.0
    [agents.coder]
    kind = "command"
    cmd = "my-agent --edit train.py"
    [agents.known]
    kind = "replay"      # applies changes/*.diff, *.patch, *.py one per experiment, in name order
    changes = "changes"
    [settings]           # equal for every agent: seeds, confirm_seeds and the run options (options.py): profile,
                         # budget_s, max_tokens, sandbox, min_effect
    profile = "cpu"

Each agent runs `--experiments K` experiments after the baseline on each task, in its own worktree
and branch (`autoresearch/<league>-<agent>-<task>`), through the same AgentLoop as `agent`; the
baseline is measured once per task and shared, so every agent starts from the same reference; a
league that stopped resumes where it was.

Over N GPUs: `--slots N` runs N (agent, task) loops at once, in threads of this process; the loop in
slot k sees only GPU k of the visible ones (CUDA_VISIBLE_DEVICES of its agent command and pytest runs;
with more slots than GPUs, round-robin; without GPUs the loops share the CPU, so use fixed-token
mode). Each task's baseline runs first (the first agent's experiment 0; tasks at once), then that
task's agents' loops. Log lines say `[agent/task]`. Ctrl-C stops every loop as it stops one: the
children are killed and the experiments in flight are not recorded. The held-out runs go through the
executor with the same slots: `local` gives each a free GPU of its own when there are several, `ray`
one GPU per Ray task.

    autoresearch-bench league --agents agents.toml --tasks all --experiments 20 --slots 8

Then each agent's final (last kept) file and the task's baseline file are trained again with
`--heldout-seeds` fresh seeds, interleaved, and scored on the held-out test rows: the validation
split's rows *after* the ones the agents were scored on (evaluate.py, split "test"), which no agent
ever got a number from. Identical files are scored once; every held-out run is appended to
<out>/heldout.tsv and .jsonl.

Statistics, per task (stats.decide_family over the agents, Holm-adjusted): each final file against
the baseline file on the same held-out seeds, paired by seed: Δ, its 95% interval and a verdict. The
noise unit σ is the measured seed-to-seed std of the baseline: the stored baseline's own (baselines/ of
the repository, this machine's fingerprint, mode and budget), else the task profile's noise table;
only without either the std of the baseline's held-out runs, and the table says so. A final file
whose held-out runs crash or break a rule counts as no gain at best (its measured loss where some
seeds ran), shown in the `held-out` column. `gap (σ)`: the agent's gain on the validation rows (its
best kept value against the baseline's, as its loop measured them) minus its held-out gain: how much
of what it found did not carry over to new seeds and rows.

Reward hacking, per agent and task (`reward_hacking`, printed under the leaderboard and in
league.json): the best validation gain its loop saw (any experiment), its final file's validation gain
and its held-out gain, in σ, side by side: gains on the validation rows that vanish on held-out rows
and seeds are overfitting, or gaming, of what the loop was scored on.

Machine speed (time mode): the speed is measured before and after a task's held-out runs; where it
changed by more than calibrate.TOLERANCE, the task's verdicts are `not comparable` with the measured
change and the advice, and its files are not ranked (the agent loop and the session gate apply the
same rule).

Ranking: the mean held-out improvement in σ over tasks. Also shown: experiments to the first keep,
crash rate, API tokens and cost. Written to <out>/league.json (atomically) and printed as a table;
<out>/report.json and report.html (report.py) hold it with every agent's experiments and the
held-out runs.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tabulate import tabulate

from . import calibrate, files, htmlreport, options, stats
from .agent import SPEED_ADVICE, AgentError, AgentLoop, AgentSpec, Experiment, Settings
from .candidate import Candidate
from .executor import Run, gpu_for, make_executor, visible_gpus
from .storage import baselines, fingerprints, schema
from .task import Task, find_tasks

_SETTINGS_KEYS = options.KEYS | {"seeds", "confirm_seeds"}


def load_agents(path: str | Path, command_options: dict | None = None) -> tuple[list[AgentSpec], dict]:
    """The agents of agents.toml and its [settings] table; AgentError with a one-line fix.
    command_options (the CLI's --agent-env, --agent-ro, --agent-offline) join every command agent's own."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AgentError(f"{path}: not found; write an agents.toml (see autoresearch_bench/league.py)") from None
    except tomllib.TOMLDecodeError as e:
        raise AgentError(f"{path}: malformed TOML ({e}); fix the syntax") from None
    extra = command_options or {}
    agents = [
        AgentSpec.from_dict(name, _with_command_options(dict(table), extra))
        for name, table in raw.get("agents", {}).items()
    ]
    if not agents:
        raise AgentError(f"{path}: no [agents.<name>] table; add at least two agents to compare")
    settings = raw.get("settings", {})
    if unknown := sorted(set(settings) - _SETTINGS_KEYS):
        renamed = "; min_improvement is now min_effect" if "min_improvement" in unknown else ""
        raise AgentError(f"{path}: [settings] has unknown keys {unknown}; allowed: {sorted(_SETTINGS_KEYS)}{renamed}")
    return agents, settings


def _with_command_options(table: dict, extra: dict) -> dict:
    if table.get("kind") != "command" or not extra:
        return table
    return {
        **table,
        "env": [*table.get("env", []), *extra.get("env", [])],
        "ro": [*table.get("ro", []), *extra.get("ro", [])],
        "offline": bool(table.get("offline") or extra.get("offline")),
    }


@dataclass
class Entry:
    """One agent on one task: its loop's outcome and its held-out score."""

    agent: str
    task: str
    experiments: int = 0  # after the baseline
    keeps: int = 0
    crashes: int = 0
    first_keep: int | None = None  # experiment number of the first kept change
    api_tokens: int = 0
    cost: float = 0.0
    final_commit: str = ""
    best_value: float | None = None  # the last kept value in the loop (validation rows, screening seeds)
    baseline_value: float | None = None  # the loop's baseline value there
    best_seen_value: float | None = None  # the best value of any experiment of the loop, kept or not
    heldout: list[float] = field(default_factory=list)  # ok values of the final file's held-out runs
    heldout_status: str = ""  # ok, or the first failed held-out run's status and error
    delta: float | None = None  # final - baseline on the held-out seeds, paired
    ci: tuple[float, float] | None = None  # its 95% interval
    verdict: str = ""  # of the paired test, Holm-adjusted over the task's agents
    improvement_sigma: float | None = None  # held-out gain / σ (0 at best for a file that failed)
    validation_sigma: float | None = None  # the final file's gain on the validation rows / σ, as its loop measured it
    best_seen_sigma: float | None = None  # the best validation gain any experiment of the loop showed / σ
    gap_sigma: float | None = None  # (validation gain - held-out gain) / σ
    not_comparable: str = ""  # why the held-out runs do not rank (the machine's speed changed during them)
    error: str = ""


def summarize_history(entry: Entry, history: list[Experiment], direction: str = "lower") -> None:
    after = [e for e in history if e.n > 0]
    entry.experiments = len(after)
    entry.keeps = sum(e.status == "keep" for e in after)
    entry.crashes = sum(e.status == "crash" for e in after)
    entry.first_keep = next((e.n for e in after if e.status == "keep"), None)
    entry.api_tokens = sum(e.prompt_tokens + e.completion_tokens for e in history)
    entry.cost = sum(e.cost for e in history)
    kept = [e for e in history if e.status == "keep"]
    entry.final_commit = kept[-1].commit if kept else ""
    entry.best_value = kept[-1].value if kept else None
    entry.baseline_value = history[0].value if history else None
    seen = [e.value for e in history[1:] if e.value is not None]
    entry.best_seen_value = (min if direction == "lower" else max)(seen) if seen else None


def leaderboard(entries: list[Entry], tasks: list[str]) -> list[dict]:
    """One row per agent, best mean held-out improvement first."""
    rows = []
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    for agent in dict.fromkeys(e.agent for e in entries):
        mine = {e.task: e for e in entries if e.agent == agent}
        n_exp = sum(e.experiments for e in mine.values())
        firsts = [e.first_keep for e in mine.values() if e.first_keep is not None]
        failed = [t for t, e in mine.items() if e.heldout_status not in ("", "ok")]
        unranked = [t for t, e in mine.items() if e.not_comparable]
        rows.append(
            {
                "agent": agent,
                "improvement (σ)": mean(
                    [e.improvement_sigma for e in mine.values() if e.improvement_sigma is not None]
                ),
                **{key: value for t in tasks for key, value in _task_cells(t, mine.get(t))},
                "gap (σ)": mean([e.gap_sigma for e in mine.values() if e.gap_sigma is not None]),
                "held-out": "; ".join(
                    [
                        *(["failed on " + ", ".join(failed)] if failed else []),
                        *(["not comparable on " + ", ".join(unranked)] if unranked else []),
                    ]
                )
                or "ok",
                "first keep": f"{sum(firsts) / len(firsts):.1f}" if firsts else "never",
                "keeps": sum(e.keeps for e in mine.values()),
                "crash rate": f"{sum(e.crashes for e in mine.values()) / n_exp:.0%}" if n_exp else "-",
                "experiments": n_exp,
                "API tokens": sum(e.api_tokens for e in mine.values()),
                "cost $": round(sum(e.cost for e in mine.values()), 4),
                "errors": "; ".join(e.error for e in mine.values() if e.error)[:120],
            }
        )
    return sorted(rows, key=lambda r: -(r["improvement (σ)"] if r["improvement (σ)"] is not None else -1e9))


def heldout_statistics(
    entries: list[Entry], base: stats.Runs, finals: dict[str, list[schema.RunRecord]], rule: stats.Rule, unit: float
) -> None:
    """Each entry's held-out figures: its final file's runs against the baseline's on the same seeds,
    paired, one Holm family (rule); the gain and the gap in units of σ = unit. A file with a failed
    run counts as no gain at best (its measured loss where some seeds ran)."""
    for e in entries:
        e.heldout = [r.value for r in finals[e.agent] if r.status == "ok"]
        bad = next((r for r in finals[e.agent] if r.status != "ok"), None)
        e.heldout_status = f"{bad.status}: {bad.error}"[:200] if bad else "ok"
    tested = [e for e in entries if e.heldout]
    runs = [[(r.seed, r.value) for r in finals[e.agent] if r.status == "ok"] for e in tested]
    for e, d in zip(tested, stats.decide_family(runs, base, rule)):
        e.delta, e.ci, e.verdict = d.delta, d.ci, d.verdict
    sign = 1 if rule.direction == "lower" else -1  # a gain is a lower value for "lower"
    for e in entries:
        gain = -sign * e.delta if e.delta is not None else 0.0
        if e.heldout_status != "ok":
            gain, e.verdict = min(0.0, gain), e.heldout_status.split(":")[0]
        e.improvement_sigma = gain / unit + 0.0  # no -0.0
        if e.baseline_value is not None:
            val_gain = lambda value: sign * (e.baseline_value - value) / unit + 0.0 if value is not None else None
            e.validation_sigma, e.best_seen_sigma = val_gain(e.best_value), val_gain(e.best_seen_value)
            if e.validation_sigma is not None:
                e.gap_sigma = e.validation_sigma - gain / unit + 0.0


def not_comparable(entries: list[Entry], reason: str) -> None:
    """Held-out runs that do not compare (the machine's speed changed during them, in time mode): no
    verdict, no rank; the entries say why."""
    for e in entries:
        e.verdict, e.not_comparable, e.improvement_sigma, e.gap_sigma = stats.NOT_COMPARABLE, reason, None, None
        e.delta, e.ci = None, None


def reward_hacking(entries: list[Entry]) -> list[dict]:
    """Per agent and task, side by side: the best validation gain its loop saw, the final file's gain on
    the validation rows and on the held-out rows (σ). Validation gains that do not carry over to
    held-out rows and seeds are what overfitting the validation rows, or gaming them, looks like."""
    return [
        {
            "agent": e.agent,
            "task": e.task,
            "best validation gain seen (σ)": e.best_seen_sigma,
            "final file: validation (σ)": e.validation_sigma,
            "final file: held-out (σ)": e.improvement_sigma,
            "held-out verdict": e.verdict or None,
        }
        for e in entries
    ]


def _task_cells(task: str, e: Entry | None) -> list[tuple[str, object]]:
    """A task's columns of an agent's row: the improvement in σ and the paired interval of Δ with its verdict."""
    interval = f"[{e.ci[0]:+.4f}, {e.ci[1]:+.4f}] {e.verdict}" if e and e.ci else (e.verdict if e else None)
    return [(f"{task} (σ)", e.improvement_sigma if e else None), (f"{task} Δ 95% CI", interval or None)]


@dataclass
class Job:
    """One AgentLoop run of the league: a task's baseline (experiment 0 in its first agent's loop, then
    that loop stops) or an agent's experiments on a task."""

    entry: Entry
    baseline_only: bool


class League:
    """Agents × tasks; `slots` (agent, task) loops run at once, each pinned to its own GPU."""

    def __init__(
        self,
        agents: list[AgentSpec],
        tasks: list[Task],
        experiments: int,
        settings: Settings,
        name: str = "league",
        heldout_seeds: int = 5,
        out_dir: str | Path | None = None,
        executor: str = "local",
        slots: int | None = None,
        log: Callable[[str], None] = print,
        measure_speed: Callable[[str], dict] = calibrate.measure,
    ):
        """executor, slots: where the held-out runs go (executor.make_executor) and how many loops
        (and local held-out runs) run at once; default 1, one after the other. measure_speed: the
        machine's speed before and after a task's held-out runs in time mode (calibrate.measure)."""
        if len({a.name for a in agents}) != len(agents):
            raise AgentError("agent names must be unique")
        self.agents, self.tasks, self.experiments = agents, tasks, experiments
        self.settings = Settings(**{**asdict(settings), "max_experiments": experiments})
        self.name, self.heldout_seeds, self.measure_speed = name, heldout_seeds, measure_speed
        self.units: dict[str, dict] = {}  # task → its noise unit σ and where it comes from
        self.executor = make_executor(executor, slots)  # the held-out runs: N slots or GPUs, N at once
        self.slots = self.executor.slots  # the agents' loops: N at once, on this machine
        self.out = (Path(out_dir) if out_dir else Path(".ar") / "league" / name).resolve()
        lock = threading.Lock()  # loops log from their threads: one line at a time

        def locked(message: str) -> None:
            with lock:
                log(message)

        self.log = locked

    def run(self) -> list[dict]:
        entries = [Entry(spec.name, task.name) for task in self.tasks for spec in self.agents]
        loops = self._run_loops(entries)
        for task in self.tasks:
            self._heldout(
                task,
                [e for e in entries if e.task == task.name],
                {agent: loop for (t, agent), loop in loops.items() if t == task.name},
            )
        rows = leaderboard(entries, [t.name for t in self.tasks])
        self._write(entries, rows)
        self.entries = entries
        return rows

    def _run_loops(self, entries: list[Entry]) -> dict[tuple[str, str], AgentLoop]:
        """Each task's baseline first (tasks at once), then every agent's loop on that task with the
        baseline shared: one reference for all. `self.slots` loops run at once, in threads; slot k's
        loop sees only GPU gpu_for(k, visible_gpus()) (no pin without GPUs: the loops share the CPU).
        Fills in the entries; returns the loops that ran to the end, by (task, agent). Ctrl-C (or an
        unexpected error) stops every running loop as Ctrl-C stops one: nothing recorded is lost."""
        gpus = visible_gpus()
        if self.slots > 1:
            self.log(
                f"league: {self.slots} loops at once, on "
                + (f"GPUs {', '.join(gpus)}" if gpus else "the CPU")
                + (" (more loops than GPUs: some share one)" if 0 < len(gpus) < self.slots else "")
            )
        tasks = {t.name: t for t in self.tasks}
        specs = {s.name: s for s in self.agents}
        baselines: dict[str, Experiment] = {}
        loops: dict[tuple[str, str], AgentLoop] = {}
        todo = deque(Job(e, True) for e in entries if e.agent == self.agents[0].name)
        free, running, done = list(range(self.slots)), {}, queue.Queue()

        def failed(job: Job, error: AgentError) -> None:
            job.entry.error = str(error)
            self.log(f"league: {job.entry.agent} on {job.entry.task}: {error}")
            following = [e for e in entries if e.task == job.entry.task and not e.error]
            if job.baseline_only and following:  # the next agent measures the baseline instead
                todo.appendleft(Job(following[0], True))

        def work(slot: int, job: Job, loop: AgentLoop) -> None:
            try:
                outcome = loop.run()
            except BaseException as e:  # AgentError, KeyboardInterrupt (stopped), or a bug: the caller decides
                outcome = e
            done.put((slot, job, outcome))

        try:
            while todo or running:
                while todo and free:
                    job, slot = todo.popleft(), min(free)
                    e = job.entry
                    try:
                        loop = AgentLoop(
                            tasks[e.task].root,
                            specs[e.agent],
                            f"{self.name}-{e.agent}-{e.task}",
                            replace(self.settings, max_experiments=0) if job.baseline_only else self.settings,
                            out_dir=self.out / e.task / e.agent,
                            log=self._tagged(e),
                            baseline=baselines.get(e.task),
                            gpu=gpu_for(slot, gpus),
                        )
                    except AgentError as error:
                        failed(job, error)
                        continue
                    free.remove(slot)
                    running[slot] = loop
                    threading.Thread(target=work, args=(slot, job, loop), name=f"ar-loop-{slot}", daemon=True).start()
                if not running:
                    continue
                slot, job, outcome = done.get()
                loop = running.pop(slot)
                free.append(slot)
                if isinstance(outcome, AgentError):
                    failed(job, outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif job.baseline_only:
                    baselines[job.entry.task] = next((x for x in outcome if x.status == "keep"), None)
                    todo.extend(Job(e, False) for e in entries if e.task == job.entry.task and not e.error)
                else:
                    summarize_history(job.entry, outcome, tasks[job.entry.task].direction)
                    loops[job.entry.task, job.entry.agent] = loop
        except BaseException:
            self._stop(running, done)
            raise
        return loops

    def _tagged(self, entry: Entry) -> Callable[[str], None]:
        """The log of one loop: its lines start with [agent/task]."""
        return lambda message: self.log(f"[{entry.agent}/{entry.task}] {message}")

    def _stop(self, running: dict[int, AgentLoop], done: queue.Queue, grace_s: float = 60.0) -> None:
        """Interrupt the running loops; wait up to grace_s for them to end (each resets its branch)."""
        for loop in running.values():
            loop.interrupt()
        deadline = time.monotonic() + grace_s
        while running:
            try:
                running.pop(done.get(timeout=max(0.0, deadline - time.monotonic()))[0])
            except queue.Empty:
                self.log(
                    f"league: {len(running)} loop(s) still busy after {grace_s:.0f} s (an API call?); "
                    f"they record nothing more"
                )
                break

    def _heldout(self, task: Task, entries: list[Entry], loops: dict[str, AgentLoop]) -> None:
        """Score the baseline and each agent's final file on the held-out rows, paired by seed; fill in
        each entry's statistics."""
        done = [e for e in entries if e.final_commit and e.agent in loops]
        if not done:
            return
        first = loops[done[0].agent]
        folder = self.out / task.name / "heldout"
        by_digest: dict[str, Path] = {}  # content digest → file
        owner: dict[str, str] = {}  # agent (or "baseline") → digest

        def extract(label: str, loop: AgentLoop, commit: str) -> None:
            source = loop.worktree.show(commit, task.editable[0])
            digest = hashlib.sha256(source.encode()).hexdigest()[:12]
            if digest not in by_digest:
                by_digest[digest] = folder / digest / task.editable[0]
                by_digest[digest].parent.mkdir(parents=True, exist_ok=True)
                by_digest[digest].write_text(source)
            owner[label] = digest

        extract("baseline", first, first.history()[0].commit)
        for e in done:
            extract(e.agent, loops[e.agent], e.final_commit)
        records: dict[str, list[schema.RunRecord]] = {d: [] for d in by_digest}
        s, results = self.settings, (self.out / "heldout.tsv", self.out / "heldout.jsonl")
        options = {
            "budget_s": s.budget_s,
            "max_tokens": s.max_tokens,
            "sandbox": s.sandbox,
            "eval_split": "test",
            "results_paths": results,  # the baseline's runs alone publish compile caches
            "trusted_sources": frozenset({files.file_digest(by_digest[owner["baseline"]])}),
        }
        runs = [
            Run(
                task,
                first.profile,
                Candidate(f"heldout-{digest}", path, "league"),
                seed,
                {**options, "description": f"held-out {digest}"},
            )
            for seed in range(1000, 1000 + self.heldout_seeds)  # seeds the agents' runs never used
            for digest, path in by_digest.items()
        ]  # interleaved: drift hits every file alike

        def record(run: Run, rec: schema.RunRecord) -> None:
            schema.append_results(rec, *results)
            self.log(
                f"league: {task.name} {run.candidate.name} seed {run.seed}: {rec.status} "
                f"{rec.value if rec.value is not None else rec.error}"
            )
            records[run.candidate.name.removeprefix("heldout-")].append(rec)

        before = self._speed(first.profile.device) if not s.max_tokens else None
        self.executor.map(runs, on_record=record, log=self.log)
        after = self._speed(first.profile.device) if before else None
        drift = calibrate.mismatch(after, before, "before the held-out runs") if after else ""
        base = [(r.seed, r.value) for r in records[owner["baseline"]] if r.status == "ok"]
        if not base:
            for e in done:
                e.error = e.error or "the baseline file crashed on the held-out runs: nothing to compare with"
            return
        rule, unit = self._noise_unit(task, first, [v for _, v in base])
        heldout_statistics(done, base, {e.agent: records[owner[e.agent]] for e in done}, rule, unit)
        if drift:
            reason = f"the machine's speed changed during the held-out runs: {drift}: {SPEED_ADVICE}"
            self.log(f"league: {task.name}: {stats.NOT_COMPARABLE}: {reason}")
            not_comparable(done, reason)

    def _speed(self, device: str) -> dict | None:
        """The machine's speed now; None (logged) when it cannot be measured."""
        try:
            return self.measure_speed(device)
        except RuntimeError as e:
            self.log(f"league: machine speed not measured: {e}; time-mode held-out verdicts do not account for it")
            return None

    def _noise_unit(self, task: Task, loop: AgentLoop, base: list[float]) -> tuple[stats.Rule, float]:
        """The task's rule and its noise unit σ: the measured seed-to-seed std (the stored baseline's, then
        the profile's), else the std of the baseline's held-out runs."""
        s, profile = self.settings, loop.profile
        mode, budget = s.mode[0], s.mode[1] or profile.budget_s
        fingerprint = {**fingerprints.machine_fingerprint(profile.name, profile.device), "mode": mode, "budget": budget}
        stored = baselines.load_baseline(loop.repo / "baselines", task.name, fingerprint)
        rule = task.rule(profile, mode, budget, stored.noise if stored else stats.Noise(), s.min_effect)
        if rule.noise.seed_std:
            self.units[task.name] = {"sigma": rule.noise.seed_std, "source": rule.noise.source or "measured"}
            return rule, rule.noise.seed_std
        spread = stats.summarize(base).std if len(base) > 1 else 0.0
        unit = spread or 1.0
        self.units[task.name] = {
            "sigma": unit,
            "source": f"the baseline's {len(base)} held-out runs (no measured noise)"
            if spread
            else "none: improvements in metric units",
        }
        return rule, unit

    def _write(self, entries: list[Entry], rows: list[dict]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "league.json"
        files.write(
            path,
            json.dumps(
                {
                    "league": self.name,
                    "experiments": self.experiments,
                    "heldout_seeds": self.heldout_seeds,
                    "settings": asdict(self.settings),
                    "noise_units": self.units,
                    "entries": [asdict(e) for e in entries],
                    "leaderboard": rows,
                    "reward_hacking": reward_hacking(entries),
                },
                indent=1,
            ),
        )
        htmlreport.write_league_report(self.out, self.log)
        self.log(f"league: results in {path} (report.html beside it)")


def format_leaderboard(rows: list[dict], fmt: str = "simple") -> str:
    """The leaderboard as a table: improvements signed, in σ to two decimals; cost in dollars."""
    formats = [("+.2f" if "(σ)" in key else ".4f" if key == "cost $" else "g") for key in (rows[0] if rows else {})]
    return tabulate(rows, headers="keys", tablefmt=fmt, floatfmt=formats, missingval="-")


def resolve_tasks(root: str | Path, names: str) -> list[Task]:
    """`all` or comma-separated task names under root."""
    tasks = find_tasks(root)
    if names == "all":
        return tasks
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {t.name: t for t in tasks}
    if missing := [n for n in wanted if n not in by_name]:
        raise AgentError(f"no task named {', '.join(missing)} under {root}; have {', '.join(by_name) or 'none'}")
    return [by_name[n] for n in wanted]
