"""progress.png: every experiment's value, the kept ones and the best so far (the `plot` extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import files
from ..task import Task
from .spec import Experiment


def write_progress_plot(
    history: list[Experiment], path: Path, task: Task, title: str, log: Callable[[str], None] = print
) -> bool:
    """autoresearch's progress.png: every scored experiment, the kept ones marked, the running best.
    Needs matplotlib (the `plot` extra); without it, says so once and returns False."""
    try:
        from matplotlib.figure import Figure  # not pyplot: its global state is not thread-safe (league loops)
    except ImportError:
        if not getattr(write_progress_plot, "warned", False):
            log("progress.png skipped: pip install 'autoresearch-bench[plot]' for matplotlib")
            write_progress_plot.warned = True
        return False
    scored = [e for e in history if e.value is not None]
    best, running = None, []
    for e in history:
        if e.status == "keep" and e.value is not None:
            best = e.value
        running.append(best)
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    ax.scatter(
        [e.n for e in scored if e.status != "keep"],
        [e.value for e in scored if e.status != "keep"],
        c="lightgray",
        s=18,
        label="discarded",
    )
    ax.scatter(
        [e.n for e in scored if e.status == "keep"],
        [e.value for e in scored if e.status == "keep"],
        c="tab:green",
        s=30,
        zorder=3,
        label="kept",
    )
    ax.step([e.n for e in history], running, where="post", c="tab:green", lw=1.2, label="best so far")
    crashes = [e.n for e in history if e.status == "crash"]
    if crashes and scored:
        ax.scatter(crashes, [max(e.value for e in scored)] * len(crashes), marker="x", c="tab:red", label="crash")
    ax.set(xlabel="experiment", ylabel=f"{task.metric} ({task.direction} is better)", title=title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with files.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return True
