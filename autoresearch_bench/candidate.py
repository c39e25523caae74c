"""Candidates: the files a benchmark runs, the names their test ids and records use, and where they come from.

A candidate is the task's editable file, a file under its candidates/, a file given on the command line
(--ar-candidate PATH) or the editable file as it is at a git ref (--ar-candidate REF, --ar-base-ref).
Names are slugs of file stems and refs, which never hold "@", so the base's internal name BASE is no
candidate's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import files, git
from .task import Task, TaskError

BASE = "@base"  # internal name of the candidate measured from --ar-base-ref; no candidate's name has "@"


@dataclass(frozen=True)
class Candidate:
    """A file that satisfies the task contract, and the name its test ids and records use."""

    name: str
    path: Path
    origin: str = "task"


def display_name(candidate: Candidate) -> str:
    """A candidate's name for people: "base @REF" for the base."""
    ref = git_ref(candidate)
    return f"base @{ref[0]}" if candidate.name == BASE and ref else candidate.name


def git_ref(candidate: Candidate) -> tuple[str, str] | None:
    """(ref, commit) of a candidate taken from git (origin "git:REF@COMMIT" or "base:REF@COMMIT")."""
    kind, _, rest = candidate.origin.partition(":")
    if kind not in ("git", "base") or "@" not in rest:
        return None
    ref, commit = rest.rsplit("@", 1)
    return ref, commit


def _unique(name: str, taken: set[str]) -> str:
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def resolve_candidates(task: Task, cli_values: tuple[str, ...], scratch: Path) -> list[Candidate]:
    """The task's train.py, its candidates/*.py, then each --ar-candidate (a file or a git ref)."""
    taken: set[str] = set()
    found = [
        Candidate(_unique(files.safe_name(p.stem), taken), p, "task" if p == task.train_file else "candidates")
        for p in task.candidate_files()
    ]
    for value in cli_values:
        if Path(value).is_file():
            found.append(Candidate(_unique(files.safe_name(Path(value).stem), taken), Path(value), "cli"))
        else:
            path, commit = file_at_ref(task, value, scratch)
            found.append(Candidate(_unique(files.safe_name(value), taken), path, f"git:{value}@{commit}"))
    return found


def file_at_ref(task: Task, ref: str, scratch: Path) -> tuple[Path, str]:
    """Extract the task's editable file as it is at a git ref: (the file, the ref's short commit)."""
    try:
        rel = task.train_file.resolve().relative_to(git.toplevel(task.root).resolve())
        commit = git.run(task.root, "rev-parse", "--short=7", "--verify", f"{ref}^{{commit}}").strip()
        source = git.run(task.root, "show", f"{commit}:{rel.as_posix()}")
    except (git.GitError, ValueError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip().splitlines()
        raise TaskError(
            f"{ref!r} is neither a file nor a git ref holding {task.train_file.name} "
            f"({detail[0] if detail else 'no detail'})"
        ) from None
    out = scratch / "candidates" / task.name / files.safe_name(ref) / task.train_file.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(source)
    return out, commit
