"""The agent loop: propose a change to a task's editable file, test it with the task's suite, keep or
discard it, record it; resumable at any point.

    autoresearch-bench agent --task tasks/gpt_pretrain --tag nov26 --model gpt-5

Where things live (REPO = the git repository holding the task):
- the agent works in its own git worktree, REPO/.ar/worktrees/<tag>, on branch `autoresearch/<tag>`,
  so the user's checkout is never touched; the branch holds the baseline and the kept commits only;
- records go to REPO/.ar/agent/<tag>/ (or --out): results.tsv (autoresearch's columns: commit,
  <metric>, memory_gb, status, description), experiments.jsonl (the full Experiment records:
  reason, tokens, cost, seconds), bench.tsv/.jsonl (the harness's per-seed RunRecords),
  logs/<n>.log (pytest's output), progress.png (with the `plot` extra), report.json and report.html
  (report.py, htmlreport.py: every experiment, kept or not, and its runs; rewritten after each).

One experiment: ask the proposer (an OpenAI-compatible model, an external command, or a built-in
reference agent) → apply the change (a unified diff, or a complete file) → reject it unless only the
task's editable files changed → commit → KeepRule, screen then confirm, each stage one
`pytest --autoresearch <task>` run in the worktree: the screen runs the candidate on the screening
seed(s) and compares it, seed by seed, with the best kept commit's stored runs; a change that looks
better there (by the screen threshold) is confirmed on fresh seeds, paired with the best on the same
seeds (its stored runs, or re-measured beside the candidate when it has none), and kept only when the
paired t-test at alpha says better and |Δ| is at least the paired threshold (the task's rule: the
measured pair noise, the practical floor, or `min_improvement`). Otherwise the branch is reset to the
last kept commit. Statuses are autoresearch's: keep, discard (not better, a reply that does not apply,
a failed check, a rule violation) and crash (the run crashed or timed out); crashes and failed checks
cost the screen run only. Experiment 0 is the unchanged baseline on the screening seeds. Each record
says the stage it ended at, the seeds, the per-seed values, the confirmation's p and the device
seconds of its runs.

Machine speed (time mode): each stage's runs carry the machine's speed measured before them (the
session's calibration, calibrate.py). A stage whose speed departs by more than calibrate.TOLERANCE from
the speed at which the best's runs on those seeds were measured ends the experiment as a discard whose
reason says `not comparable`, with the measured change and the advice: the same rule as the session
gate's, so a change is never kept (or judged worse) for a run that merely got more (or fewer) steps.

The agent's sandbox. An external agent command is as untrusted as the code it writes, so it runs in
the candidates' sandbox (sandbox.py) at the same level (--sandbox off | auto | strict): new mount, PID,
IPC and UTS namespaces, as uid 65534 with no capabilities when the harness is root, else in a user
namespace whose capabilities are dropped; the system folders, the Python installation and the
harness's package read-only (its corpus covered); a private /tmp and /dev; the resource limits of a
run, a cap on processes (the process watch, and RLIMIT_NPROC of uid 65534 at the kernel), its own
process group and PID namespace, so no process of it outlives its experiment. Not shown at all: the
data cache (validation and held-out rows), the records (results, ledgers, logs), the user's checkout,
other worktrees, and the rest of its own worktree. Its environment is the children's allow-list plus
the names given with --agent-env (its API key); it keeps the machine's network (its model's API)
unless --agent-offline; --agent-ro shows more paths read-only (its program, its config), which must
be readable by uid 65534 when the harness is root. Its task folder: the agent works on a copy of the
worktree's task folder, bound read-write where the folder is (AR_TASK_DIR is the real path), and
when it ends, the harness copies the plain files back (a link, FIFO or device fails the experiment).
A copy rather than a chown of the worktree: it works alike for uid 65534 and a user namespace, the
user's worktree never holds files of another uid, nothing of it but plain files in the task folder
reaches the harness (no link to a secret, no git hook), and the editable-surface rule then judges
the change as any other. AR_RESULTS is a copy of results.tsv. Where no namespaces are available
(level auto falls back to off, with a warning) it runs unisolated with the scrubbed environment only.

Robustness: rows are appended atomically (storage.append_lines) only after an experiment ends, and
the branch is reset to the last kept commit on start, so a crash or Ctrl-C at any moment loses at
most the experiment in flight; rerunning the same command resumes. The agent command and the pytest
runs get process groups of their own, killed on Ctrl-C or by AgentLoop.interrupt() from another
thread (a league's loops run in threads, each pinned to one GPU with `gpu=`). API errors and rate limits are
retried with exponential backoff by the openai client itself (`max_retries`); when they persist the
loop stops with a one-line error and nothing recorded is lost.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import resource
import shutil
import signal
import stat
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Iterator

from . import calibrate, process, report, sandbox, stats, storage
from .data import cache_root
from .patch import SCRATCH, PatchError, changed_files, git, repo_root
from .process import kill_group
from .task import Task, default_profile, load_task

STATUSES = ("keep", "discard", "crash")
RECENT_ROWS = 20  # results rows shown to the model
# Time mode: a comparison across a change of the machine's speed says so instead of keeping or discarding on it.
NOT_COMPARABLE = stats.NOT_COMPARABLE
SPEED_ADVICE = "use fixed-token mode (--tokens N), or rerun on an idle machine"
AGENT_NPROC_FACTOR = 4  # the unprivileged uid's processes, all runs together, stay below this × MAX_PROCESSES
AUTHOR = ("-c", "user.name=autoresearch-bench agent", "-c", "user.email=agent@autoresearch-bench.invalid")


class AgentError(Exception):
    """The loop cannot go on (unusable task, endpoint down, broken worktree); the message says what to do."""


@dataclass
class AgentSpec:
    """Who proposes changes: kind openai (model), command (cmd), null, random-search or replay (changes)."""
    name: str
    kind: str = "openai"
    model: str = ""
    base_url: str | None = None  # default: OPENAI_BASE_URL, as the openai client reads it
    api_key_env: str = "OPENAI_API_KEY"
    cmd: str = ""
    changes: str = ""  # replay: a folder of changes, applied one per experiment in name order
    timeout_s: float = 1800.0  # an external command's limit per experiment
    env: list[str] = field(default_factory=list)  # command: variables passed on besides the allow-list (API keys)
    ro: list[str] = field(default_factory=list)  # command: paths shown to it read-only (its program, its config)
    offline: bool = False  # command: no network (it reaches its model some other way, or not at all)
    seed: int = 0
    temperature: float | None = None
    max_retries: int = 6  # the openai client's own retries with exponential backoff
    price_in: float = 0.0  # dollars per million prompt tokens, for the cost column
    price_out: float = 0.0  # dollars per million completion tokens

    @classmethod
    def from_dict(cls, name: str, d: dict) -> AgentSpec:
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise AgentError(f"agent {name!r}: unknown keys {unknown}; allowed: {sorted(known)}")
        spec = cls(name=name, **d)
        if spec.kind not in PROPOSERS:
            raise AgentError(f"agent {name!r}: kind must be one of {', '.join(PROPOSERS)}, not {spec.kind!r}")
        if spec.kind == "openai" and not spec.model:
            raise AgentError(f"agent {name!r}: kind openai needs a model (--model or model = \"...\")")
        if spec.kind == "command" and not spec.cmd:
            raise AgentError(f"agent {name!r}: kind command needs cmd (--agent-cmd or cmd = \"...\")")
        if unset := [n for n in spec.env if n not in os.environ]:
            raise AgentError(f"agent {name!r}: {', '.join(unset)} (--agent-env or env = [...]) not set in this "
                             f"environment; export it first or leave it out")
        if missing := [p for p in spec.ro if not Path(p).exists()]:
            raise AgentError(f"agent {name!r}: {', '.join(missing)} (--agent-ro or ro = [...]) does not exist")
        if spec.kind == "replay" and not Path(spec.changes).is_dir():
            raise AgentError(f"agent {name!r}: kind replay needs changes, a folder of *.diff / *.patch / *.py files "
                             f"(--changes DIR or changes = \"...\"), not {spec.changes!r}")
        return spec


@dataclass
class Experiment:
    n: int
    commit: str
    value: float | None  # mean over the screening seeds: every row on the same seeds
    memory_gb: float
    status: str  # keep | discard | crash
    description: str
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    started_at: str = ""
    stage: str = ""  # screen | confirm: the last stage that ran ("" when nothing ran)
    seeds: list[int] = field(default_factory=list)  # the candidate's seeds, over both stages
    runs: list[list] = field(default_factory=list)  # the candidate's [seed, value] pairs
    best_runs: list[list] = field(default_factory=list)  # the best's [seed, value] pairs, re-measured here
    speeds: list[list] = field(default_factory=list)  # [seed, machine speed before its run] (time mode)
    best_speeds: list[list] = field(default_factory=list)  # the same for best_runs
    p: float | None = None  # the confirmation's paired p
    gpu_seconds: float = 0.0  # device time of the runs (training, evaluation, start-up), both sides
    split: dict[str, float] = field(default_factory=dict)  # where the experiment's wall time went (SPLIT)

    def tsv_row(self) -> str:
        cells = (self.commit, f"{self.value if self.value is not None else 0.0:.6f}", f"{self.memory_gb:.1f}",
                 self.status, self.description)
        return "\t".join(re.sub(r"[\t\r\n]+", " ", str(c)) for c in cells) + "\n"


@dataclass
class Proposal:
    """A change: complete files (by editable name) or a unified diff; `applied` when already in the tree."""
    description: str
    files: dict[str, str] = field(default_factory=dict)
    diff: str = ""
    applied: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""  # why there is no usable change (recorded as the discard reason)


@dataclass
class Context:
    """What a proposer sees: the research program, the current files, the recent results."""
    task: Task
    worktree_task: Path
    program: str
    files: dict[str, str]
    history: list[Experiment]
    best: float | None
    n: int
    results_tsv: Path
    config_keys: frozenset[str] = frozenset()  # names the profile's [config] sets: a file's default does not count


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
    diffs = [body for lang, _, body in blocks
             if lang in ("diff", "patch", "udiff") or body.lstrip().startswith(("--- ", "diff --git"))]
    if diffs:
        return Proposal(description, diff=diffs[0])
    files = [(info, body) for lang, info, body in blocks if lang in ("python", "py", "")]
    if not files:
        return Proposal(description, error="the reply holds no ```diff block and no complete file in a "
                                           "```python block")
    info, body = max(files, key=lambda f: len(f[1]))
    named = re.match(r"#\s*file:\s*(\S+)", body) or re.match(r"(\S+\.py)$", info.strip())
    name = Path(named.group(1)).name if named else editable[0]
    if name not in editable:
        return Proposal(description, error=f"the reply rewrites {name}, which is not editable "
                                           f"(editable: {', '.join(editable)})")
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
        done = subprocess.run(["git", "apply", "--recount", "--whitespace=nowarn", *extra, str(patch)],
                              cwd=worktree, capture_output=True, text=True)
        if done.returncode == 0:
            return ""
        reasons.append("; ".join(line.removeprefix("error: ") for line in done.stderr.strip().splitlines())
                       or f"exit code {done.returncode}")
    # git's reason from the way of reading the paths that found the file, if one did
    found = [r for r in reasons if "No such file or directory" not in r]
    return f"the diff does not apply to the current file (git apply: {(found or reasons)[0]})"


# ---------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------

class Children:
    """The child processes of one loop (the agent command, the task's pytest run): each gets the loop's
    environment `env` (a league pins a loop to its GPU with CUDA_VISIBLE_DEVICES) and its own process
    group, which is killed when it is done, on an error or Ctrl-C, or by stop() from another thread; and
    it dies with the thread that started it (the loop killed by a signal Python cannot catch)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env or {}
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopped = False

    def check(self) -> None:
        """KeyboardInterrupt once stop() was called, as if Ctrl-C had reached this loop."""
        if self.stopped:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def start(self, cmd: str | list[str], env: dict[str, str] | None = None, base: dict[str, str] | None = None,
              **popen) -> Iterator[subprocess.Popen]:
        """subprocess.Popen(cmd, **popen) with `base` (default os.environ), the loop's env and `env`; its
        group is killed when the block ends; KeyboardInterrupt after the block when stop() was called meanwhile."""
        with self.lock:
            self.check()
            proc = subprocess.Popen(cmd, env={**(os.environ if base is None else base), **self.env, **(env or {})},
                                    start_new_session=True, **{"preexec_fn": process.die_with_parent, **popen})
            self.running.add(proc)
        try:
            yield proc
        finally:
            with self.lock:
                self.running.discard(proc)
            kill_group(proc)
        self.check()

    def stop(self) -> None:
        """Kill every running child (from any thread); the loop's next step raises KeyboardInterrupt."""
        with self.lock:
            self.stopped = True
            for proc in self.running:
                kill_group(proc, reap=False)  # the thread that started it waits on it


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
    return (f"# Research program\n\n{ctx.program}\n\n# Current files (the last kept version; best {metric} "
            f"{ctx.best if ctx.best is not None else 'unknown'}, {ctx.task.direction} is better)\n\n{files}\n\n"
            f"# Results so far (newest last)\n\ncommit\t{metric}\tmemory_gb\tstatus\tdescription\n{rows}\n"
            + (f"# Why recent experiments were not kept\n\n{notes}\n" if notes else "")
            + f"Propose experiment {ctx.n}.")


class OpenAIProposer:
    """Any OpenAI-compatible chat endpoint through the openai client (OPENAI_BASE_URL/OPENAI_API_KEY)."""

    def __init__(self, spec: AgentSpec):
        try:
            import openai
        except ImportError:
            raise AgentError("the openai package is missing; pip install openai") from None
        self.openai, self.spec = openai, spec
        key = os.environ.get(spec.api_key_env) or ("unused" if spec.base_url or os.environ.get("OPENAI_BASE_URL")
                                                   else None)
        if not key:
            raise AgentError(f"agent {spec.name!r}: set {spec.api_key_env} (or OPENAI_BASE_URL for a local "
                             f"endpoint that needs no key)")
        self.client = openai.OpenAI(api_key=key, base_url=spec.base_url, max_retries=spec.max_retries)

    def propose(self, ctx: Context) -> Proposal:
        extra = {"temperature": self.spec.temperature} if self.spec.temperature is not None else {}
        try:
            reply = self.client.chat.completions.create(
                model=self.spec.model, messages=[{"role": "system", "content": SYSTEM_PROMPT},
                                                 {"role": "user", "content": render_prompt(ctx)}], **extra)
        except self.openai.APIError as e:
            raise AgentError(f"the model endpoint failed after {self.spec.max_retries} retries "
                             f"({type(e).__name__}: {str(e)[:200]}); check OPENAI_BASE_URL and the key, "
                             f"then rerun the same command to resume") from None
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

    def __init__(self, spec: AgentSpec, log_dir: Path, children: Children, plan: sandbox.Plan, device: str,
                 hidden: list[str]):
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
        env.update(AR_TASK_DIR=str(task_dir), AR_PROGRAM=str(task_dir / "program.md"),
                   AR_EDITABLE=":".join(str(task_dir / e) for e in ctx.task.editable),
                   AR_RESULTS=inside(scratch / "results.tsv"), AR_EXPERIMENT=str(ctx.n),
                   AR_DESCRIPTION_FILE=inside(scratch / "description"))
        if not plan.isolated:
            env.update(HOME=str(scratch), TMPDIR=str(scratch))
        command = sandbox.wrap(["/bin/sh", "-c", self.spec.cmd], plan, tmp, scratch,
                               readonly=[*map(os.path.abspath, self.spec.ro), *_resolver_paths()], hidden=self.hidden,
                               writable=[(str(copy), str(task_dir))], network=not self.spec.offline,
                               cwd=str(task_dir))
        error, deadline = "", time.monotonic() + self.spec.timeout_s
        with open(log, "wb") as out, self.children.start(
                command, base=process.child_env(), env=env, cwd=copy, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=lambda: _agent_limits(self.device, plan)) as proc:
            while proc.poll() is None and not error:
                if time.monotonic() > deadline:
                    error = f"the agent command ran past {self.spec.timeout_s:.0f} s and was killed"
                elif (count := sandbox.processes_in_session(proc.pid)) > sandbox.MAX_PROCESSES:
                    error = f"the agent command started {count} processes (limit {sandbox.MAX_PROCESSES}); it was killed"
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
                return (f"the agent command left {task_dir.name}/{rel}, which is not a plain file (a link, a FIFO "
                        f"or a device); only plain files come back")
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
            return Proposal("no float constants", error=f"{name} has no float constants to perturb "
                                                        f"(outside the profile's config)")
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
        lines[node.lineno - 1] = line[:node.col_offset] + repr(new) + line[node.end_col_offset:]
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
            target = stmt.target if isinstance(stmt, ast.AnnAssign) else (
                stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
            value = getattr(stmt, "value", None)
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and type(value.value) is float \
                    and value.value != 0 and value.lineno == value.end_lineno:
                found.append((target.id, value))
    return found


PROPOSERS = {"openai": OpenAIProposer, "command": CommandProposer, "null": NullProposer,
             "random-search": RandomSearchProposer, "replay": ReplayProposer}


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeepRule:
    """Screen, then confirm: the agent's keep rule, a pure function of per-seed values ({seed: value}).

    screen: the candidate on the screening seeds against the best's runs on the same seeds; it passes
    when the mean difference is better by at least the screen threshold: the task's floor, and where
    the pair noise is known the difference that a no-op beats with probability `screen_rate` (so a
    no-op costs 1 + screen_rate * confirmation runs on average).
    confirm: the candidate on fresh seeds, paired with the best on them: stats.decide_by_seed under the
    rule (paired t at alpha, |Δ| >= the paired threshold); kept only when that says better."""
    rule: stats.Rule
    screen_seeds: tuple[int, ...] = (0,)
    confirm_seeds: tuple[int, ...] = (1, 2, 3)
    screen_rate: float = 0.1

    @property
    def screen_threshold(self) -> float:
        std = self.rule.std(paired=True)
        z = NormalDist().inv_cdf(1 - self.screen_rate)
        return max(self.rule.floor, z * std / math.sqrt(len(self.screen_seeds)) if std else 0.0)

    def screen(self, candidate: dict[int, float], best: dict[int, float]) -> tuple[bool, str]:
        """(passes, why) of the screening seeds."""
        d = math.fsum(candidate[s] - best[s] for s in self.screen_seeds) / len(self.screen_seeds)
        gain, bar = (-d if self.rule.direction == "lower" else d), self.screen_threshold
        seeds = ", ".join(map(str, self.screen_seeds))
        if gain > 0 and gain >= bar:
            return True, f"screen: Δ {d:+.4f} on seed {seeds} clears {bar:.4f}"
        return False, f"screen: Δ {d:+.4f} on seed {seeds} against the best: not better by {bar:.4f}"

    def confirm(self, candidate: dict[int, float], best: dict[int, float]) -> stats.Decision:
        """The paired decision on the confirmation seeds."""
        return stats.decide_by_seed([(s, candidate[s]) for s in self.confirm_seeds],
                                    [(s, best[s]) for s in self.confirm_seeds], self.rule)


@dataclass
class Settings:
    """How each experiment is run and judged; equal for every agent of a league."""
    profile: str = "auto"
    seeds: int = 1  # screening seeds (0 …)
    confirm_seeds: int = 3  # fresh seeds that confirm a change that passed the screen
    budget_s: float | None = None
    max_tokens: int | None = None  # fixed-token mode of the harness
    sandbox: str = "auto"
    min_improvement: float | None = None  # the paired threshold (still floored); default: from the noise
    max_experiments: int | None = None  # after the baseline, counting earlier sessions of this tag
    max_hours: float | None = None  # this invocation's wall clock
    max_api_tokens: int | None = None  # prompt + completion tokens over the tag's whole run
    run_timeout_s: float | None = None  # limit of one pytest run; default from the profile

    @property
    def mode(self) -> tuple[str, float | None]:
        """(time | tokens, the budget given; None: the profile's)."""
        return ("tokens", self.max_tokens) if self.max_tokens else ("time", self.budget_s)


@dataclass
class Measured:
    """What one run of the task's suite on some seeds gave: a status (ok | crash | discard), the
    candidate's and the re-measured best's {seed: value}, peak memory and the runs' device seconds."""
    status: str
    seeds: tuple[int, ...]
    reason: str = ""
    memory_gb: float = 0.0
    runs: dict[int, float] = field(default_factory=dict)
    best_runs: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    split: dict[str, float] = field(default_factory=dict)
    speed: dict | None = None  # the machine's speed before these runs (calibrate; time mode only)


# Where an experiment's wall time goes, summed over its stages and runs: the pytest runs' wall, the
# checks (JUnit times of the items that are not benchmarks), the runs' parts (runner.py's split) and
# the training itself; "other" is the rest (pytest's start and collection, git, the records).
SPLIT = ("wall", "checks", "data", "cache_copy", "process_start", "setup", "training", "evaluation", "audit",
         "other")


def time_split(wall: float, checks: float, records: list) -> dict[str, float]:
    """An experiment stage's SPLIT from its pytest wall time, its checks' time and its run records."""
    parts = {"wall": wall, "checks": checks}
    for key in ("data", "cache_copy", "process_start", "setup", "audit"):
        parts[key] = math.fsum(r.extra.get("split", {}).get(key, 0.0) for r in records)
    parts["training"] = math.fsum(r.seconds for r in records)
    parts["evaluation"] = math.fsum(r.eval_seconds for r in records)
    parts["other"] = wall - math.fsum(v for k, v in parts.items() if k != "wall")
    return {k: round(parts[k], 2) for k in SPLIT}


_WORKTREES = threading.Lock()


class AgentLoop:
    def __init__(self, task_dir: str | Path, spec: AgentSpec, tag: str, settings: Settings,
                 out_dir: str | Path | None = None, log: Callable[[str], None] = print,
                 baseline: Experiment | None = None, gpu: str | None = None):
        """baseline: a measurement of the same starting commit under the same settings (a league
        measures it once per task), recorded as experiment 0 instead of running it again.
        gpu: the only GPU (a CUDA_VISIBLE_DEVICES entry) that the loop's child processes see; None:
        those of this process. A league runs one loop per GPU at once this way."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", tag):
            raise AgentError(f"tag {tag!r}: use letters, digits, '.', '_' and '-' only")
        self.spec, self.tag, self.settings, self.log, self.baseline = spec, tag, settings, log, baseline
        self.start_commit: str | None = None  # set by run()
        self.gpu = gpu
        self.children = Children({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
        task_dir = Path(task_dir).resolve()
        self.task = load_task(task_dir)
        try:
            self.repo = repo_root(task_dir)
        except PatchError as e:
            raise AgentError(f"{task_dir} must be inside a git repository: {e}") from None
        self.task_rel = task_dir.relative_to(self.repo).as_posix()
        self.branch = f"autoresearch/{tag}"
        self.worktree = self.repo / ".ar" / "worktrees" / tag
        self.out = Path(out_dir).resolve() if out_dir else self.repo / ".ar" / "agent" / tag
        self.results_tsv, self.jsonl = self.out / "results.tsv", self.out / "experiments.jsonl"
        self.bench_tsv = self.out / "bench.tsv"
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        profile_name = settings.profile
        import torch
        self.profile = default_profile(self.task, torch.cuda.is_available()) if profile_name == "auto" \
            else self.task.profile(profile_name)
        mode, budget = settings.mode
        screen = tuple(range(settings.seeds))
        self.keep_rule = KeepRule(self.task.rule(self.profile, mode, budget or self.profile.budget_s,
                                                 min_effect=settings.min_improvement),
                                  screen, tuple(range(len(screen), len(screen) + settings.confirm_seeds)))
        self.proposer = self._command_proposer() if spec.kind == "command" else PROPOSERS[spec.kind](spec)

    def _command_proposer(self) -> CommandProposer:
        """The agent command's proposer, sandboxed at the candidates' level (--sandbox)."""
        try:
            plan = sandbox.plan(self.settings.sandbox, self.profile.device, memo_dir=cache_root() / "probes")
        except sandbox.SandboxError as e:
            raise AgentError(str(e)) from None
        if not plan.isolated and self.settings.sandbox != "off":
            self.log("warning: no Linux namespaces here: the agent command runs unisolated (it can read the data "
                     "cache and write the records); use --sandbox strict to refuse that")
        task_dir = self.worktree / self.task_rel
        secrets = [self.out, self.repo / ".ar"]  # not shown anyway, unless under a shown folder (the cache: wrap)
        hidden = [str(p) for p in secrets if not task_dir.is_relative_to(p)]
        return CommandProposer(self.spec, self.out / "logs", self.children, plan, self.profile.device, hidden)

    def interrupt(self) -> None:
        """Stop run() from another thread as Ctrl-C stops it in this one: the child processes are killed,
        the experiment in flight is not recorded, the branch is reset and run() raises KeyboardInterrupt."""
        self.children.stop()

    # -- git ------------------------------------------------------------------------------------------
    def _git(self, *args: str) -> str:
        try:
            return git(self.worktree, *args)
        except PatchError as e:
            raise AgentError(str(e)) from None

    def _prepare_worktree(self) -> None:
        with _WORKTREES:  # one `git worktree add` at a time: a league's loops share .git/worktrees
            if (self.worktree / ".git").exists():
                return
            has_branch = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}"],
                                        cwd=self.repo, capture_output=True).returncode == 0
            args = [str(self.worktree), self.branch] if has_branch else ["-b", self.branch, str(self.worktree), "HEAD"]
            try:
                git(self.repo, "worktree", "prune")
                git(self.repo, "worktree", "add", *args)
                dirty = git(self.repo, "status", "--porcelain", "--", self.task_rel).strip()
            except PatchError as e:
                raise AgentError(f"cannot create the worktree {self.worktree}: {e}") from None
            if dirty and not has_branch:
                self.log(f"note: uncommitted changes in {self.task_rel} are not part of this run; the worktree "
                         f"starts from the last commit (commit them and use a new tag to include them)")

    def _reset(self, commit: str) -> None:
        self._git("reset", "-q", "--hard", commit)
        self._git("clean", "-q", "-fd")  # untracked files an agent command left; ignored ones (.ar) stay

    def _commit(self, base: str, message: str) -> str:
        """One commit on top of base with everything changed since (an agent command may have committed)."""
        self._git("reset", "-q", "--soft", base)
        self._git("add", "-A", "--", self.task_rel)
        self._git(*AUTHOR, "commit", "-q", "--no-verify", "-m", message)
        return self._git("rev-parse", "--short=7", "HEAD").strip()

    # -- records --------------------------------------------------------------------------------------
    def history(self) -> list[Experiment]:
        rows = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                try:
                    rows.append(Experiment(**json.loads(line)))
                except (ValueError, TypeError):
                    self.log(f"{self.jsonl}: skipping an unreadable line (torn by a crash?)")
        return rows

    def _record(self, e: Experiment, history: list[Experiment]) -> None:
        """Append e to the records files and to history (the in-memory copy), then redraw the plot."""
        header = f"commit\t{self.task.metric}\tmemory_gb\tstatus\tdescription\n"
        storage.append_lines([(self.results_tsv, e.tsv_row(), header),
                              (self.jsonl, json.dumps(asdict(e)) + "\n", "")])
        history.append(e)
        write_progress_plot(history, self.out / "progress.png", self.task, f"{self.task.name} / {self.tag}",
                            self.log)
        report.write_agent_report(self.out, self.task, self.tag, self.spec, self.settings, self.profile, self.log)

    # -- one experiment -------------------------------------------------------------------------------
    def _evaluate(self, n: int, commit: str, description: str, stage: str, seeds: tuple[int, ...],
                  best: str | None = None) -> Measured:
        """One run of the task's suite on the worktree's file with these seeds (a screen runs the checks
        too, a confirmation the benchmark only); with the best kept commit `best` beside it, seed by seed
        interleaved, where the best's runs on these seeds are to be re-measured."""
        s, p = self.settings, self.profile
        before = len(storage.read_results(self.bench_tsv.with_suffix(".jsonl")))
        name = f"{n}" if stage == "screen" else f"{n}.{stage}"
        junit, log_path = self.out / "logs" / f"{name}.xml", self.out / "logs" / f"{name}.log"
        own = Path(self.task.editable[0]).stem
        cmd = [sys.executable, "-m", "pytest", self.task_rel, "--autoresearch",
               "-k", f"[{own}]" + (f" or [{best}]" if best else ""), "--ar-profile", p.name,
               "--ar-seed-base", str(seeds[0]), "--ar-seeds", str(len(seeds)), "--ar-results", str(self.bench_tsv),
               "--ar-baseline", "none", "--ar-sandbox", s.sandbox, "--ar-description", description,
               f"--junitxml={junit}", "-p", "no:cacheprovider", "-q", "-rN"]
        cmd += (["--ar-candidate", best] if best else []) + (["-m", "autoresearch"] if stage == "confirm" else [])
        if s.budget_s:
            cmd += ["--ar-budget", str(s.budget_s)]
        if s.max_tokens:
            cmd += ["--ar-tokens", str(s.max_tokens)]
        budget = s.budget_s or p.budget_s
        runs = len(seeds) * (2 if best else 1)
        limit = s.run_timeout_s or runs * (budget * (4 if s.max_tokens else 1) + p.startup_allowance_s
                                           + p.eval_timeout_s) + 300
        cmd += ["--ar-trusted-ref", self.start_commit or "none"]  # the loop's start: its runs alone publish kernels
        expired, wall = threading.Event(), time.perf_counter()
        with open(log_path, "w") as log_file, self.children.start(
                cmd, env={"PYTHONDONTWRITEBYTECODE": "1"}, cwd=self.worktree, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True) as proc:
            timer = threading.Timer(limit, lambda: (expired.set(), kill_group(proc, reap=False)))
            timer.start()
            try:
                for line in proc.stdout:  # the whole output to the log, progress lines to the terminal
                    log_file.write(line)
                    if "[autoresearch]" in line or " | step " in line:
                        self.log("    " + line.strip())
                code = proc.wait()
            finally:
                timer.cancel()
        wall = time.perf_counter() - wall
        records = [r for r in storage.read_results(self.bench_tsv.with_suffix(".jsonl"))[before:]
                   if r.task == self.task.name]
        memory = max((r.peak_mem_gb for r in records), default=0.0)
        seconds = math.fsum(r.seconds + r.overhead_seconds for r in records)
        split = time_split(wall, _check_seconds(junit), records)
        speed = next((r.extra["calibration"] for r in records if r.extra.get("calibration")), None)
        measured = lambda status, reason="", mine=(), theirs=(): Measured(status, seeds, reason, memory, dict(mine),
                                                                          dict(theirs), seconds, split, speed)
        if expired.is_set():
            return measured("crash", f"{stage}: the suite ran past {limit:.0f} s and was killed (log: {log_path})")
        if code not in (0, 1):
            raise AgentError(f"pytest could not run the task's suite (exit code {code}); see {log_path}")
        if bad := [r for r in records if r.status != "ok"]:
            whose = "" if bad[0].candidate == own else f"the best ({best}), re-measured: "
            return measured("discard" if bad[0].status == "violation" else "crash",
                            f"{stage}: {whose}{bad[0].status}: {bad[0].error}")
        mine = {r.seed: r.value for r in records if r.candidate == own}
        theirs = {r.seed: r.value for r in records if r.candidate == best}
        if set(mine) != set(seeds):
            return measured("discard", _first_failure(junit) or f"no benchmark ran (log: {log_path})")
        if best and set(theirs) != set(seeds):
            return measured("discard", f"{stage}: the best ({best}) could not be re-measured (log: {log_path})")
        return measured("ok", "", mine, theirs)

    def run(self) -> list[Experiment]:
        self._prepare_worktree()
        history = self.history()
        # the commit the loop started from (experiment 0's): the only file whose runs publish compile caches
        self.start_commit = history[0].commit if history else self._git("rev-parse", "--short=7", "HEAD").strip()
        kept = [e for e in history if e.status == "keep"]
        if kept:
            self._reset(kept[-1].commit)
        else:
            self._reset(self._git("rev-parse", "HEAD").strip())
        s, start = self.settings, time.monotonic()
        self.log(f"agent {self.spec.name} on {self.task.name} ({self.profile.name}), tag {self.tag}"
                 + (f", GPU {self.gpu}" if self.gpu is not None else "")
                 + f": {len(history)} experiments so far; records in {self.out}")
        try:
            while True:
                self.children.check()
                kept = [e for e in history if e.status == "keep"]
                n = len(history)
                if kept and s.max_experiments is not None and n - 1 >= s.max_experiments:
                    self.log(f"reached --max-experiments {s.max_experiments}")
                    break
                if s.max_hours is not None and time.monotonic() - start > s.max_hours * 3600:
                    self.log(f"reached --max-hours {s.max_hours}")
                    break
                used = sum(e.prompt_tokens + e.completion_tokens for e in history)
                if kept and s.max_api_tokens is not None and used >= s.max_api_tokens:
                    self.log(f"reached the API token limit ({used:,} ≥ {s.max_api_tokens:,})")
                    break
                self._record(self._experiment(n, kept[-1] if kept else None, history), history)
        except KeyboardInterrupt:
            last = [e for e in history if e.status == "keep"]
            if last:
                self._reset(last[-1].commit)
            self.log(f"interrupted; {len(history)} experiments recorded in {self.results_tsv}; "
                     f"rerun the same command to resume")
            raise
        return history

    def _experiment(self, n: int, kept: Experiment | None, history: list[Experiment]) -> Experiment:
        t0 = time.monotonic()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        head = self._git("rev-parse", "--short=7", "HEAD").strip()
        rule = self.keep_rule
        if kept is None and self.baseline and self.baseline.commit == head and not history:
            self.log(f"experiment {n}: baseline at {head}, measured once for all agents")
            return Experiment(**{**asdict(self.baseline), "description": "baseline (shared)", "started_at": started})
        if kept is None:  # experiment 0 (or a baseline that crashed before): the unchanged file
            self.log(f"experiment {n}: baseline at {head}")
            m = self._evaluate(n, head, "baseline", "screen", rule.screen_seeds)
            record = _outcome(n, head, "baseline", [m], rule.screen_seeds, started_at=started,
                              seconds=time.monotonic() - t0)
            if m.status != "ok":
                self._record(replace(record, status="crash", reason=m.reason), history)
                raise AgentError(f"the baseline {self.task_rel}/{self.task.editable[0]} at {head} does not run "
                                 f"({m.reason}); fix it before starting the agent")
            return replace(record, status="keep")
        files = {name: (self.worktree / self.task_rel / name).read_text() for name in self.task.editable}
        program = self.worktree / self.task_rel / "program.md"
        ctx = Context(self.task, self.worktree / self.task_rel, program.read_text() if program.is_file() else "",
                      files, history, kept.value, n, self.results_tsv, frozenset(self.profile.model_config()))
        self.log(f"experiment {n}: asking {self.spec.name} ({self.spec.kind})")
        proposal = self.proposer.propose(ctx)
        tokens = {"prompt_tokens": proposal.prompt_tokens, "completion_tokens": proposal.completion_tokens,
                  "cost": (proposal.prompt_tokens * self.spec.price_in
                           + proposal.completion_tokens * self.spec.price_out) / 1e6}
        stages: list[Measured] = []

        def end(status: str, reason: str, commit: str = head, p: float | None = None, note: str = "") -> Experiment:
            if status != "keep":
                self._reset(kept.commit)
            reason = f"{reason}; {note}" if note else reason
            e = _outcome(n, commit, proposal.description, stages, rule.screen_seeds, status, reason, p,
                         started_at=started, seconds=time.monotonic() - t0, **tokens)
            self.log(f"experiment {n}: {status}" + (f" ({reason})" if reason else "")
                     + (f", {self.task.metric} {e.value:.6f}" if e.value is not None else ""))
            return e

        if proposal.error:
            return end("discard", proposal.error)
        patch = self.out / "logs" / f"{n}.diff"
        if not proposal.applied and (why := apply_proposal(self.worktree, self.task_rel, proposal, patch)):
            return end("discard", why)
        try:
            paths = {p for p in changed_files(self.worktree, kept.commit) if not p.startswith(SCRATCH)}
        except PatchError as e:
            raise AgentError(str(e)) from None
        allowed = {f"{self.task_rel}/{e}" for e in self.task.editable}
        if outside := sorted(paths - allowed):
            return end("discard", f"the change touches {', '.join(outside[:5])} outside the editable surface "
                                  f"({', '.join(sorted(allowed))})")
        if not paths:
            return end("discard", "the change is empty")
        editable = self.task.editable[0]
        if dead := self.profile.dead_edits((self.worktree / self.task_rel / editable).read_text(),
                                           self._git("show", f"{kept.commit}:{self.task_rel}/{editable}")):
            note = f"profile {self.profile.name} sets {', '.join(dead)}: these edits have no effect on it"
            self.log(f"experiment {n}: {note}")
            end = functools.partial(end, note=note)
        commit = self._commit(kept.commit, f"experiment {n}: {proposal.description}")
        best, best_speeds = _best_runs(history, kept), _best_runs(history, kept, "speeds", "best_speeds")
        for stage, seeds in (("screen", rule.screen_seeds), ("confirm", rule.confirm_seeds)):
            self.log(f"experiment {n}: {proposal.description} ({commit}); {stage}, seeds {', '.join(map(str, seeds))}")
            missing = any(seed not in best for seed in seeds)  # the best is re-measured beside it
            stages.append(self._evaluate(n, commit, proposal.description, stage, seeds,
                                         kept.commit if missing else None))
            best.update(stages[-1].best_runs)
            best_speeds.update({seed: stages[-1].speed for seed in stages[-1].best_runs})
            if stages[-1].status != "ok":
                return end(stages[-1].status, stages[-1].reason, commit)
            if why := speed_departs(stages[-1].speed, seeds, best_speeds):
                return end("discard", f"{stage}: {NOT_COMPARABLE}: {why}: {SPEED_ADVICE}", commit)
            if stage == "screen" and not (screened := rule.screen(stages[0].runs, best))[0]:
                return end("discard", screened[1], commit)
        decision = rule.confirm(stages[1].runs, best)
        return end("keep" if decision.verdict == "better" else "discard", f"confirm: {decision.reason}", commit,
                   decision.p)


def _best_runs(history: list[Experiment], kept: Experiment, own: str = "runs", remeasured: str = "best_runs") -> dict:
    """The best kept commit's {seed: value}: its own runs, then its re-measures in the experiments since
    (own="speeds", remeasured="best_speeds": the machine's speed when each was measured)."""
    best = {int(seed): value for seed, value in getattr(kept, own)}
    for e in history:
        if e.n > kept.n:
            best.update({int(seed): value for seed, value in getattr(e, remeasured)})
    return best


def speed_departs(speed: dict | None, seeds: tuple[int, ...], best_speeds: dict[int, dict]) -> str:
    """Why time-mode runs measured at machine speed `speed` do not compare with the best's runs on these
    seeds (the speed when each of those was measured departs by more than calibrate.TOLERANCE), or ''.
    The session gate's rule (session.py), applied to the loop's own comparisons."""
    for seed in seeds if speed else ():
        if best_speeds.get(seed) and (why := calibrate.mismatch(speed, best_speeds[seed],
                                                                f"when the best's seed {seed} was measured")):
            return why
    return ""


def _outcome(n: int, commit: str, description: str, stages: list[Measured], screen_seeds: tuple[int, ...],
             status: str = "", reason: str = "", p: float | None = None, **extra) -> Experiment:
    """The record of an experiment from its stages: value = the mean over the screening seeds (none for
    a crash), the seeds and per-seed values of both sides, memory and device seconds over all runs."""
    runs = {seed: v for m in stages for seed, v in m.runs.items()}
    screen = [runs[seed] for seed in screen_seeds if seed in runs]
    value = math.fsum(screen) / len(screen) if screen and status != "crash" else None
    return Experiment(n, commit, value, max((m.memory_gb for m in stages), default=0.0), status, description, reason,
                      stage=("", "screen", "confirm")[len(stages)],
                      seeds=[seed for m in stages for seed in m.seeds],
                      runs=[[seed, v] for seed, v in sorted(runs.items())],
                      best_runs=[[seed, v] for m in stages for seed, v in sorted(m.best_runs.items())], p=p,
                      gpu_seconds=math.fsum(m.seconds for m in stages),
                      speeds=[[seed, m.speed] for m in stages if m.speed for seed in sorted(m.runs)],
                      best_speeds=[[seed, m.speed] for m in stages if m.speed for seed in sorted(m.best_runs)],
                      split={k: round(math.fsum(m.split.get(k, 0.0) for m in stages), 2) for k in SPLIT} if stages
                      else {}, **extra)


def _check_seconds(junit: Path) -> float:
    """The time of a JUnit report's check items (every test but the benchmarks, test_benchmark*)."""
    try:
        cases = ET.parse(junit).getroot().iter("testcase")
        return math.fsum(float(c.get("time") or 0) for c in cases if not c.get("name", "").startswith("test_benchmark"))
    except (OSError, ET.ParseError, ValueError):
        return 0.0


def _first_failure(junit: Path) -> str:
    """The first failed test of a JUnit XML report, as 'test_x[cand]: message'."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return ""
    for case in root.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            return f"{case.get('name')}: {message[0][:300] if message else 'failed'}"
    return ""


def write_progress_plot(history: list[Experiment], path: Path, task: Task, title: str,
                        log: Callable[[str], None] = print) -> bool:
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
    ax.scatter([e.n for e in scored if e.status != "keep"], [e.value for e in scored if e.status != "keep"],
               c="lightgray", s=18, label="discarded")
    ax.scatter([e.n for e in scored if e.status == "keep"], [e.value for e in scored if e.status == "keep"],
               c="tab:green", s=30, zorder=3, label="kept")
    ax.step([e.n for e in history], running, where="post", c="tab:green", lw=1.2, label="best so far")
    crashes = [e.n for e in history if e.status == "crash"]
    if crashes and scored:
        ax.scatter(crashes, [max(e.value for e in scored)] * len(crashes), marker="x", c="tab:red", label="crash")
    ax.set(xlabel="experiment", ylabel=f"{task.metric} ({task.direction} is better)", title=title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return True


def command_spec(name: str, model: str | None, agent_cmd: str | None, builtin: str | None, changes: str | None = None,
                 **extra) -> AgentSpec:
    """The AgentSpec of the `agent` command's flags: --model, --agent-cmd or --agent null|random-search|replay
    (with --changes DIR)."""
    chosen = [x for x in (model, agent_cmd, builtin) if x]
    if len(chosen) != 1:
        raise AgentError("choose exactly one of --model M, --agent-cmd CMD, --agent null|random-search|replay")
    if (builtin == "replay") != bool(changes):
        raise AgentError("--changes DIR goes with --agent replay, and --agent replay needs it")
    if model:
        return AgentSpec.from_dict(name, {"kind": "openai", "model": model, **extra})
    if agent_cmd:
        return AgentSpec.from_dict(name, {"kind": "command", "cmd": agent_cmd, **extra})
    if changes:
        return AgentSpec.from_dict(name, {"kind": "replay", "changes": str(Path(changes).resolve())})
    return AgentSpec.from_dict(name, {"kind": builtin, "seed": extra.get("seed", 0)})


