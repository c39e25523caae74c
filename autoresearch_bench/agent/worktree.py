"""The agent's git worktree: REPO/.ar/worktrees/<tag> on branch `autoresearch/<tag>`, so that the user's
checkout is never touched. Made once (or found again on resume), reset to the last kept commit, and
given one commit per experiment; the branch holds the baseline and the kept commits only. Every git
command goes through git.run; a failure is an AgentError that says what git said.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .. import git
from ..git import GitError
from .spec import AgentError

AUTHOR = ("-c", "user.name=autoresearch-bench agent", "-c", "user.email=agent@autoresearch-bench.invalid")
_ADDING = threading.Lock()  # one `git worktree add` at a time: a league's loops share .git/worktrees


class Worktree:
    """The worktree of tag `tag` of the repository `repo`, whose task folder is `task_rel` in it."""

    def __init__(self, repo: Path, tag: str, task_rel: str):
        self.repo, self.task_rel = repo, task_rel
        self.path = repo / ".ar" / "worktrees" / tag
        self.branch = f"autoresearch/{tag}"

    @property
    def task_dir(self) -> Path:
        """The task's folder inside the worktree."""
        return self.path / self.task_rel

    def git(self, *args: str) -> str:
        """The output of `git ARGS` in the worktree; AgentError with git's reason."""
        try:
            return git.run(self.path, *args)
        except GitError as e:
            raise AgentError(str(e)) from None

    def prepare(self, log: Callable[[str], None]) -> None:
        """Make the worktree on its branch (new from the repository's HEAD), unless it is there already."""
        with _ADDING:
            if (self.path / ".git").exists():
                return
            has_branch = git.is_commit(self.repo, f"refs/heads/{self.branch}")
            args = [str(self.path), self.branch] if has_branch else ["-b", self.branch, str(self.path), "HEAD"]
            try:
                git.run(self.repo, "worktree", "prune")
                git.run(self.repo, "worktree", "add", *args)
                dirty = git.run(self.repo, "status", "--porcelain", "--", self.task_rel).strip()
            except GitError as e:
                raise AgentError(f"cannot create the worktree {self.path}: {e}") from None
            if dirty and not has_branch:
                log(
                    f"note: uncommitted changes in {self.task_rel} are not part of this run; the worktree "
                    f"starts from the last commit (commit them and use a new tag to include them)"
                )

    def head(self, short: bool = True) -> str:
        """The commit checked out: its 7-character short name, or the whole hash."""
        return self.git("rev-parse", *(["--short=7"] if short else []), "HEAD").strip()

    def show(self, commit: str, name: str) -> str:
        """The text of the task folder's file `name` at commit."""
        return self.git("show", f"{commit}:{self.task_rel}/{name}")

    def reset(self, commit: str) -> None:
        """Check out commit, dropping every change and untracked file (an agent command's leftovers);
        ignored files (.ar) stay."""
        self.git("reset", "-q", "--hard", commit)
        self.git("clean", "-q", "-fd")

    def commit(self, base: str, message: str) -> str:
        """One commit on top of base with everything changed in the task folder since (an agent command
        may have committed); its short name."""
        self.git("reset", "-q", "--soft", base)
        self.git("add", "-A", "--", self.task_rel)
        self.git(*AUTHOR, "commit", "-q", "--no-verify", "-m", message)
        return self.head()
