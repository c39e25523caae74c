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
    [settings]           # equal for every agent: profile, seeds, confirm_seeds, budget_s, max_tokens, min_improvement
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

Ranking: improvement over the baseline on the held-out rows, in units of the measured noise (the
seed-to-seed std of the baseline's held-out scores; the profile's min_effect when that cannot be
measured), averaged over tasks. Also shown: experiments to the first keep, crash rate, API tokens
and cost. Written to <out>/league.json (atomically) and printed as a table.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
import tomllib
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from . import stats, storage
from .agent import AgentError, AgentLoop, AgentSpec, Experiment, Settings
from .executor import Run, gpu_for, make_executor, visible_gpus
from .patch import git
from .runner import Candidate
from .task import Task, find_tasks

_SETTINGS_KEYS = {"profile", "seeds", "confirm_seeds", "budget_s", "max_tokens", "min_improvement", "sandbox"}


def load_agents(path: str | Path) -> tuple[list[AgentSpec], dict]:
    """The agents of agents.toml and its [settings] table; AgentError with a one-line fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AgentError(f"{path}: not found; write an agents.toml (see autoresearch_bench/league.py)") from None
    except tomllib.TOMLDecodeError as e:
        raise AgentError(f"{path}: malformed TOML ({e}); fix the syntax") from None
    agents = [AgentSpec.from_dict(name, dict(table)) for name, table in raw.get("agents", {}).items()]
    if not agents:
        raise AgentError(f"{path}: no [agents.<name>] table; add at least two agents to compare")
    settings = raw.get("settings", {})
    if unknown := sorted(set(settings) - _SETTINGS_KEYS):
        raise AgentError(f"{path}: [settings] has unknown keys {unknown}; allowed: {sorted(_SETTINGS_KEYS)}")
    return agents, settings


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
    heldout: list[float] = field(default_factory=list)
    improvement_sigma: float | None = None
    error: str = ""


def summarize_history(entry: Entry, history: list[Experiment]) -> None:
    after = [e for e in history if e.n > 0]
    entry.experiments = len(after)
    entry.keeps = sum(e.status == "keep" for e in after)
    entry.crashes = sum(e.status == "crash" for e in after)
    entry.first_keep = next((e.n for e in after if e.status == "keep"), None)
    entry.api_tokens = sum(e.prompt_tokens + e.completion_tokens for e in history)
    entry.cost = sum(e.cost for e in history)
    kept = [e for e in history if e.status == "keep"]
    entry.final_commit = kept[-1].commit if kept else ""


def leaderboard(entries: list[Entry], tasks: list[str]) -> list[dict]:
    """One row per agent, best mean held-out improvement first."""
    rows = []
    for agent in dict.fromkeys(e.agent for e in entries):
        mine = {e.task: e for e in entries if e.agent == agent}
        scores = [e.improvement_sigma for e in mine.values() if e.improvement_sigma is not None]
        n_exp = sum(e.experiments for e in mine.values())
        firsts = [e.first_keep for e in mine.values() if e.first_keep is not None]
        rows.append({
            "agent": agent,
            "improvement (σ)": sum(scores) / len(scores) if scores else None,
            **{f"{t} (σ)": (mine[t].improvement_sigma if t in mine else None) for t in tasks},
            "first keep": f"{sum(firsts) / len(firsts):.1f}" if firsts else "never",
            "keeps": sum(e.keeps for e in mine.values()),
            "crash rate": f"{sum(e.crashes for e in mine.values()) / n_exp:.0%}" if n_exp else "-",
            "experiments": n_exp,
            "API tokens": sum(e.api_tokens for e in mine.values()),
            "cost $": round(sum(e.cost for e in mine.values()), 4),
            "errors": "; ".join(e.error for e in mine.values() if e.error)[:120]})
    return sorted(rows, key=lambda r: -(r["improvement (σ)"] if r["improvement (σ)"] is not None else -1e9))


@dataclass
class Job:
    """One AgentLoop run of the league: a task's baseline (experiment 0 in its first agent's loop, then
    that loop stops) or an agent's experiments on a task."""
    entry: Entry
    baseline_only: bool


