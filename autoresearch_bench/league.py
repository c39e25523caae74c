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
    [settings]           # equal for every agent: profile, seeds, budget_s, max_tokens, min_improvement
    profile = "cpu"

Each agent runs `--experiments K` experiments after the baseline on each task, in its own worktree
and branch (`autoresearch/<league>-<agent>-<task>`), through the same AgentLoop as `agent`; the
baseline is measured once per task and shared, so every agent starts from the same reference; a
league that stopped resumes where it was. Then each agent's final (last kept) file and the task's
baseline file are trained again with `--heldout-seeds` fresh seeds, interleaved, and scored on the
held-out test rows: the validation split's rows *after* the ones the agents were scored on
(evaluate.py, split "test"), which no agent ever got a number from. Identical files are scored once;
every held-out run is appended to <out>/heldout.tsv and .jsonl.

Ranking: improvement over the baseline on the held-out rows, in units of the measured noise (the
seed-to-seed std of the baseline's held-out scores; the profile's min_effect when that cannot be
measured), averaged over tasks. Also shown: experiments to the first keep, crash rate, API tokens
and cost. Written to <out>/league.json (atomically) and printed as a table.
"""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from . import stats, storage
from .agent import AgentError, AgentLoop, AgentSpec, Experiment, Settings
from .executor import Run, make_executor
from .patch import git
from .runner import Candidate
from .task import Task, find_tasks

_SETTINGS_KEYS = {"profile", "seeds", "budget_s", "max_tokens", "min_improvement", "sandbox"}


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


class League:
    def __init__(self, agents: list[AgentSpec], tasks: list[Task], experiments: int, settings: Settings,
                 name: str = "league", heldout_seeds: int = 3, out_dir: str | Path | None = None,
                 executor: str = "local", slots: int | None = None, log: Callable[[str], None] = print):
        if len({a.name for a in agents}) != len(agents):
            raise AgentError("agent names must be unique")
        self.agents, self.tasks, self.experiments = agents, tasks, experiments
        self.settings = Settings(**{**asdict(settings), "max_experiments": experiments})
        self.name, self.heldout_seeds, self.log = name, heldout_seeds, log
        self.executor = make_executor(executor, slots)  # the held-out runs: N slots or GPUs, N at once
        self.out = (Path(out_dir) if out_dir else Path(".ar") / "league" / name).resolve()

    def run(self) -> list[dict]:
        entries: list[Entry] = []
        for task in self.tasks:
            loops: dict[str, AgentLoop] = {}
            baseline = None  # measured by the first agent, shared by the others: one reference for all
            for spec in self.agents:
                entry = Entry(spec.name, task.name)
                entries.append(entry)
                try:
                    loop = AgentLoop(task.root, spec, f"{self.name}-{spec.name}-{task.name}", self.settings,
                                     out_dir=self.out / task.name / spec.name, log=self.log, baseline=baseline)
                    history = loop.run()
                    summarize_history(entry, history)
                    baseline = baseline or history[0]
                    loops[spec.name] = loop
                except AgentError as e:
                    entry.error = str(e)
                    self.log(f"league: {spec.name} on {task.name}: {e}")
            self._heldout(task, [e for e in entries if e.task == task.name], loops)
        rows = leaderboard(entries, [t.name for t in self.tasks])
        self._write(entries, rows)
        return rows

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
