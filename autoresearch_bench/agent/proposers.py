"""The proposers of changes: an OpenAI-compatible model, an external agent command in the candidates'
sandbox (its task folder copied in and back), and the reference agents null, random search and replay.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from .. import process, sandbox
from .children import Children
from .replies import parse_reply
from .spec import AGENT_NPROC_FACTOR, KINDS, RECENT_ROWS, AgentError, AgentSpec, Context, Proposal

# ---------------------------------------------------------------------------------------------------
# Proposers
# ---------------------------------------------------------------------------------------------------

SYSTEM_PROMPT = """You are an autonomous machine-learning researcher. You improve a training script \
that runs under a fixed budget; a test harness trains it, scores it and keeps your change only if \
the score improves. Follow the research program. Propose exactly one experiment per reply, in this \
format:
DESCRIPTION: <one line: what you changed and why>
then either a unified diff against the current file in a ```diff block, or the complete new file in \
a ```python block."""


def render_prompt(ctx: Context) -> str:
    metric = ctx.task.metric
    files = "\n\n".join(f"## {name}\n```python\n{body}```" for name, body in ctx.files.items())
    rows = "".join(e.tsv_row() for e in ctx.history[-RECENT_ROWS:])
    notes = "".join(f"- experiment {e.n} ({e.status}): {e.reason}\n" for e in ctx.history[-3:] if e.reason)
    return (
        f"# Research program\n\n{ctx.program}\n\n# Current files (the last kept version; best {metric} "
        f"{ctx.best if ctx.best is not None else 'unknown'}, {ctx.task.direction} is better)\n\n{files}\n\n"
        f"# Results so far (newest last)\n\ncommit\t{metric}\tmemory_gb\tstatus\tdescription\n{rows}\n"
        + (f"# Why recent experiments were not kept\n\n{notes}\n" if notes else "")
        + f"Propose experiment {ctx.n}."
    )


class OpenAIProposer:
    """Any OpenAI-compatible chat endpoint through the openai client (OPENAI_BASE_URL/OPENAI_API_KEY)."""

    def __init__(self, spec: AgentSpec):
        try:
            import openai
        except ImportError:
            raise AgentError("the openai package is missing; pip install openai") from None
        self.openai, self.spec = openai, spec
        key = os.environ.get(spec.api_key_env) or (
            "unused" if spec.base_url or os.environ.get("OPENAI_BASE_URL") else None
        )
        if not key:
            raise AgentError(
                f"agent {spec.name!r}: set {spec.api_key_env} (or OPENAI_BASE_URL for a local "
                f"endpoint that needs no key)"
            )
        self.client = openai.OpenAI(api_key=key, base_url=spec.base_url, max_retries=spec.max_retries)

    def propose(self, ctx: Context) -> Proposal:
        extra = {"temperature": self.spec.temperature} if self.spec.temperature is not None else {}
        try:
            reply = self.client.chat.completions.create(
                model=self.spec.model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": render_prompt(ctx)},
                ],
                **extra,
            )
        except self.openai.APIError as e:
            raise AgentError(
                f"the model endpoint failed after {self.spec.max_retries} retries "
                f"({type(e).__name__}: {str(e)[:200]}); check OPENAI_BASE_URL and the key, "
                f"then rerun the same command to resume"
            ) from None
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        proposal = parse_reply(text, ctx.task.editable)
        if reply.usage:
            proposal.prompt_tokens = reply.usage.prompt_tokens or 0
            proposal.completion_tokens = reply.usage.completion_tokens or 0
        return proposal


class CommandProposer:
    """An external coding agent: CMD (a shell command line) edits the task's files itself, sandboxed.
    It gets AR_TASK_DIR (where it starts), AR_PROGRAM, AR_EDITABLE (paths joined by ':'), AR_RESULTS (a
    copy of results.tsv), AR_EXPERIMENT and AR_DESCRIPTION_FILE (where it may write a one-line
    description; else its last output line is used). See "The agent's sandbox" above."""

    def __init__(
        self, spec: AgentSpec, log_dir: Path, children: Children, plan: sandbox.Plan, device: str, hidden: list[str]
    ):
        self.spec, self.log_dir, self.children = spec, log_dir, children
        self.plan, self.device, self.hidden = plan, device, hidden

    def propose(self, ctx: Context) -> Proposal:
        with tempfile.TemporaryDirectory(prefix="ar-agent-") as tmp:
            return self._run(ctx, Path(tmp))

    def _run(self, ctx: Context, tmp: Path) -> Proposal:
        plan, log = self.plan, self.log_dir / f"{ctx.n}.agent.log"
        scratch = sandbox.prepare_scratch(tmp, plan)
        copy = scratch / "task"
        shutil.copytree(ctx.worktree_task, copy, symlinks=True)
        if plan.uid is not None:
            for path in [copy, *copy.rglob("*")]:
                os.lchown(path, plan.uid, plan.uid)
        task_dir = ctx.worktree_task if plan.isolated else copy  # where it sees its task folder
        inside = lambda path: f"{sandbox.SCRATCH}/{Path(path).name}" if plan.isolated else str(path)
        if ctx.results_tsv.is_file():
            sandbox.place(ctx.results_tsv, scratch, "results.tsv", plan)
        env = {n: os.environ[n] for n in self.spec.env}
        env.update(
            AR_TASK_DIR=str(task_dir),
            AR_PROGRAM=str(task_dir / "program.md"),
            AR_EDITABLE=":".join(str(task_dir / e) for e in ctx.task.editable),
            AR_RESULTS=inside(scratch / "results.tsv"),
            AR_EXPERIMENT=str(ctx.n),
            AR_DESCRIPTION_FILE=inside(scratch / "description"),
        )
        if not plan.isolated:
            env.update(HOME=str(scratch), TMPDIR=str(scratch))
        command = sandbox.wrap(
            ["/bin/sh", "-c", self.spec.cmd],
            plan,
            tmp,
            scratch,
            readonly=[*map(os.path.abspath, self.spec.ro), *_resolver_paths()],
            hidden=self.hidden,
            writable=[(str(copy), str(task_dir))],
            network=not self.spec.offline,
            cwd=str(task_dir),
        )
        error, deadline = "", time.monotonic() + self.spec.timeout_s
        with (
            open(log, "wb") as out,
            self.children.start(
                command,
                base=process.child_env(),
                env=env,
                cwd=copy,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _agent_limits(self.device, plan),
            ) as proc,
        ):
            while proc.poll() is None and not error:
                if time.monotonic() > deadline:
                    error = f"the agent command ran past {self.spec.timeout_s:.0f} s and was killed"
                elif (count := sandbox.processes_in_session(proc.pid)) > sandbox.MAX_PROCESSES:
                    error = (
                        f"the agent command started {count} processes (limit {sandbox.MAX_PROCESSES}); it was killed"
                    )
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.5)
        # every process of it is gone now (its group killed; inside the sandbox, its PID namespace ended)
        said = _read_regular(scratch / "description")
        out = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
        description = (said.strip() or (out[-1] if out else "agent command")).splitlines()[0][:200]
        if error:
            return Proposal(description, error=error)
        if proc.returncode != 0:
            code = 128 - proc.returncode if plan.isolated and proc.returncode > 128 else proc.returncode
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            return Proposal(description, error=f"the agent command {how} (log: {log})")
        if why := copy_back(copy, ctx.worktree_task):
            return Proposal(description, error=why)
        return Proposal(description, applied=True)


def _agent_limits(device: str, plan: sandbox.Plan) -> None:
    """preexec_fn of the agent command: the candidates' limits, and a cap on the processes of the
    unprivileged uid, which the kernel enforces at fork (a fork bomb stops there even between two looks
    of the process watch); not for a user namespace, where the cap would count all the user's processes."""
    process.preexec(device, True)
    if plan.uid is not None:
        limit = AGENT_NPROC_FACTOR * sandbox.MAX_PROCESSES
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _resolver_paths() -> list[str]:
    """Where /etc/resolv.conf points when it is a link (systemd-resolved's /run/...): shown so that DNS works."""
    target = os.path.realpath("/etc/resolv.conf")
    return [os.path.dirname(target)] if target != "/etc/resolv.conf" and os.path.exists(target) else []


