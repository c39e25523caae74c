"""Task specs: `tasks/<name>/task.toml` parsed into plain data classes.

A task folder holds `task.toml`, the editable `train.py`, `program.md`, optionally `candidates/*.py`
and tests of its own (`test_*.py`). The plugin makes the task's tests from task.toml: one per name of
its `checks` list and the benchmark. The toml file has these tables (see tasks/gpt_pretrain/task.toml):

    [task]      name, description, editable (files an agent may change), metric (val_bpb |
                val_loss | val_accuracy, see METRICS), direction (optional: the metric's own),
                checks (names from autoresearch_bench.checks that apply to this task),
                imports (modules a candidate may import; the source policy check enforces it),
                floor (the practical floor: no change smaller than this is better or worse,
                however small the noise; default 0)
    [data]      source (embedded | files | climbmix | parquet | modular), vocab_size, seq_len,
                score (tokens | answers: the scored positions), source options (see data/)
    [limits]    max_params, max_vram_gb, max_literal_bytes (literal data in a candidate's source; 16384)
    [check_options.<check>]    the parameters of that check's test (causality: examples = 10)
    [profiles.<name>]          device (cpu | cuda), budget_s, startup_allowance_s, eval_tokens,
                               eval_batch_size, eval_timeout_s; optional min_effect (the
                               smallest metric change that counts; default: from the noise);
                               optional [profiles.<name>.noise."<mode>-<budget>"] tables (e.g.
                               "time-300", "tokens-104857600") with seed_std, pair_std and
                               source: the measured noise that thresholds come from (a stored
                               baseline's own noise comes first; see stats.Noise); optional
                               [profiles.<name>.data] overrides the task's data table;
                               `extends = "other"` starts from another profile's keys
                               optional device keys (cuda profiles):
                               match (words of the device name, e.g. ["H100", "RTX 4090"], case
                               and '-' insensitive, whole words: "A10" is not an A100; [] or
                               absent: any GPU), min_memory_gb (total GPU memory the profile needs),
                               memory_per_row_gb and memory_overhead_gb (peak GB per row of the
                               device batch at this seq_len, and fixed GB, from a measured run: the
                               harness then fits the device batch to the GPU; see device.py),
                               scoring_memory_gb (peak GB of a run's scoring, which runs sharing
                               the GPU leave room for)
    [profiles.<name>.config]   free-form hyperparameters: passed to build_model(cfg) and train(ctx)

Profiles are data: a user adds one by adding a table, no code. `--ar-profile auto` (default_profile)
picks, on a GPU, the first cuda profile whose `match` names the GPU, else the first cuda profile
without `match`, in file order, skipping those whose min_memory_gb exceeds the GPU's memory; without
a GPU (or when no cuda profile suits it) the first cpu profile. To add a profile for your own GPU:
a table `[profiles.mygpu]` with `extends = "h100"`, `match = ["RTX 4090"]` and what to change
(e.g. a smaller [profiles.mygpu.config] depth, or [profiles.mygpu.data] seq_len, with a
memory_per_row_gb re-measured from the run's peak_mem_gb).
"""

from __future__ import annotations

import ast
import contextlib
import operator
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats
from .device import DeviceInfo, detect, name_matches

# Metrics the evaluator computes (autoresearch_bench.evaluate), with the direction that is better.
METRICS = {"val_bpb": "lower", "val_loss": "lower", "val_accuracy": "higher"}


class TaskError(Exception):
    """A task folder or task.toml that cannot be used; the message says what to fix."""


TOKEN_MODE_TIME_FACTOR = 10  # in fixed-token mode the clock only stops runaways: 10 × the time budget


