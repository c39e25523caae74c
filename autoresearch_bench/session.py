"""A benchmark session: which candidates run, with which seeds, in which order; what the table says.

The plugin owns pytest; this module owns the experiment. Seeds of different candidates are
interleaved (seed 0 of every candidate, then seed 1 of every candidate, …) so that drift of the
machine (clocks, thermals, other load) hits them alike. The first benchmark item of a task runs
the whole task's schedule; every benchmark item then reports its own candidate's runs.
"""
from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import stats, storage
from .runner import Candidate, run_candidate
from .task import Profile, Task, TaskError


@dataclass
class Options:
    enabled: bool = False
    profile: str = "auto"
    seeds: int = 1
    seed_base: int = 0
    budget_s: float | None = None
    max_tokens: int | None = None
    results_tsv: Path = Path("results.tsv")
    candidates: tuple[str, ...] = ()
    description: str = ""

    @property
    def results_jsonl(self) -> Path:
        return self.results_tsv.with_suffix(".jsonl")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_base, self.seed_base + self.seeds))


@dataclass
class CandidateResult:
    task: Task
    profile: Profile
    candidate: Candidate
    records: list[storage.RunRecord] = field(default_factory=list)
    skipped: str = ""  # why it was not benchmarked (a failed check)

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.records if r.status == "ok" and r.value is not None]

    @property
    def status(self) -> str:
        if self.skipped:
            return "not run"
        bad = [r.status for r in self.records if r.status != "ok"]
        return bad[0] if bad else "ok"

    @property
    def error(self) -> str:
        return self.skipped or next((r.error for r in self.records if r.error), "")


def candidate_name(path: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def resolve_candidates(task: Task, cli_values: tuple[str, ...], scratch: Path) -> list[Candidate]:
    """The task's train.py, its candidates/*.py, then each --ar-candidate (a file or a git ref)."""
    found: list[Candidate] = []
    taken: set[str] = set()
    for path in task.candidate_files():
        name = candidate_name(path, taken)
        taken.add(name)
        found.append(Candidate(name, path, "task" if path == task.train_file else "candidates"))
    for value in cli_values:
        path = Path(value)
        if path.is_file():
            origin = "cli"
        else:
            path, origin = _from_git_ref(task, value, scratch), f"git:{value}"
        name = candidate_name(path if origin == "cli" else Path(value.replace("/", "_")), taken)
        taken.add(name)
        found.append(Candidate(name, path, origin))
    return found


def _from_git_ref(task: Task, ref: str, scratch: Path) -> Path:
    """Extract the task's editable file as it is at a git ref."""
    rel = task.train_file.resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=task.root, capture_output=True,
                             text=True, check=True).stdout.strip()
        source = subprocess.run(["git", "show", f"{ref}:{rel.relative_to(Path(top).resolve())}"],
                                cwd=task.root, capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError, ValueError) as e:
        raise TaskError(f"--ar-candidate {ref!r}: neither a file nor a git ref holding "
                        f"{task.train_file.name} ({getattr(e, 'stderr', '') or e}".strip() + ")") from None
    out = scratch / task.name / re.sub(r"[^A-Za-z0-9_.-]", "_", ref) / task.train_file.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(source)
    return out


class BenchmarkSession:
    """Runs the benchmark schedule of each task once and keeps every candidate's records."""

    def __init__(self, options: Options, log: Callable[[str], None] = print,
                 on_progress: Callable[[CandidateResult, int, dict], None] | None = None):
        self.options = options
        self.log = log
        self.on_progress = on_progress
        self.results: dict[tuple[str, str], CandidateResult] = {}
        self.pending: dict[str, list[CandidateResult]] = defaultdict(list)  # task → not yet run

    def plan(self, task: Task, profile: Profile, candidate: Candidate) -> CandidateResult:
        key = (task.name, candidate.name)
        if key not in self.results:
            self.results[key] = CandidateResult(task, profile, candidate)
            self.pending[task.name].append(self.results[key])
        return self.results[key]

    def skip(self, task: Task, candidate: Candidate, reason: str) -> None:
        result = self.results.get((task.name, candidate.name))
        if result is not None and not result.skipped:
            result.skipped = reason

    def result(self, task: Task, candidate: Candidate) -> CandidateResult:
        """This candidate's result, running the task's interleaved schedule first if needed."""
        queue = [r for r in self.pending.pop(task.name, []) if not r.skipped]
        for seed in self.options.seed_list:
            for entry in queue:
                self._run(entry, seed)
        return self.results[(task.name, candidate.name)]

    def _run(self, entry: CandidateResult, seed: int) -> None:
        o = self.options
        record = run_candidate(
            entry.task, entry.profile, entry.candidate, seed, budget_s=o.budget_s, max_tokens=o.max_tokens,
            results_paths=(o.results_tsv, o.results_jsonl), description=o.description,
            on_progress=(lambda r: self.on_progress(entry, seed, r)) if self.on_progress else None,
            log=self.log)
        storage.append_results(record, o.results_tsv, o.results_jsonl)
        entry.records.append(record)
        value = f"{record.value:.4f}" if record.value is not None else "-"
        self.log(f"{entry.task.name}/{entry.candidate.name} seed {seed}: {record.metric} {value} "
                 f"[{record.status}] {record.error}".rstrip())

    def ranked(self) -> list[CandidateResult]:
        """Per task, candidates with scores best first, then the ones without."""
        def key(r: CandidateResult):
            values = r.values
            if not values:
                return (r.task.name, 1, 0.0)
            mean = stats.summarize(values).mean
            return (r.task.name, 0, mean if r.task.direction == "lower" else -mean)
        return sorted(self.results.values(), key=key)