def _read_regular(path: Path) -> str:
    """A file the agent wrote, if it is a regular file (never a link it planted to something else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(4096).decode(errors="replace") if stat.S_ISREG(os.fstat(fd).st_mode) else ""


def copy_back(copy: Path, task_dir: Path) -> str:
    """Bring the agent's edits home: each regular file of its copy of the task folder replaces the
    task folder's where the bytes differ, files it deleted are deleted; '' when done, else why not (a
    link, a FIFO or a device: only plain files come back, so nothing points outside the worktree).
    What changed is then judged as any change (only the editable files may differ)."""
    files = {}
    for folder, dirs, names in os.walk(copy):  # not into linked folders: a link is refused below
        for path in (Path(folder, name) for name in dirs + names):
            mode, rel = os.lstat(path).st_mode, path.relative_to(copy)
            if stat.S_ISREG(mode):
                files[rel] = path
            elif not stat.S_ISDIR(mode):
                return (
                    f"the agent command left {task_dir.name}/{rel}, which is not a plain file (a link, a FIFO "
                    f"or a device); only plain files come back"
                )
    for path in sorted(task_dir.rglob("*"), reverse=True):  # deepest first
        rel = path.relative_to(task_dir)
        if path.is_dir() and not (copy / rel).is_dir():
            shutil.rmtree(path)
        elif not path.is_dir() and rel not in files:
            path.unlink()
    for rel, source in files.items():
        target, data = task_dir / rel, source.read_bytes()
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return ""


class NullProposer:
    """The reference that proposes nothing: every experiment is an empty change."""

    def __init__(self, spec: AgentSpec):
        pass

    def propose(self, ctx: Context) -> Proposal:
        return Proposal("no change", error="no change proposed")


class RandomSearchProposer:
    """The reference that perturbs one float constant of the editable file per experiment: a module-
    level constant or a class field default (e.g. a dataclass of hyperparameters), but none that the
    profile's config sets by the same name (that default is never used). Positive values
    are scaled by a log-uniform factor in [1/2, 2]; values in (0, 1) move in logit space, so betas,
    ratios and dropout stay in (0, 1). Seeded by the agent's seed and the experiment number."""

    def __init__(self, spec: AgentSpec):
        self.seed = spec.seed

    def propose(self, ctx: Context) -> Proposal:
        name = ctx.task.editable[0]
        source = ctx.files[name]
        # a constant that the profile's config overrides by name changes nothing: leave it out
        constants = [c for c in float_constants(source) if c[0] not in ctx.config_keys]
        if not constants:
            return Proposal(
                "no float constants", error=f"{name} has no float constants to perturb (outside the profile's config)"
            )
        rng = random.Random(self.seed * 1_000_003 + ctx.n)
        target, node = rng.choice(constants)
        old = node.value
        if 0 < old < 1:
            logit = math.log(old / (1 - old)) + rng.uniform(-1, 1)
            new = 1 / (1 + math.exp(-logit))
        else:
            new = old * 2 ** rng.uniform(-1, 1)
        new = next(r for r in (float(f"{new:.{d}g}") for d in (3, 6, 17)) if not 0 < old < 1 or 0 < r < 1)
        lines = source.splitlines(keepends=True)
        line = lines[node.lineno - 1]
        lines[node.lineno - 1] = line[: node.col_offset] + repr(new) + line[node.end_col_offset :]
        return Proposal(f"random search: {target} {old:g} -> {new:g}", files={name: "".join(lines)})


