"""What the agent loop's parts exchange: the agent's spec (from agents.toml or the command's flags), a
proposal and the context it was asked with, an experiment's record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..storage.schema import tsv_line
from ..task import Task

KINDS = ("openai", "command", "null", "random-search", "replay")  # the proposers (proposers.PROPOSERS)
RECENT_ROWS = 20  # results rows shown to the model
# Time mode: a comparison across a change of the machine's speed says so instead of keeping or discarding on it.
SPEED_ADVICE = "use fixed-token mode (--tokens N), or rerun on an idle machine"
AGENT_NPROC_FACTOR = 4  # the unprivileged uid's processes, all runs together, stay below this × MAX_PROCESSES


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
        if spec.kind not in KINDS:
            raise AgentError(f"agent {name!r}: kind must be one of {', '.join(KINDS)}, not {spec.kind!r}")
        if spec.kind == "openai" and not spec.model:
            raise AgentError(f'agent {name!r}: kind openai needs a model (--model or model = "...")')
        if spec.kind == "command" and not spec.cmd:
            raise AgentError(f'agent {name!r}: kind command needs cmd (--agent-cmd or cmd = "...")')
        if unset := [n for n in spec.env if n not in os.environ]:
            raise AgentError(
                f"agent {name!r}: {', '.join(unset)} (--agent-env or env = [...]) not set in this "
                f"environment; export it first or leave it out"
            )
        if missing := [p for p in spec.ro if not Path(p).exists()]:
            raise AgentError(f"agent {name!r}: {', '.join(missing)} (--agent-ro or ro = [...]) does not exist")
        if spec.kind == "replay" and not Path(spec.changes).is_dir():
            raise AgentError(
                f"agent {name!r}: kind replay needs changes, a folder of *.diff / *.patch / *.py files "
                f'(--changes DIR or changes = "..."), not {spec.changes!r}'
            )
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
        cells = (
            self.commit,
            f"{self.value if self.value is not None else 0.0:.6f}",
            f"{self.memory_gb:.1f}",
            self.status,
            self.description,
        )
        return tsv_line(cells)


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


def command_spec(
    name: str, model: str | None, agent_cmd: str | None, builtin: str | None, changes: str | None = None, **extra
) -> AgentSpec:
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
