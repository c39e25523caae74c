"""Git for the tests: throwaway repositories with everything committed."""

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (as a test identity, for commits); its standard output."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def commit_all(root: Path, ignore: str = "") -> Path:
    """Make `root` a git repository on branch main with everything committed; `ignore`: its .gitignore."""
    if ignore:
        (root / ".gitignore").write_text(ignore)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root