def grace_s(budget_s: float) -> float:
    """How long after its budget a time-mode trainer may take to finish its step and save the weights."""
    return max(10.0, 0.05 * budget_s)


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    budget_s: float
    startup_allowance_s: float
    eval_tokens: int
    eval_batch_size: int
    eval_timeout_s: float
    min_effect: float | None  # None: the thresholds come from the noise
    data: dict[str, Any]
    config: dict[str, Any]
    match: tuple[str, ...] = ()
    min_memory_gb: float = 0.0
    memory_per_row_gb: float | None = None
    memory_overhead_gb: float = 0.0
    scoring_memory_gb: float = 0.0
    noise: dict[str, stats.Noise] = field(default_factory=dict)  # by noise_key(mode, budget)

    def train_limit_s(self, budget_s: float | None = None, max_tokens: int | None = None) -> float:
        """When a training run is killed, counted from its start: the startup allowance, then the budget
        and its grace (grace_s) in time mode; in fixed-token mode TOKEN_MODE_TIME_FACTOR × the budget,
        where the clock only stops runaways. The one time-limit rule: the runner's clock, the session's
        and the agent's limits are this plus evaluation."""
        budget_s = budget_s or self.budget_s
        return self.startup_allowance_s + (
            budget_s * TOKEN_MODE_TIME_FACTOR if max_tokens else budget_s + grace_s(budget_s)
        )

    def run_limit_s(self, budget_s: float | None = None, max_tokens: int | None = None) -> float:
        """The most seconds one run's training and evaluation may take by the harness's clocks."""
        return self.train_limit_s(budget_s, max_tokens) + self.eval_timeout_s

    def noise_for(self, mode: str, budget: float) -> stats.Noise:
        """The measured noise of this profile in that mode and budget (empty if not measured)."""
        return self.noise.get(noise_key(mode, budget), stats.Noise())

    def suits(self, device: DeviceInfo) -> bool:
        """Whether this cuda profile may run on device: enough memory, and its name matches (if match is set)."""
        return (
            self.device == "cuda"
            and device.total_memory_gb >= self.min_memory_gb
            and (not self.match or any(name_matches(device.name, m) for m in self.match))
        )

    @property
    def vocab_size(self) -> int:
        return int(self.data["vocab_size"])

    @property
    def seq_len(self) -> int:
        return int(self.data["seq_len"])

    def model_config(self) -> dict[str, Any]:
        """The cfg dict a candidate's build_model(cfg) receives."""
        return {**self.config, "vocab_size": self.vocab_size, "seq_len": self.seq_len}

    def dead_edits(self, source: str, reference: str) -> list[str]:
        """The config keys this profile sets whose default `source` changed from `reference`'s (the
        file it was edited from): such an edit has no effect on this profile. Defaults are the
        constant class-level fields of the files (train.py's `Hyper`)."""
        mine, theirs = source_defaults(source), source_defaults(reference)
        return [
            f"{k}={v!r} (the file says {mine[k]!r})"
            for k, v in self.config.items()
            if k in mine and k in theirs and mine[k] != theirs[k] and mine[k] != v
        ]


@dataclass(frozen=True)
class Task:
    name: str
    root: Path
    description: str
    editable: tuple[str, ...]
    metric: str
    direction: str
    checks: tuple[str, ...]
    imports: tuple[str, ...]
    max_params: int | None
    max_vram_gb: float | None
    profiles: dict[str, Profile] = field(repr=False)
    floor: float = 0.0  # the practical floor of the metric
    max_literal_bytes: int = 16384  # literal data a candidate's source may hold (checks.check_literal_data)
    check_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # [check_options.<check>]: its params

    def rule(
        self,
        profile: Profile,
        mode: str,
        budget: float,
        noise: stats.Noise = stats.Noise(),
        min_effect: float | None = None,
    ) -> stats.Rule:
        """How comparisons of this task are decided in that profile, mode and budget: `noise` (a
        stored baseline's) first, the profile's measured noise for the rest; min_effect overrides the
        profile's."""
        return stats.Rule(
            self.direction,
            noise.or_else(profile.noise_for(mode, budget)),
            self.floor,
            profile.min_effect if min_effect is None else min_effect,
        )

    @property
    def train_file(self) -> Path:
        return self.root / self.editable[0]

    def candidate_files(self) -> list[Path]:
        """The task's own editable file first, then tasks/<task>/candidates/*.py sorted by name."""
        return [self.train_file, *sorted((self.root / "candidates").glob("*.py"))]

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise TaskError(
                f"{self.name}: no profile {name!r}; choose one of {', '.join(self.profiles)} (--ar-profile)"
            ) from None


