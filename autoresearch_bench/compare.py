"""Compare two results files run by run: the same candidates on two machines, or in two modes.

    autoresearch-bench compare A.jsonl B.jsonl [--min-effect X] [--tasks-dir tasks] [--format github]
    autoresearch-bench compare main.json pr.json          # two --ar-json reports (or one of each)
    autoresearch-bench compare results.jsonl results.jsonl --candidates train my_idea   # two candidates

The ok records of each file are grouped by task, candidate, profile, mode and budget (with
`--candidates A_NAME B_NAME`, A's runs of one candidate against B's of another); a group found in
both files is one row: B against A, with the verdict of `stats.decide_by_seed` (as the gate's) under
the task's rule, read from `<tasks-dir>/<task>/task.toml`: its floor and the profile's measured noise
for that mode and budget (no threshold when that folder is not there; `--min-effect` overrides).

Runs with the same seed start from the same weights and see the same batches, so the difference of a
seed's two runs cancels most of the seed-to-seed noise. Where two or more seeds ran on both sides, Δ
is the mean of those per-seed differences, with a paired t-test and its 95% interval (a seed run twice
on one side counts with the mean of its runs; seeds on one side only are left out, and the test
column names the seeds used); else Δ = mean(B) − mean(A), by Welch's test (or thresholds with one run
on a side). The paired test
is what tells "the same score on other hardware" (fixed-token mode) from "more steps in the same
time" (time mode) with a few seeds, where Welch's test still sees the seeds' spread.

A row whose two sides were scored on other data (other validation text or tokenizer: their records'
`extra.data_id` differ) has the verdict "not comparable"; the data column says "unknown" when a side's
records have no data id (written before it existed), so that the reader knows it was not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from . import report, stats
from .stats import NOT_COMPARABLE
from .storage import schema
from .task import METRICS, TaskError, load_task

GroupKey = tuple[str, str, str, str, float]  # task, candidate, profile, mode, budget


class CompareError(Exception):
    """Results files that cannot be compared; the message says what to do."""


@dataclass
class Side:
    """One file's ok runs of one group."""

    metric: str
    runs: list[tuple[int, float]] = field(default_factory=list)  # (seed, value)
    steps: list[int] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    data_ids: set[str | None] = field(default_factory=set)

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.runs]


def _device(record: schema.RunRecord) -> str:
    return record.extra.get("settings", {}).get("device") or record.machine


def read_sides(path: str | Path, candidate: str | None = None) -> dict[GroupKey, Side]:
    """A results.jsonl's ok runs, grouped for comparison; with a candidate name, that candidate's
    only, under the candidate key "" (so that they match another file's runs of another candidate).
    A results.tsv stands for the results.jsonl the harness writes beside it (the full records); a
    .json file is a report (--ar-json, an agent's or a league's report.json) and gives its runs."""
    if Path(path).suffix == ".tsv":
        path = Path(path).with_suffix(".jsonl")
    if not Path(path).is_file():
        raise CompareError(
            f"{path}: no such results file; pass the results.jsonl a run wrote "
            f"(--ar-results names it) or the report --ar-json wrote"
        )
    try:
        found = report.read_records(path)
    except report.ReportError as e:
        raise CompareError(str(e)) from None
    sides: dict[GroupKey, Side] = {}
    for r in found:
        if r.status != "ok" or r.value is None or candidate not in (None, r.candidate):
            continue
        key = (r.task, "" if candidate else r.candidate, r.profile, r.mode, float(r.budget))
        side = sides.setdefault(key, Side(r.metric))
        side.runs.append((r.seed, float(r.value)))
        side.steps.append(r.steps)
        side.devices.add(_device(r))
        side.data_ids.add(r.extra.get("data_id"))
    if not sides:
        raise CompareError(
            f"{path}: no ok runs{f' of candidate {candidate}' if candidate else ''} in it; nothing to compare"
        )
    return sides


def _rule(key: GroupKey, metric: str, tasks_dir: Path, min_effect: float | None) -> stats.Rule:
    """The task's rule for this group, from its folder; the metric's own direction and no threshold without it."""
    task, _, profile, mode, budget = key
    try:
        spec = load_task(tasks_dir / task)
        return spec.rule(spec.profile(profile), mode, budget, min_effect=min_effect)
    except TaskError:
        return stats.Rule(METRICS.get(metric, "lower"), min_effect=min_effect)


def _data(a: Side, b: Side) -> str:
    if None in a.data_ids or None in b.data_ids:
        return "unknown"
    return "same" if a.data_ids == b.data_ids and len(a.data_ids) == 1 else "differ"


def _interval(ci: tuple[float, float]) -> str:
    return "-" if math.isinf(ci[0]) or math.isinf(ci[1]) else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _side_cell(side: Side) -> str:
    s = stats.summarize(side.values)
    low, high = min(side.steps), max(side.steps)
    return f"{s.fmt()} (n={s.n}, {low}{f'–{high}' if high > low else ''} steps)"


def _mode(mode: str, budget: float) -> str:
    return f"{budget:,.0f} tokens" if mode == "tokens" else f"{budget:g} s"


@dataclass
class Comparison:
    rows: list[dict]  # one per group of runs found in both files
    devices: tuple[list[str], list[str]]  # the devices of A's and of B's runs

    def format(self, path_a: str | Path, path_b: str | Path, tablefmt: str = "simple") -> str:
        """The table, under a line per side naming its file and devices."""
        heads = [
            f"{label}: {path} ({', '.join(devices)})"
            for label, path, devices in zip("AB", (path_a, path_b), self.devices)
        ]
        table = tabulate(self.rows, headers="keys", tablefmt=tablefmt, disable_numparse=True)  # keep the + signs
        return "\n".join([*heads, "", table])


def compare(
    path_a: str | Path,
    path_b: str | Path,
    min_effect: float | None = None,
    tasks_dir: str | Path = "tasks",
    candidates: tuple[str, str] | None = None,
) -> Comparison:
    """B against A, group by group; with candidates (name in A, name in B), those two candidates'
    runs against each other (the two paths may be one file)."""
    a_sides, b_sides = (read_sides(path, name) for path, name in zip((path_a, path_b), candidates or (None, None)))
    shared = sorted(set(a_sides) & set(b_sides))
    if not shared:
        raise CompareError(
            f"no group of runs in {path_a} matches one in {path_b} by task, candidate, profile, "
            f"mode and budget; compare files of the same runs (same --ar-profile and --ar-tokens "
            f"or --ar-budget)"
        )
    rows = []
    for key in shared:
        task, candidate, profile, mode, budget = key
        a, b = a_sides[key], b_sides[key]
        data = _data(a, b)
        decision = stats.decide_by_seed(b.runs, a.runs, _rule(key, a.metric, Path(tasks_dir), min_effect))
        rows.append(
            {
                "task": task,
                "candidate": " → ".join(candidates) if candidates else candidate,
                "profile": profile,
                "mode": _mode(mode, budget),
                "A": _side_cell(a),
                "B": _side_cell(b),
                "Δ (B − A)": f"{decision.delta:+.4f}",
                "95% CI": _interval(decision.ci),
                "test": decision.test,
                "verdict (B vs A)": NOT_COMPARABLE if data == "differ" else decision.verdict,
                "data": data,
            }
        )
    devices = tuple(sorted(set().union(*(s.devices for s in sides.values()))) for sides in (a_sides, b_sides))
    return Comparison(rows, devices)
