"""The summary table of a benchmark session: a row per candidate for the terminal and Markdown (--ar-markdown,
the GitHub step summary), the notes of its `not comparable` verdicts, and each benchmark item's JUnit XML
properties."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tabulate import tabulate

from . import stats
from .device import mfu_cell

if TYPE_CHECKING:  # the rows are the session's results; rendering them needs no session
    from .session import CandidateResult


def junit_properties(result: CandidateResult) -> list[tuple[str, str]]:
    """The benchmark item's JUnit XML properties (--junitxml): metric, mean value, delta, verdict, p,
    interval and baseline; "" where there is none (no run, no baseline)."""
    d, values = result.decision, result.values
    finite = lambda x: f"{x:.6g}" if d and math.isfinite(x) else ""
    return [
        ("ar.metric", result.task.metric),
        ("ar.value", f"{stats.summarize(values).mean:.6g}" if values else ""),
        ("ar.delta", finite(d.delta) if d else ""),
        ("ar.verdict", d.verdict if d else ""),
        ("ar.p", finite(d.p) if d else ""),
        ("ar.ci", f"[{finite(d.ci[0])}, {finite(d.ci[1])}]" if d and math.isfinite(d.ci[0]) else ""),
        ("ar.baseline", result.baseline),
        ("ar.status", result.status),
    ]


def summary_rows(results: list[CandidateResult]) -> list[dict]:
    """One row per candidate: score over seeds, baseline comparison, run statistics. Each task's
    metric has its own column, at the same place in every row ("-" for the other tasks' rows)."""
    rows, metrics = [], {r.task.metric: "-" for r in results}
    for r in results:
        recs, values = r.records, r.values
        mean = lambda attr: sum(getattr(x, attr) for x in recs) / len(recs) if recs else 0.0
        d = r.decision
        rows.append(
            {
                "task": r.task.name,
                "candidate": r.label,
                "commit": (recs[0].commit + ("+dirty" if recs[0].dirty else "")) if recs else "-",
                "profile": r.profile.name,
                **metrics,
                r.task.metric: stats.summarize(values).fmt() if values else "-",
                "95% CI": "[{:.4f}, {:.4f}]".format(*stats.summarize(values).ci95) if len(values) > 1 else "-",
                "seeds": f"{len(values)}/{len(recs)}",
                "baseline": r.baseline or "-",
                "delta": f"{d.delta:+.4f}" if d and math.isfinite(d.delta) else "-",
                "verdict": d.verdict if d else "-",
                "detectable": f"{d.detectable:.4f}" if d and math.isfinite(d.detectable) else "-",
                "seconds": f"{mean('seconds'):.1f}",
                "tokens": f"{mean('tokens'):,.0f}",
                "steps": f"{mean('steps'):.0f}",
                "peak mem GB": f"{max((x.peak_mem_gb for x in recs), default=0):.2f}",
                "MFU": mfu_cell([x.extra for x in recs if x.status == "ok"]),
                "status": r.status,
                "error": r.error[:100],
            }
        )
    return rows


def not_comparable_notes(shown: list[CandidateResult]) -> list[str]:
    """Why each `not comparable` verdict is so (other data, another machine speed) and what to do."""
    return [
        f"{r.task.name}/{r.label}: {stats.NOT_COMPARABLE}: {r.decision.reason}"
        for r in shown
        if r.decision and r.decision.verdict == stats.NOT_COMPARABLE
    ]


def markdown(shown: list[CandidateResult]) -> str:
    """The table and its notes as a Markdown section."""
    notes = "".join(f"\n- {line}" for line in not_comparable_notes(shown))
    return (
        "## autoresearch benchmark\n\n"
        + tabulate(summary_rows(shown), headers="keys", tablefmt="github")
        + "\n"
        + notes
    )