_PROFILE_KEYS = {
    "device",
    "budget_s",
    "startup_allowance_s",
    "eval_tokens",
    "eval_batch_size",
    "eval_timeout_s",
    "min_effect",
    "data",
    "config",
    "match",
    "min_memory_gb",
    "memory_per_row_gb",
    "memory_overhead_gb",
    "scoring_memory_gb",
    "noise",
}


_ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def _constant(node: ast.AST) -> Any:
    """The value of a constant or of arithmetic on numeric constants (2**19, 3e-4 * 2); else a
    ValueError. Nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_number(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _number(node.left), _number(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _ARITHMETIC[type(node.op)](left, right)
    raise ValueError("not a constant")


def _number(node: ast.AST) -> int | float:
    value = _constant(node)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    return value


# Some CPython releases (3.11.7 among them) fail ast.parse in threads that parse at once with
# "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905); the executor's slots do.
_PARSE = threading.Lock()


def source_defaults(source: str) -> dict[str, Any]:
    """name → value of every `name: type = constant` in a class body of a Python source (train.py's
    Hyper), arithmetic on numbers included; {} if it does not parse."""
    try:
        with _PARSE:
            tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for cls in ast.walk(tree):
        for node in cls.body if isinstance(cls, ast.ClassDef) else ():
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                with contextlib.suppress(ValueError, ArithmeticError):
                    found[node.target.id] = _constant(node.value)
    return found


def noise_key(mode: str, budget: float) -> str:
    """'time-300', 'tokens-104857600': how noise tables name a mode and budget."""
    return f"{mode}-{int(budget) if float(budget).is_integer() else budget}"


def _noise(p: dict, where: str, path: str) -> dict[str, stats.Noise]:
    """The [profiles.<name>.noise] tables, by noise_key."""
    found = {}
    for key, figures in p.get("noise", {}).items():
        mode, _, budget = key.partition("-")
        try:
            valid = mode in ("time", "tokens") and 0 < float(budget) < float("inf") and isinstance(figures, dict)
        except ValueError:
            valid = False
        if not valid:
            raise TaskError(
                f'{path}: [{where}.noise] key {key!r} must be "time-<seconds>" or "tokens-<count>" '
                f"naming a table of seed_std and pair_std"
            )
        try:
            found[noise_key(mode, float(budget))] = stats.Noise.from_dict(figures, f'{path}: [{where}.noise."{key}"]')
        except ValueError as e:
            raise TaskError(str(e)) from None
    return found


_MISSING = object()
# What a task.toml value must be, by the word its error message uses.
_KINDS = {
    "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a table": lambda v: isinstance(v, dict),
}


def _get(table: dict, key: str, kind: str, where: str, path: str, default: Any = _MISSING) -> Any:
    """table[key], which must be of `kind` (a key of _KINDS); default when absent (else an error).
    where names the table in messages ("" for the top level)."""
    place = f"[{where}] " if where else ""
    if key not in table:
        if default is _MISSING:
            raise TaskError(f"{path}: {place}lacks '{key}'; add it (see tasks/gpt_pretrain/task.toml)")
        return default
    if not _KINDS[kind](table[key]):
        raise TaskError(f"{path}: {place}{key} must be {kind}, got {table[key]!r}")
    return table[key]


def _shown(path: Path) -> str:
    """path as messages show it: relative to the working directory when it lies below it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _resolve_extends(profiles: dict, name: str, toml_path: str, seen: tuple[str, ...] = ()) -> dict:
    """A profile's table with the keys of the profiles it extends filled in (data and config merged)."""
    p = _get(profiles, name, "a table", "profiles", toml_path)
    if "extends" not in p:
        return p
    base_name = p["extends"]
    if base_name not in profiles or base_name in seen:
        raise TaskError(
            f"{toml_path}: [profiles.{name}] extends {base_name!r}, which is "
            f"{'part of a cycle' if base_name in seen else 'not a profile'}"
        )
    base = _resolve_extends(profiles, base_name, toml_path, (*seen, name))
    tables = {
        k: {
            **_get(base, k, "a table", f"profiles.{base_name}", toml_path, {}),
            **_get(p, k, "a table", f"profiles.{name}", toml_path, {}),
        }
        for k in ("data", "config")
    }
    merged = {**base, **p, **tables}
    del merged["extends"]
    return merged