class League:
    """Agents × tasks; `slots` (agent, task) loops run at once, each pinned to its own GPU."""

    def __init__(self, agents: list[AgentSpec], tasks: list[Task], experiments: int, settings: Settings,
                 name: str = "league", heldout_seeds: int = 3, out_dir: str | Path | None = None,
                 executor: str = "local", slots: int | None = None, log: Callable[[str], None] = print):
        """executor, slots: where the held-out runs go (executor.make_executor) and how many loops
        (and local held-out runs) run at once; default 1, one after the other."""
        if len({a.name for a in agents}) != len(agents):
            raise AgentError("agent names must be unique")
        self.agents, self.tasks, self.experiments = agents, tasks, experiments
        self.settings = Settings(**{**asdict(settings), "max_experiments": experiments})
        self.name, self.heldout_seeds = name, heldout_seeds
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
            self._heldout(task, [e for e in entries if e.task == task.name],
                          {agent: loop for (t, agent), loop in loops.items() if t == task.name})
        rows = leaderboard(entries, [t.name for t in self.tasks])
        self._write(entries, rows)
        return rows

    def _run_loops(self, entries: list[Entry]) -> dict[tuple[str, str], AgentLoop]:
        """Each task's baseline first (tasks at once), then every agent's loop on that task with the
        baseline shared: one reference for all. `self.slots` loops run at once, in threads; slot k's
        loop sees only GPU gpu_for(k, visible_gpus()) (no pin without GPUs: the loops share the CPU).
        Fills in the entries; returns the loops that ran to the end, by (task, agent). Ctrl-C (or an
        unexpected error) stops every running loop as Ctrl-C stops one: nothing recorded is lost."""
        gpus = visible_gpus()
        if self.slots > 1:
            self.log(f"league: {self.slots} loops at once, on " + (f"GPUs {', '.join(gpus)}" if gpus else "the CPU")
                     + (" (more loops than GPUs: some share one)" if 0 < len(gpus) < self.slots else ""))
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
                        loop = AgentLoop(tasks[e.task].root, specs[e.agent], f"{self.name}-{e.agent}-{e.task}",
                                         replace(self.settings, max_experiments=0) if job.baseline_only
                                         else self.settings, out_dir=self.out / e.task / e.agent,
                                         log=self._tagged(e), baseline=baselines.get(e.task),
                                         gpu=gpu_for(slot, gpus))
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
                    summarize_history(job.entry, outcome)
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
                self.log(f"league: {len(running)} loop(s) still busy after {grace_s:.0f} s (an API call?); "
                         f"they record nothing more")
                break

    def _heldout(self, task: Task, entries: list[Entry], loops: dict[str, AgentLoop]) -> None:
        """Score the baseline and each agent's final file on the held-out rows; fill improvement_sigma."""
        done = [e for e in entries if e.final_commit and e.agent in loops]
        if not done:
            return
        first = loops[done[0].agent]
        folder = self.out / task.name / "heldout"
        files: dict[str, Path] = {}  # content digest → file
        owner: dict[str, str] = {}  # agent (or "baseline") → digest

        def extract(label: str, loop: AgentLoop, commit: str) -> None:
            source = git(loop.worktree, "show", f"{commit}:{loop.task_rel}/{task.editable[0]}")
            digest = hashlib.sha256(source.encode()).hexdigest()[:12]
            if digest not in files:
                files[digest] = folder / digest / task.editable[0]
                files[digest].parent.mkdir(parents=True, exist_ok=True)
                files[digest].write_text(source)
            owner[label] = digest

        extract("baseline", first, first.history()[0].commit)
        for e in done:
            extract(e.agent, loops[e.agent], e.final_commit)
        scores: dict[str, list[float]] = {d: [] for d in files}
        s, results = self.settings, (self.out / "heldout.tsv", self.out / "heldout.jsonl")
        options = {"budget_s": s.budget_s, "max_tokens": s.max_tokens, "isolation": s.sandbox, "eval_split": "test",
                   "results_paths": results}
        runs = [Run(task, first.profile, Candidate(f"heldout-{digest}", path, "league"), seed,
                    {**options, "description": f"held-out {digest}"})
                for seed in range(1000, 1000 + self.heldout_seeds)  # seeds the agents' runs never used
                for digest, path in files.items()]  # interleaved: drift hits every file alike

        def record(run: Run, rec: storage.RunRecord) -> None:
            storage.append_results(rec, *results)
            self.log(f"league: {task.name} {run.candidate.name} seed {run.seed}: {rec.status} "
                     f"{rec.value if rec.value is not None else rec.error}")
            if rec.status == "ok":
                scores[run.candidate.name.removeprefix("heldout-")].append(rec.value)
        self.executor.map(runs, on_record=record, log=self.log)
        base = scores[owner["baseline"]]
        noise = stats.summarize(base).std if len(base) > 1 else 0.0
        noise = noise or first.profile.min_effect
        for e in done:
            e.heldout = scores[owner[e.agent]]
            if e.heldout and base and noise:
                delta = stats.summarize(base).mean - stats.summarize(e.heldout).mean
                e.improvement_sigma = (delta if task.direction == "lower" else -delta) / noise + 0.0  # no -0.0
            elif not e.heldout:
                e.error = e.error or "the final file crashed on the held-out runs"

    def _write(self, entries: list[Entry], rows: list[dict]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "league.json"
        tmp = path.with_name(".league.json.tmp")
        tmp.write_text(json.dumps({"league": self.name, "experiments": self.experiments,
                                   "heldout_seeds": self.heldout_seeds, "settings": asdict(self.settings),
                                   "entries": [asdict(e) for e in entries], "leaderboard": rows}, indent=1))
        os.replace(tmp, path)
        self.log(f"league: results in {path}")


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
