"""The editable surface: a change may touch a task's editable files (and add candidates), nothing else.

`changed_files` compares the working tree, the index and untracked files with a base ref, so a
patch cannot hide an edit in any of them. Allowed paths per task: its `editable` files and
`candidates/*.py`. Everything else (tests, task.toml, the harness, baselines, other tasks) is
rejected: an agent that edits the checks or the evaluator does not get scored.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from . import git
from .task import Task

SCRATCH = ".ar/"  # the harness's own scratch folder (candidates extracted from git refs)


def changed_files(repo: Path, base: str) -> list[str]:
    """Paths (relative to the repo root) that differ from `base`: committed, staged, unstaged, untracked."""
    tracked = git.run(repo, "diff", "--name-only", "--no-renames", base, "--").splitlines()
    untracked = git.run(repo, "ls-files", "--others", "--exclude-standard").splitlines()
    return sorted(set(tracked) | set(untracked))


def allowed_patterns(repo: Path, tasks: list[Task]) -> list[str]:
    patterns = []
    for task in tasks:
        rel = task.root.resolve().relative_to(repo.resolve()).as_posix()
        patterns += [f"{rel}/{name}" for name in task.editable] + [f"{rel}/candidates/*.py"]
    return patterns


def surface_violations(repo: Path, base: str, tasks: list[Task]) -> list[str]:
    """Changed paths outside every task's editable surface."""
    patterns = allowed_patterns(repo, tasks)
    return [
        p
        for p in changed_files(repo, base)
        if not p.startswith(SCRATCH) and not any(fnmatch.fnmatchcase(p, pat) for pat in patterns)
    ]
