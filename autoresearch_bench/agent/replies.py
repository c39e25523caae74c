"""A model's reply into a change: a unified diff or a complete file in a fenced block, applied with git."""

from __future__ import annotations

import re
from pathlib import Path

from .. import git
from ..git import GitError
from .spec import Proposal

# ---------------------------------------------------------------------------------------------------
# Replies: a unified diff or a complete file in a fenced block
# ---------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```[ \t]*([\w.+-]*)[ \t]*([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def parse_reply(text: str, editable: tuple[str, ...]) -> Proposal:
    """The change in a model's reply: its ```diff block, else its largest ```python block (a whole
    file; the info string or a first-line `# file: NAME` may name which editable file)."""
    outside = FENCE.sub("", text)
    tagged = re.search(r"^\W*description\W*:\s*(.+)$", outside, re.I | re.M)
    lines = [l.strip(" #*->") for l in outside.splitlines() if l.strip(" #*->")]
    description = (tagged.group(1) if tagged else lines[0] if lines else "no description").strip()[:200]
    blocks = FENCE.findall(text)
    diffs = [
        body
        for lang, _, body in blocks
        if lang in ("diff", "patch", "udiff") or body.lstrip().startswith(("--- ", "diff --git"))
    ]
    if diffs:
        return Proposal(description, diff=diffs[0])
    files = [(info, body) for lang, info, body in blocks if lang in ("python", "py", "")]
    if not files:
        return Proposal(description, error="the reply holds no ```diff block and no complete file in a ```python block")
    info, body = max(files, key=lambda f: len(f[1]))
    named = re.match(r"#\s*file:\s*(\S+)", body) or re.match(r"(\S+\.py)$", info.strip())
    name = Path(named.group(1)).name if named else editable[0]
    if name not in editable:
        return Proposal(
            description, error=f"the reply rewrites {name}, which is not editable (editable: {', '.join(editable)})"
        )
    return Proposal(description, files={name: body})


def apply_proposal(worktree: Path, task_rel: str, proposal: Proposal, patch: Path) -> str:
    """Write the proposal into the worktree (a diff goes through the file `patch`, kept as a log);
    '' on success, else why it does not apply."""
    for name, content in proposal.files.items():
        (worktree / task_rel / name).write_text(content)
    if not proposal.diff:
        return ""
    patch.write_text(proposal.diff if proposal.diff.endswith("\n") else proposal.diff + "\n")
    reasons = []
    # Models write paths relative to the task folder or to the repository, with or without a/ b/.
    for extra in ([f"--directory={task_rel}", "-p1"], [f"--directory={task_rel}", "-p0"], ["-p1"], ["-p0"]):
        try:
            git.run(worktree, "apply", "--recount", "--whitespace=nowarn", *extra, str(patch))
            return ""
        except GitError as e:
            reasons.append("; ".join(line.removeprefix("error: ") for line in e.stderr.splitlines()) or str(e))
    # git's reason from the way of reading the paths that found the file, if one did
    found = [r for r in reasons if "No such file or directory" not in r]
    return f"the diff does not apply to the current file (git apply: {(found or reasons)[0]})"