class ReplayProposer:
    """The reference that replays given changes: experiment n applies the n-th file of the folder in
    name order, a unified diff (*.diff, *.patch) or a complete editable file (*.py); then nothing.
    With known changes (a no-op, a change measured before) it tests the keep rule on real runs."""

    def __init__(self, spec: AgentSpec):
        self.changes = replay_changes(spec.changes)

    def propose(self, ctx: Context) -> Proposal:
        if ctx.n > len(self.changes):
            return Proposal("replay: nothing left", error=f"all {len(self.changes)} changes were replayed")
        path = self.changes[ctx.n - 1]
        if path.suffix == ".py":
            return Proposal(f"replay {path.name}", files={ctx.task.editable[0]: path.read_text()})
        return Proposal(f"replay {path.name}", diff=path.read_text())


def replay_changes(folder: str | Path) -> list[Path]:
    """The change files of a replay folder, in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix in (".diff", ".patch", ".py"))


def float_constants(source: str) -> list[tuple[str, ast.Constant]]:
    """(name, literal) of each module constant and class field whose value is a float literal."""
    found, tree = [], ast.parse(source)
    for scope in [tree, *(n for n in tree.body if isinstance(n, ast.ClassDef))]:
        for stmt in scope.body:
            target = (
                stmt.target
                if isinstance(stmt, ast.AnnAssign)
                else (stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
            )
            value = getattr(stmt, "value", None)
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Constant)
                and type(value.value) is float
                and value.value != 0
                and value.lineno == value.end_lineno
            ):
                found.append((target.id, value))
    return found


PROPOSERS = dict(zip(KINDS, (OpenAIProposer, CommandProposer, NullProposer, RandomSearchProposer, ReplayProposer)))