def _match(p: dict, where: str, path: str) -> tuple[str, ...]:
    match = p.get("match", [])
    if isinstance(match, str) or not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise TaskError(
            f'{path}: [{where}] match must be a list of words of device names, e.g. match = ["H100", "H200"]'
        )
    return tuple(match)


def load_task(path: str | Path) -> Task:
    """Parse a task folder (or its task.toml) into a Task; raise TaskError with a one-line fix that
    names the file, the table and the key."""
    path = Path(path)
    toml_path = path if path.name == "task.toml" else path / "task.toml"
    shown = _shown(toml_path)
    if not toml_path.is_file():
        raise TaskError(f"{shown}: not found; a task folder needs a task.toml")
    try:
        raw = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{shown}: malformed TOML ({e}); fix the syntax") from None
    root = toml_path.parent
    meta, data, limits, raw_profiles = (
        _get(raw, key, "a table", "", shown, {}) for key in ("task", "data", "limits", "profiles")
    )
    name = _get(meta, "name", "a string", "task", shown, root.name)
    editable = tuple(_get(meta, "editable", "a list of strings", "task", shown, ["train.py"]))
    for rel in editable:
        if not (root / rel).is_file():
            raise TaskError(f"{shown}: editable file {rel!r} does not exist in {root}")
    metric = _get(meta, "metric", "a string", "task", shown, "val_bpb")
    if metric not in METRICS:
        raise TaskError(f"{shown}: unknown metric {metric!r}; set [task] metric to one of {', '.join(METRICS)}")
    direction = meta.get("direction", METRICS[metric])
    if direction not in ("lower", "higher"):
        raise TaskError(f"{shown}: direction must be 'lower' or 'higher', not {direction!r}")
    if direction != METRICS[metric]:
        raise TaskError(
            f'{shown}: {metric} is better when {METRICS[metric]}; set direction = "{METRICS[metric]}" (or leave it out)'
        )
    profiles = {}
    for pname in raw_profiles:
        where = f"profiles.{pname}"
        p = _resolve_extends(raw_profiles, pname, shown)
        unknown = set(p) - _PROFILE_KEYS
        if unknown:
            raise TaskError(f"{shown}: [{where}] has unknown keys {sorted(unknown)}; allowed: {sorted(_PROFILE_KEYS)}")
        device = _get(p, "device", "a string", where, shown)
        if device not in ("cpu", "cuda"):
            raise TaskError(f"{shown}: [{where}] device must be 'cpu' or 'cuda', not {device!r}")
        pdata = {**data, **_get(p, "data", "a table", where, shown, {})}
        data_where = f"data] or [{where}.data"
        source = _get(pdata, "source", "a string", data_where, shown)
        for key in ("vocab_size", "seq_len"):
            _get(pdata, key, "an integer", data_where, shown)
        if metric == "val_bpb" and source == "modular":
            raise TaskError(
                f'{shown}: [{where}] source "modular" has no bytes to score val_bpb on; '
                f"set [task] metric to val_accuracy or val_loss"
            )

        def number(key: str, default: Any = _MISSING, kind: str = "a number") -> Any:
            return _get(p, key, kind, where, shown, default)

        per_row = number("memory_per_row_gb", None)
        profiles[pname] = Profile(
            name=pname,
            device=device,
            budget_s=float(number("budget_s")),
            startup_allowance_s=float(number("startup_allowance_s", 30)),
            eval_tokens=number("eval_tokens", kind="an integer"),
            eval_batch_size=number("eval_batch_size", 8, "an integer"),
            eval_timeout_s=float(number("eval_timeout_s", 300)),
            min_effect=None if (effect := number("min_effect", None)) is None else float(effect),
            noise=_noise(p, where, shown),
            data=pdata,
            config=dict(_get(p, "config", "a table", where, shown, {})),
            match=_match(p, where, shown),
            min_memory_gb=float(number("min_memory_gb", 0)),
            memory_overhead_gb=float(number("memory_overhead_gb", 0)),
            scoring_memory_gb=float(number("scoring_memory_gb", 0)),
            memory_per_row_gb=None if per_row is None else float(per_row),
        )
    if not profiles:
        raise TaskError(f"{shown}: no [profiles.<name>] table; add at least a cpu profile")
    return Task(
        name=name,
        root=root,
        description=_get(meta, "description", "a string", "task", shown, ""),
        editable=editable,
        metric=metric,
        direction=direction,
        checks=tuple(_get(meta, "checks", "a list of strings", "task", shown, [])),
        imports=tuple(_get(meta, "imports", "a list of strings", "task", shown, [])),
        max_params=_get(limits, "max_params", "an integer", "limits", shown, None),
        max_vram_gb=_get(limits, "max_vram_gb", "a number", "limits", shown, None),
        max_literal_bytes=_get(limits, "max_literal_bytes", "an integer", "limits", shown, Task.max_literal_bytes),
        profiles=profiles,
        floor=_floor(meta, shown),
        check_options=_check_options(raw, meta, shown),
    )


