"""Git, run one way for the whole harness: `run` gives a command's output or a GitError that says what
failed; `is_commit`, `toplevel` and `state` answer the questions the harness asks of a repository."""

from __future__ import annotations

import subprocess
from pathlib import Path


class GitError(Exception):
    """A git command that failed or could not start; the message says which and why, stderr is git's own."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


def run(repo: str | Path, *args: str, timeout: float | None = None) -> str:
    """The standard output of `git ARGS` in repo; GitError when git is missing or the command fails."""
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout
    except FileNotFoundError:
        raise GitError("git is not installed; install git") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} in {repo} took more than {timeout:.0f} s") from None
    except subprocess.CalledProcessError as e:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {e.stderr.strip()}", e.stderr.strip()) from None


def is_commit(repo: str | Path, ref: str) -> bool:
    """Whether ref names a commit in the repository holding repo."""
    try:
        run(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return True
    except (GitError, OSError):
        return False


def toplevel(path: str | Path) -> Path:
    """The root of the repository holding path."""
    return Path(run(path, "rev-parse", "--show-toplevel").strip())


def state(path: str | Path) -> tuple[str, bool]:
    """(short commit, dirty) of the repository holding path; ("nogit", False) outside one or on any
    error. Untracked files (results.tsv, say) do not make a tree dirty; no lock is taken."""
    path = Path(path)
    cwd = path if path.is_dir() else path.parent
    try:
        commit = run(cwd, "--no-optional-locks", "rev-parse", "--short=7", "HEAD", timeout=30).strip()
        return commit, bool(
            run(cwd, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", timeout=30).strip()
        )
    except (GitError, OSError):
        return "nogit", False
