"""The editable surface: a change may touch a task's editable files (and add candidates), nothing else.

`changed_files` compares the working tree, the index and untracked files with a base ref, so a
patch cannot hide an edit in any of them. Allowed paths per task: its `editable` files and
`candidates/*.py`. Everything else (tests, task.toml, the harness, baselines, other tasks) is
rejected: an agent that edits the checks or the evaluator does not get scored.
"""
from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

from .task import Task


SCRATCH = ".ar/"  # the harness's own scratch folder (candidates extracted from git refs)


class PatchError(Exception):
    """A patch or ref that cannot be used; the message says what to do."""


def git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        raise PatchError("git is not installed; install git to check the editable surface") from None
    except subprocess.CalledProcessError as e:
        raise PatchError(f"git {' '.join(args)} failed in {repo}: {e.stderr.strip()}") from None


def repo_root(path: Path) -> Path:
    return Path(git(path, "rev-parse", "--show-toplevel").strip())


def changed_files(repo: Path, base: str) -> list[str]:
    """Paths (relative to the repo root) that differ from `base`: committed, staged, unstaged, untracked."""
    tracked = git(repo, "diff", "--name-only", "--no-renames", base, "--").splitlines()
    untracked = git(repo, "ls-files", "--others", "--exclude-standard").splitlines()
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
    return [p for p in changed_files(repo, base)
            if not p.startswith(SCRATCH) and not any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