def _check_options(raw: dict, meta: dict, path: str) -> dict[str, dict[str, Any]]:
    """The [check_options.<check>] tables: the parameters its generated test passes to ar_check."""
    options = _get(raw, "check_options", "a table", "", path, {})
    checks = _get(meta, "checks", "a list of strings", "task", path, [])
    for name, params in options.items():
        if name not in checks:
            raise TaskError(
                f"{path}: [check_options.{name}] names no check of [task] checks; "
                f"add {name!r} to checks or remove the table"
            )
        if not isinstance(params, dict) or not all(isinstance(v, (int, float)) for v in params.values()):
            raise TaskError(f"{path}: [check_options.{name}] must be a table of numbers, e.g. examples = 10")
    return {name: dict(params) for name, params in options.items()}


def _floor(meta: dict, path: str) -> float:
    floor = meta.get("floor", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < float("inf"):
        raise TaskError(f"{path}: [task] floor must be a number >= 0 (the smallest change that matters), not {floor!r}")
    return float(floor)


def find_tasks(root: str | Path) -> list[Task]:
    """Every task under root (a tasks/ folder, or one task folder), sorted by name."""
    root = Path(root)
    if (root / "task.toml").is_file():
        return [load_task(root)]
    return sorted((load_task(p.parent) for p in root.glob("*/task.toml")), key=lambda t: t.name)


def default_profile(task: Task, cuda_available: bool, device: DeviceInfo | None = None) -> Profile:
    """The profile `--ar-profile auto` runs: on a GPU (device, detected when not given) the first
    cuda profile whose `match` names it, else the first generic one (no `match`), each only if
    the GPU has its min_memory_gb; else the first cpu profile. A GPU whose properties cannot be
    read counts as an unknown device: only generic profiles, memory not checked."""
    profiles = list(task.profiles.values())
    device = (device or detect(read_free=False)) if cuda_available else None
    if cuda_available:
        suited = [p for p in profiles if p.device == "cuda" and (p.suits(device) if device else not p.match)]
        if suited:  # profiles that name the GPU first, file order kept (sorted is stable)
            return sorted(suited, key=lambda p: not p.match)[0]
    for p in profiles:
        if p.device == "cpu":
            return p
    where = f"the GPU {device.name}" if device else ("this GPU" if cuda_available else "a machine without a GPU")
    raise TaskError(
        f"{task.name}: no profile suits {where} and there is no cpu profile; add one to task.toml "
        f"(README: 'A profile for your GPU') or pass --ar-profile NAME"
    )
