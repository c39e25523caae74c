"""pytest plugin: correctness checks on every run; timed benchmarks with `--autoresearch`.

A task folder's tests are made from its task.toml (TaskSuite): `test_<check>` for each name of its
`checks` list (ar_check with the options of its [check_options.<check>] table) and `test_benchmark`;
a task may add tests of its own in test_*.py files. Tests that take the `candidate` fixture are
parametrized over the task's candidates (train.py, candidates/*.py, --ar-candidate), so test ids name
the candidate (`tasks/char_lm/task.toml::test_causality[wider_mlp]`) and `-k wider_mlp` selects one.
Fixtures:

    ar_check(name, **params)  run a named check from autoresearch_bench.checks on the candidate, in
                              an isolated child process; fails the test with the check's message
    ar_benchmark()            the candidate's timed runs (all seeds); fails on crash, timeout or
                              violation; skipped without --autoresearch
    ar_task, ar_profile       the task spec and the profile chosen for this session

Benchmarks run after every check of the session; a candidate whose check failed is not benchmarked
and its benchmark item fails with the reason, as does one whose runs did not all finish (a schedule
that failed or was interrupted): a benchmark item passes only with all its runs. The terminal
summary ranks the candidates per task.

Inputs are checked before anything runs, each problem one line (pytest.UsageError): the options in
pytest_configure (seeds, tokens, budget, --ar-baseline file, --ar-candidate files and refs,
--ar-base-ref, the results files writable with room on their disk), the tasks at the end of
collection (task.toml errors, --ar-tasks names, --ar-profile names, a GPU for a cuda profile); under
`--ar-executor xdist` the tasks on the controller, before any worker starts (pytest_sessionstart).
Benchmark items are bounded by the harness's own limits (BenchmarkSession.time_limit, as their
pytest-timeout), not by the ini `timeout`, which is for checks.

`--ar-executor` picks where runs happen (autoresearch_bench.executor). With `xdist`
(`pytest -n N --ar-executor xdist`) each worker pins one GPU and runs its items' seeds only; the
controller merges their results for the table (xdist_support.py). Workers write the results files
(under a lock) and save baselines.

Reports, written where the table is shown (the xdist controller): --ar-markdown, the GitHub step
summary ($GITHUB_STEP_SUMMARY), --ar-json (report.py), --ar-html (htmlreport.py), --ar-tensorboard
(track.py); each benchmark item's JUnit XML properties (ar.metric, ar.delta, ar.verdict, ...). Every
--ar- option is also an ini option of the same name (the command line wins); extensions implement
hookspec.py's hooks. torch is imported only where a task needs a GPU's answer (_cuda), so
that installing the plugin costs unrelated pytest sessions nothing much.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tabulate import tabulate

from . import files, git, stats, table, xdist_support
from .candidate import BASE, Candidate, resolve_candidates
from .check_server import CheckServer
from .executor import NAMES as EXECUTORS
from .executor import ExecutorError, LocalExecutor, make_executor
from .options import RUN_OPTIONS, add_run_options
from .patch import surface_violations
from .session import AUTO, SEQUENTIAL, BenchmarkSession, CandidateResult, Options
from .storage import baselines, fingerprints
from .task import Profile, Task, TaskError, default_profile, load_task

SESSION = pytest.StashKey[BenchmarkSession]()
STATE = pytest.StashKey["PluginState"]()
BENCHMARK_CALLED = pytest.StashKey[bool]()  # on an item whose test called ar_benchmark()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autoresearch", "autoresearch-bench: timed benchmarks of candidate training code")

    def option(flag: str, **kwargs) -> None:
        """A command-line option that is also an ini option of the same name (ar_seeds = 3 in
        [tool.pytest.ini_options]); the command line wins (resolved in pytest_configure)."""
        dest = flag.lstrip("-").replace("-", "_")
        default, action = kwargs.pop("default", None), kwargs.get("action")
        parser.addini(
            dest,
            f"{kwargs['help']} (ini value of {flag}; the command line wins)",
            type="bool" if action == "store_true" else "linelist" if action == "append" else None,
            default=None,
        )
        INI_OPTIONS[dest] = IniOption(flag, default, kwargs.get("type"), kwargs.get("choices"))
        group.addoption(flag, default=None, **kwargs)

    option(
        "--autoresearch",
        action="store_true",
        help="run the timed benchmarks; without it only the correctness checks run",
    )
    add_run_options(option, "ar-")  # --ar-profile, --ar-budget, --ar-tokens, --ar-sandbox, --ar-min-effect
    option(
        "--ar-seeds",
        type=_seeds,
        default=1,
        metavar="N|auto",
        help="seeds per candidate (default 1); auto: 3, then one more at a time while the verdict is open, up to 8",
    )
    option("--ar-seed-base", type=int, default=0, metavar="S", help="first seed (default 0)")
    option(
        "--ar-results",
        default="results.tsv",
        metavar="PATH",
        help="results table to append to (a .jsonl file of full records goes beside it)",
    )
    option(
        "--ar-candidate",
        action="append",
        default=[],
        metavar="PATH|REF",
        help="another candidate: a file with the task contract, or a git ref (repeatable)",
    )
    option("--ar-tasks", default=None, metavar="NAMES", help="comma-separated task names to run")
    option("--ar-description", default="", metavar="TEXT", help="description column of the records")
    option(
        "--ar-base-ref",
        default=None,
        metavar="REF",
        help="base of the change under test: a change outside the tasks' editable files fails "
        "the session; with no stored baseline, REF's train.py is measured side by side",
    )
    option(
        "--ar-trusted-ref",
        default=None,
        metavar="REF",
        help="whose compile cache later runs start from: the runs of REF's train.py publish theirs "
        "(default: --ar-base-ref, else HEAD; none: no file's); see autoresearch_bench/compile_cache.py",
    )
    option(
        "--ar-baseline",
        default="auto",
        metavar="auto|none|PATH",
        help="baseline to compare with: auto = baselines/<task>/<machine fingerprint>.json",
    )
    option(
        "--ar-save-baseline",
        action="store_true",
        help="store the results of each task's train.py as the baseline for this machine",
    )
    option(
        "--ar-fail-on-regression",
        action="store_true",
        help="fail a candidate's benchmark only when it is decided worse than the baseline (or not "
        "comparable with it); no difference and undecided pass",
    )
    option(
        "--ar-markdown",
        default=None,
        metavar="PATH",
        help="also write the summary table as Markdown (for a PR comment); under GitHub Actions the "
        "table is appended to $GITHUB_STEP_SUMMARY in any case",
    )
    option(
        "--ar-json",
        default=None,
        metavar="PATH",
        help="write the session as one versioned JSON document: runs, decisions, machine, settings "
        "(see autoresearch_bench/report.py; `autoresearch-bench compare` reads it)",
    )
    option(
        "--ar-html",
        default=None,
        metavar="PATH",
        help="write a self-contained HTML report: results table, per-seed plots, loss curves",
    )
    option(
        "--ar-tensorboard",
        default=None,
        metavar="DIR",
        help="write each run's loss curve, metric, settings and verdict as TensorBoard event files "
        "(pip install 'autoresearch-bench[track]')",
    )
    option(
        "--ar-executor",
        default="local",
        choices=EXECUTORS,
        help="where runs happen: local (default), xdist (with -n N: one worker per GPU) or ray "
        "(one Ray task per run); see autoresearch_bench/executor.py",
    )
    option(
        "--ar-slots",
        type=int,
        default=None,
        metavar="N",
        help="runs at once: local, N child processes (default 1), each on a free GPU of its own where "
        "there are several, else sharing the device (then compare in fixed-token mode); "
        "ray, the most in flight",
    )


@dataclass(frozen=True)
class IniOption:
    """What an --ar- option takes when the command line leaves it out: its ini value, read with the
    option's own type and choices, else its default."""

    flag: str
    default: object
    parse: Callable[[str], object] | None = None
    choices: tuple[str, ...] | None = None

    def value(self, raw: object) -> object:
        """The option's value from its ini value raw (None, "" or [] when the ini file does not set it)."""
        if raw in (None, "", []):
            return list(self.default) if isinstance(self.default, list) else self.default
        dest = self.flag.lstrip("-").replace("-", "_")
        try:
            value = self.parse(raw) if self.parse and isinstance(raw, str) else raw
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise pytest.UsageError(f"ini option {dest} = {raw!r}: {e} (as {self.flag} takes it)") from None
        if self.choices and value not in self.choices:
            raise pytest.UsageError(f"ini option {dest} = {raw!r}: choose one of {', '.join(self.choices)}")
        return value


INI_OPTIONS: dict[str, IniOption] = {}  # option dest → how its ini value is read (filled by pytest_addoption)


def _resolve_ini_options(config: pytest.Config) -> None:
    """Each --ar- option that the command line leaves out takes its ini value, else its default."""
    for dest, option in INI_OPTIONS.items():
        if getattr(config.option, dest, None) is None:
            setattr(config.option, dest, option.value(config.getini(dest)))


def _trusted_ref(config: pytest.Config) -> str | None:
    """--ar-trusted-ref, else --ar-base-ref, else HEAD; "none" trusts no file."""
    ref = config.getoption("ar_trusted_ref") or config.getoption("ar_base_ref") or "HEAD"
    return None if ref == "none" else ref


def _seeds(value: str) -> int | str:
    """--ar-seeds: a count or auto (a count below 1 is reported with the other bad options)."""
    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of seeds (1 or more) or auto") from None


class PluginState:
    """Per-session caches: tasks by folder, candidates by task, check processes by candidate; the
    problems met while collecting (a broken task.toml, a ref without the task's file), reported
    together at the end of collection."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.tasks: dict[Path, Task | None] = {}
        self.candidates: dict[str, list[Candidate]] = {}
        self.check_servers: dict[tuple[str, str], CheckServer] = {}
        self.last_progress: dict[tuple[str, str], float] = {}
        self.sent: set[tuple[str, str]] = set()  # xdist worker: results already sent to the controller
        self.errors: list[str] = []
        self.seen: set[str] = set()  # names (folder and task) of every task folder met, selected or not

    def task_at(self, folder: Path) -> Task | None:
        """The task of this folder (None outside task folders, or when its task.toml is broken). Tasks
        do not nest: a task.toml inside another task's folder (its drafts, its fixtures) is no task."""
        if folder not in self.tasks:
            self.tasks[folder] = None
            if (folder / "task.toml").is_file() and not self._inside_a_task(folder):
                self.seen.add(folder.name)
                try:
                    self.tasks[folder] = load_task(folder)
                    self.seen.add(self.tasks[folder].name)
                except TaskError as e:
                    self.errors.append(str(e))
        return self.tasks[folder]

    def _inside_a_task(self, folder: Path) -> bool:
        root = Path(self.config.rootpath).resolve()
        above = [p for p in folder.resolve().parents if root in p.parents]  # below the rootdir only
        return any((p / "task.toml").is_file() for p in above)

    def task_for(self, path: Path) -> Task | None:
        """The task whose folder holds this test file."""
        return self.task_at(path.parent)

    def candidates_for(self, task: Task) -> list[Candidate]:
        if task.name not in self.candidates:
            scratch = Path(self.config.rootpath) / ".ar"
            try:
                found = resolve_candidates(task, tuple(self.config.getoption("ar_candidate")), scratch)
            except TaskError as e:
                self.errors.append(f"{task.name}: --ar-candidate {e}")
                found = []
            self.candidates[task.name] = found
        return self.candidates[task.name]

    def profile_for(self, task: Task) -> Profile:
        name = self.config.getoption("ar_profile")
        if name == "auto":
            return default_profile(task, _cuda())
        return task.profile(name)

    def write(self, text: str) -> None:
        """A line on the terminal, also while pytest captures the test's output."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            print(text, flush=True)
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(text)

    def progress(self, entry: CandidateResult, seed: int, record: dict) -> None:
        """Throttled progress line: step, loss, tokens/s, time left."""
        key = (entry.task.name, entry.label)
        budget = self.config.getoption("ar_budget") or entry.profile.budget_s
        now = time.monotonic()
        if now - self.last_progress.get(key, 0.0) < max(2.0, budget / 20):
            return
        self.last_progress[key] = now
        elapsed = max(record.get("elapsed", 0.0), 1e-9)
        loss = record.get("loss")
        left = (1 - record.get("progress", 0.0)) * (elapsed / max(record.get("progress", 0.0), 1e-9))
        self.write(
            f"  {entry.task.name}/{entry.label} seed {seed} | step {record.get('step', 0)} | "
            f"loss {loss if loss is None else f'{loss:.4f}'} | "
            f"{record.get('tokens', 0) / elapsed / 1e3:,.1f}k tok/s | {left:.0f} s left"
        )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The hooks that extensions implement (autoresearch_bench.hookspec)."""
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """What this session will run with, said before anything runs: profile, machine fingerprint,
    seeds and training mode; then the sandbox candidate code will run in (a fallback to `off` loudly)."""
    if not config.getoption("autoresearch"):
        return None
    from . import sandbox

    profile, seeds, first = (
        config.getoption("ar_profile"),
        config.getoption("ar_seeds"),
        config.getoption("ar_seed_base"),
    )
    tokens, budget, level = config.getoption("ar_tokens"), config.getoption("ar_budget"), config.getoption("ar_sandbox")
    machine = fingerprints.machine_fingerprint(profile, "cuda" if _cuda() else "cpu")
    found = sandbox.namespaces_available() if level != "off" else None
    seed_list = (
        f"auto from {first} ({SEQUENTIAL.start} to {SEQUENTIAL.stop})"
        if seeds == AUTO
        else ", ".join(map(str, range(first, first + seeds)))
    )
    mode = f"{tokens:,} tokens" if tokens else f"{budget:g} s" if budget else "the profile's time budget"
    summary = (
        f"autoresearch: profile {profile} | machine {machine['device']} {machine['model']}, torch "
        f"{machine['torch']}, cuda {machine['cuda']} | seeds {seed_list} | {mode} | "
        f"sandbox {found.level if found else 'off'}"
    )
    if found is not None:
        uid = "as a uid of its own per run, " if found.uid else ""
        return [
            summary,
            f"autoresearch: sandbox {found.level} (candidate code {uid}without capabilities, network or the "
            "data cache; on CUDA checked per run)",
        ]
    return [
        summary,
        "autoresearch: sandbox off: candidate code runs unisolated, as this user"
        + ("" if level == "off" else " (no Linux namespaces here; --ar-sandbox strict refuses to run)"),
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _resolve_ini_options(config)
    config.addinivalue_line("markers", "autoresearch: a timed benchmark; runs only with --autoresearch")
    state = PluginState(config)
    config.stash[STATE] = state
    if errors := _option_errors(config):
        raise pytest.UsageError(*errors)
    results = Path(config.getoption("ar_results"))
    options = Options(
        enabled=config.getoption("autoresearch"),
        **{o.key: config.getoption(f"ar_{o.dest}") for o in RUN_OPTIONS},
        seeds=config.getoption("ar_seeds"),
        seed_base=config.getoption("ar_seed_base"),
        results_tsv=results if results.is_absolute() else Path(config.rootpath) / results,
        candidates=tuple(config.getoption("ar_candidate")),
        description=config.getoption("ar_description"),
        baseline=config.getoption("ar_baseline"),
        baselines_dir=Path(config.rootpath) / "baselines",
        save_baseline=config.getoption("ar_save_baseline"),
        base_ref=config.getoption("ar_base_ref"),
        fail_on_regression=config.getoption("ar_fail_on_regression"),
        scratch=Path(config.rootpath) / ".ar",
        trusted_ref=_trusted_ref(config),
    )
    config.stash[SESSION] = BenchmarkSession(
        options,
        log=lambda m: state.write(f"[autoresearch] {m}"),
        on_progress=state.progress,
        executor=_executor(config),
        on_record=lambda record: config.hook.pytest_autoresearch_update_record(config=config, record=record),
    )
    if xdist_support.role(config) == "controller":
        bench = config.stash[SESSION]
        config.pluginmanager.register(
            xdist_support.Controller(config, lambda path, result: bench.merge_report(state.task_for(path), result)),
            "autoresearch-xdist",
        )


def _option_errors(config: pytest.Config) -> list[str]:
    """What is wrong with the --ar- options, one line each with what to do."""
    get, root = config.getoption, Path(config.rootpath)
    errors = [
        f"{flag} {value}: {rule}"
        for flag, value, bad, rule in [
            ("--ar-seeds", get("ar_seeds"), get("ar_seeds") != AUTO and get("ar_seeds") < 1, "run at least 1 seed"),
            (
                "--ar-tokens",
                get("ar_tokens"),
                get("ar_tokens") is not None and get("ar_tokens") <= 0,
                "fixed-token mode needs a positive number of tokens; leave the option out for a time budget",
            ),
            (
                "--ar-budget",
                get("ar_budget"),
                get("ar_budget") is not None and not get("ar_budget") > 0,
                "the time budget must be a positive number of seconds",
            ),
        ]
        if bad
    ]
    if get("ar_baseline") not in ("auto", "none"):
        try:
            baselines.Baseline.from_file(get("ar_baseline"))
        except ValueError as e:
            errors.append(f"--ar-baseline {e}")
    for value in get("ar_candidate"):
        if not Path(value).is_file() and not git.is_commit(root, value):
            errors.append(
                f"--ar-candidate {value}: no such file, and no commit of that name in the git repository "
                f"at {root}; give a file with the task contract, or a branch, tag or commit"
            )
    if (trusted := get("ar_trusted_ref")) not in (None, "none") and not git.is_commit(root, trusted):
        errors.append(
            f"--ar-trusted-ref {trusted}: no commit of that name in the git repository at {root}; "
            f"name a branch, tag or commit"
        )
    if (base := get("ar_base_ref")) and not git.is_commit(root, base):
        errors.append(
            f"--ar-base-ref {base}: no commit of that name in the git repository at {root}; "
            f"give a branch, tag or commit (e.g. origin/main)"
        )
    if get("autoresearch"):
        results = Path(get("ar_results"))
        results = results if results.is_absolute() else root / results
        if why := files.check_writable(results) or files.check_writable(results.with_suffix(".jsonl")):
            errors.append(f"{why}: give --ar-results a writable path on a disk with room")
        for flag, value in (
            ("--ar-json", get("ar_json")),
            ("--ar-html", get("ar_html")),
            ("--ar-markdown", get("ar_markdown")),
        ):
            if value and (why := files.check_writable(Path(value))):
                errors.append(f"{why}: give {flag} a writable path on a disk with room")
        if get("ar_tensorboard") and importlib.util.find_spec("tensorboard") is None:
            errors.append("--ar-tensorboard needs the tensorboard package: pip install 'autoresearch-bench[track]'")
        if get("ar_save_baseline") and (why := files.check_writable(root / "baselines")):
            errors.append(f"{why}: make baselines/ writable, on a disk with room, or leave out --ar-save-baseline")
    return errors


def _executor(config: pytest.Config) -> LocalExecutor:
    """The --ar-executor, checked against how pytest runs (with or without -n)."""
    name, role = config.getoption("ar_executor"), xdist_support.role(config)
    if role and name != "xdist" and config.getoption("autoresearch"):
        raise pytest.UsageError("pytest -n N runs the benchmarks in pytest-xdist workers: add --ar-executor xdist")
    kwargs = xdist_support.executor_options(config) if name == "xdist" else {}
    try:
        return make_executor(name, config.getoption("ar_slots"), **kwargs)
    except ExecutorError as e:
        raise pytest.UsageError(str(e)) from None


def _wanted_tasks(config: pytest.Config) -> set[str]:
    return {n.strip() for n in (config.getoption("ar_tasks") or "").split(",") if n.strip()}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With --ar-tasks, task folders of other tasks (by folder or task name) are not collected."""
    if (wanted := _wanted_tasks(config)) and (collection_path / "task.toml").is_file():
        if collection_path.name in wanted:
            return False
        task = config.stash[STATE].task_at(collection_path)
        return task is None or task.name not in wanted
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A task folder's task.toml: its generated tests (a broken one is reported at the end of collection)."""
    if file_path.name == "task.toml" and parent.config.stash[STATE].task_at(file_path.parent) is not None:
        return TaskSuite.from_parent(parent, path=file_path)
    return None


class TaskSuite(pytest.Module):
    """The tests that a task's task.toml declares, collected as a module of them: one per name of its
    `checks` list, which runs that check with the options of its [check_options.<name>] table, and
    the benchmark. Written by no one, so the list of checks is kept in one place."""

    def _getobj(self):
        task = self.config.stash[STATE].task_at(self.path.parent)
        module = types.ModuleType(f"{task.name}.task_toml", f"The tests of {self.path}.")
        module.__file__ = str(self.path)
        for name in task.checks:
            setattr(module, f"test_{name}", _check_test(name, task.check_options.get(name, {})))
        module.test_benchmark = _test_benchmark
        return module


def _check_test(name: str, options: dict) -> Callable:
    def test(ar_check) -> None:
        ar_check(name, **options)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = f"The candidate passes the {name} check."
    return test


@pytest.mark.autoresearch
def _test_benchmark(ar_benchmark) -> None:
    """The candidate's timed runs."""
    ar_benchmark()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "candidate" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    task = state.task_for(metafunc.definition.path)
    if task is None and (metafunc.definition.path.parent / "task.toml").is_file():
        return  # its task.toml is broken: reported at the end of collection
    if task is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: the candidate fixture works only in a task folder (one with a task.toml)"
        )
    candidates = state.candidates_for(task)
    group = metafunc.config.getoption("ar_executor") == "xdist"  # one worker per candidate: checks, then benchmark
    metafunc.parametrize(
        "candidate",
        [
            pytest.param(c, id=c.name, marks=[pytest.mark.xdist_group(f"{task.name}.{c.name}")] if group else [])
            for c in candidates
        ],
    )


def _item_candidate(item: pytest.Item) -> Candidate | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("candidate") if callspec else None


class SessionGate(pytest.Item):
    """An item about the session as a whole, run first: it fails with error(), if that is not ""."""

    def error(self) -> str:
        raise NotImplementedError

    def runtest(self) -> None:
        if error := self.error():
            raise AssertionError(error)

    def repr_failure(self, excinfo, style=None) -> str:
        return str(excinfo.value)

    def reportinfo(self):
        return self.path, None, self.name


class EditableSurface(SessionGate):
    """Fails when the change since --ar-base-ref touches files outside the tasks' editable surface."""

    def __init__(self, *, tasks: list[Task], base: str, **kwargs):
        super().__init__(**kwargs)
        self.tasks, self.base = tasks, base

    def error(self) -> str:
        return _surface_error(self.config, self.tasks, self.base)

    def reportinfo(self):
        return self.path, None, f"editable surface since {self.base}"


class InputErrors(SessionGate):
    """In a pytest-xdist worker, whose usage errors the controller never shows: the session's only
    item, failing with them."""

    def __init__(self, *, errors: list[str], **kwargs):
        super().__init__(**kwargs)
        self.errors = errors

    def error(self) -> str:
        return "\n".join(self.errors)


def _surface_error(config: pytest.Config, tasks: list[Task], base: str) -> str:
    """Why the change since base breaks the editable surface, or ""."""
    outside = surface_violations(git.toplevel(config.rootpath), base, tasks)
    return (
        (
            f"editable surface: the change since {base} touches {', '.join(outside)}; "
            f"only the tasks' editable files and candidates/*.py may change"
        )
        if outside
        else ""
    )


def _cuda() -> bool:
    """Whether a CUDA GPU is visible. Imports torch: asked only where a task needs the
    answer, so that a session without them starts without torch."""
    import torch

    return torch.cuda.is_available()


def _task_errors(config: pytest.Config, state: PluginState, tasks: list[Task]) -> list[str]:
    """What keeps the collected tasks from running as asked: the problems met while collecting,
    --ar-tasks names that match no task folder, profiles the tasks lack, a cuda profile without a GPU."""
    errors = list(state.errors)
    if unknown := sorted(_wanted_tasks(config) - state.seen):
        errors.append(
            f"--ar-tasks: no task named {', '.join(unknown)} among the collected folders (known: "
            f"{', '.join(sorted(state.seen)) or 'none'}); give task names, or the task folders' paths"
        )
    name, lacking, need_gpu = config.getoption("ar_profile"), [], []
    for task in tasks:
        if name != "auto" and name not in task.profiles:
            lacking.append(f"{task.name} (profiles: {', '.join(task.profiles)})")
            continue
        try:
            profile = state.profile_for(task)
        except TaskError as e:  # auto: no profile suits this machine
            errors.append(str(e))
            continue
        if (
            config.getoption("autoresearch")
            and profile.device == "cuda"
            and not _cuda()
            and config.getoption("ar_executor") != "ray"
        ):  # Ray may run it on another node
            need_gpu.append(task.name)
    if lacking:
        errors.append(
            f"--ar-profile {name}: no such profile in {', '.join(lacking)}; choose one of theirs, "
            f"or select tasks with --ar-tasks"
        )
    if need_gpu:
        errors.append(
            f"--ar-profile {name} needs a CUDA GPU and none is visible ({', '.join(need_gpu)}); "
            f"run on a GPU machine or pass --ar-profile cpu"
        )
    return list(dict.fromkeys(errors))


def _tasks_at(state: PluginState, paths) -> dict[str, Task]:
    """The tasks whose folders hold these test files, by name."""
    return {t.name: t for t in map(state.task_for, paths) if t is not None}


# Options with which pytest drops collected items before the plugin sees them (-k, -m, --deselect,
# --lf, --sw): the xdist controller, which has no items, cannot tell which tasks keep some.
ITEM_SELECTION = ("keyword", "markexpr", "deselect", "lf", "stepwise")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """xdist controller (--ar-executor xdist): the task errors before any worker starts (xdist starts
    them in its own sessionstart, trylast), judged as the workers will judge them (_task_errors), on
    the test files their collection will reach. With an item selection a profile or GPU problem is
    refused here only when every task has it (whichever keep items, they fail); else the workers,
    whose items say which tasks remain, report it (InputErrors)."""
    config = session.config
    if xdist_support.role(config) != "controller" or config.getoption("ar_executor") != "xdist":
        return
    state = config.stash[STATE]
    tasks = list(_tasks_at(state, _test_files(session)).values())  # every task folder met: names, task.toml errors
    if any(config.getoption(name, None) for name in ITEM_SELECTION):
        shared = len(_task_errors(config, state, []))  # the collection's and --ar-tasks' problems
        if not all(len(_task_errors(config, state, [task])) > shared for task in tasks):
            tasks = []  # some task may run as asked, and only the workers' items say which remain
    if errors := _task_errors(config, state, tasks):
        raise pytest.UsageError(*errors)


def _test_files(session: pytest.Session):
    """The test files that the session's collection reaches from its arguments, found by pytest's own
    directory collectors (so conftests' collect_ignore, --ignore, norecursedirs, python_files and
    --ar-tasks apply as in the workers), without importing a test module."""
    config = session.config
    paths = [Path(config.invocation_params.dir, arg.split("::")[0]) for arg in config.args]
    if not config.getoption("keepduplicates"):  # as pytest does: an argument inside another is dropped
        paths = [p for p in dict.fromkeys(paths) if not any(q in p.parents for q in paths)]
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():  # anything else (--pyargs, a missing path) is the workers' to report
            yield from _files_in(session.gethookproxy(path.parent).pytest_collect_directory(path=path, parent=session))


def _files_in(folder: pytest.Directory):
    """The test files of a directory collector and of those under it, in collection order."""
    report = folder.ihook.pytest_make_collect_report(collector=folder)
    for node in report.result if report.passed else ():  # a broken conftest: the workers say it
        if isinstance(node, pytest.Directory):
            yield from _files_in(node)
        elif isinstance(node, pytest.File):
            yield node.path


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the tasks and plan the benchmark of each selected candidate (bounded by the harness's
    limits for its task's runs); then the surface check first, benchmarks after all checks."""
    state, bench = config.stash[STATE], config.stash[SESSION]
    base = config.getoption("ar_base_ref")
    tasks = _tasks_at(state, (i.path for i in items))
    errors = _task_errors(config, state, list(tasks.values()))
    benchmarks = [i for i in items if i.get_closest_marker("autoresearch")]
    planned = [(i, state.task_for(i.path), c) for i in benchmarks if (c := _item_candidate(i)) is not None]
    for _item, task, candidate in planned if bench.options.enabled and not errors else ():
        try:
            bench.plan(task, state.profile_for(task), candidate)
        except (TaskError, ValueError) as e:  # the base ref lacks the task's file; a broken stored baseline
            errors.append(str(e))
            break
    if errors:
        if xdist_support.role(config) != "worker":
            raise pytest.UsageError(*errors)
        items[:] = [InputErrors.from_parent(session, name="autoresearch_inputs", errors=errors)]
        return
    if base and tasks:
        items.insert(
            0, EditableSurface.from_parent(session, name="editable_surface", tasks=list(tasks.values()), base=base)
        )
    items[:] = [i for i in items if not i.get_closest_marker("autoresearch")] + benchmarks
    for item, task, _ in planned if bench.options.enabled and config.pluginmanager.hasplugin("timeout") else ():
        item.add_marker(pytest.mark.timeout(bench.time_limit(task)))  # after planning: all the task's runs
    if not bench.options.enabled:
        for item in benchmarks:
            item.add_marker(pytest.mark.skip(reason="timed benchmark: run pytest with --autoresearch"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed check of a candidate cancels that candidate's benchmark (and no other's); a test that
    takes ar_benchmark and passes without calling it fails (it measured nothing)."""
    report = yield
    if (
        call.when == "call"
        and report.passed
        and "ar_benchmark" in getattr(item, "fixturenames", ())
        and not item.stash.get(BENCHMARK_CALLED, False)
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} takes the ar_benchmark fixture but never calls it, so nothing was "
            f"measured: call ar_benchmark() in the test"
        )
        return report
    if report.failed and isinstance(item, EditableSurface):
        bench = item.config.stash[SESSION]
        for result in bench.results.values():
            bench.skip(result.task, result.candidate, report.longreprtext.strip())
        return report
    candidate = _item_candidate(item)
    if report.failed and candidate is not None and not item.get_closest_marker("autoresearch"):
        lines = [l[2:].strip() for l in report.longreprtext.splitlines() if l.startswith("E ")]
        reason = (lines or report.longreprtext.strip().splitlines() or ["failed"])[0]
        state = item.config.stash[STATE]
        item.config.stash[SESSION].skip(
            state.task_for(item.path), candidate, f"check {item.originalname} failed: {reason}"
        )
    return report


@pytest.fixture
def ar_task(request: pytest.FixtureRequest) -> Task:
    task = request.config.stash[STATE].task_for(request.path)
    if task is None:
        pytest.fail(f"{request.path} is not in a task folder (no task.toml beside it)", pytrace=False)
    return task


@pytest.fixture
def ar_profile(request: pytest.FixtureRequest, ar_task: Task) -> Profile:
    try:
        return request.config.stash[STATE].profile_for(ar_task)
    except TaskError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def ar_check(request: pytest.FixtureRequest, ar_task: Task, ar_profile: Profile, candidate: Candidate):
    state = request.config.stash[STATE]
    options = request.config.stash[SESSION].options
    key = (ar_task.name, candidate.name)
    if key not in state.check_servers:
        state.check_servers[key] = CheckServer(
            ar_task,
            ar_profile,
            candidate,
            sandbox=options.sandbox,
            results_paths=(options.results_tsv, options.results_jsonl),
        )
    server = state.check_servers[key]

    def check(name: str, **params) -> str:
        outcome = server.run(name, **params)
        if not outcome["ok"]:
            pytest.fail(outcome["error"], pytrace=False)
        if outcome["detail"].startswith("warning:"):  # a quality matter, not a broken rule: shown, not failed
            warnings.warn(CheckWarning(f"{candidate.name}: {name}: {outcome['detail']}"), stacklevel=2)
        return outcome["detail"]

    return check


class CheckWarning(UserWarning):
    """A check passed with a warning (e.g. an initial loss far above ln(vocab)); pytest's summary lists it."""


@pytest.fixture
def ar_benchmark(request: pytest.FixtureRequest, ar_task: Task, ar_profile: Profile, candidate: Candidate):
    session = request.config.stash[SESSION]

    def benchmark() -> CandidateResult:
        request.node.stash[BENCHMARK_CALLED] = True
        if not session.options.enabled:
            pytest.skip("timed benchmark: run pytest with --autoresearch")
        session.plan(ar_task, ar_profile, candidate)
        state, base = request.config.stash[STATE], session.options.base_ref
        if session.executor.per_item and base:  # the surface item ran in one worker only: check here too
            if error := _surface_error(request.config, [t for t in state.tasks.values() if t], base):
                session.skip(ar_task, candidate, error)
        try:
            result = session.result(ar_task, candidate)
        except stats.NotFinite as e:  # a score or a stored baseline value that is NaN or inf: no verdict
            pytest.fail(f"{candidate.name}: {e}", pytrace=False)
        request.node.user_properties.extend(table.junit_properties(result))
        if xdist_support.role(request.config) == "worker":  # the controller's table needs it
            base_entry = session.results.get((ar_task.name, BASE))
            names = [candidate.name] + (
                [BASE] if base_entry and base_entry.records and (ar_task.name, BASE) not in state.sent else []
            )
            state.sent.update((ar_task.name, n) for n in names)
            xdist_support.attach(request.node, [session.to_report(ar_task, n) for n in names])
        if result.skipped:
            pytest.fail(f"not benchmarked: {result.skipped}", pytrace=False)
        if result.stopped:
            pytest.fail(f"{candidate.name}: {result.stopped}", pytrace=False)
        planned = len(session.options.seed_list)
        if len(result.records) < planned:  # a benchmark that passes has all its runs
            pytest.fail(f"{candidate.name}: {len(result.records)} of {planned} run(s) recorded", pytrace=False)
        if result.status != "ok":
            trace = next((r.extra["traceback"] for r in result.records if r.extra.get("traceback")), "")
            pytest.fail(
                f"{candidate.name}: {result.status}: {result.error}" + (f"\n\n{trace}" if trace else ""), pytrace=False
            )
        if session.options.fail_on_regression and result in session.regressions():
            relation = "worse than" if result.decision.verdict == "worse" else f"{result.decision.verdict} with"
            pytest.fail(f"{candidate.name}: {relation} the {result.baseline}: {result.decision.reason}", pytrace=False)
        return result

    return benchmark


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in session.config.stash[STATE].check_servers.values():
        server.close()
    bench, role = session.config.stash[SESSION], xdist_support.role(session.config)
    if bench.options.save_baseline and role != "controller":  # under xdist, the worker that ran train.py
        for path in bench.save_baselines():
            session.config.stash[STATE].write(f"[autoresearch] baseline saved: {path}")
    if role == "worker" or not (shown := _reported(bench)):
        return
    config = session.config
    markdown = table.markdown(shown)
    if path := config.getoption("ar_markdown"):
        Path(path).write_text(markdown)
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):  # GitHub Actions: the job's summary page
        with open(step_summary, "a") as f:
            f.write(markdown + "\n")
    outputs = {o: config.getoption(o) for o in ("ar_json", "ar_html", "ar_tensorboard") if config.getoption(o)}
    if outputs:
        _write_reports(config, bench, shown, outputs)


def _write_reports(
    config: pytest.Config, bench: BenchmarkSession, shown: list[CandidateResult], outputs: dict[str, str]
) -> None:
    """The session's report document (report.py), as --ar-json, --ar-html and --ar-tensorboard ask."""
    from . import htmlreport, report

    profile = shown[0].profile
    machine = report.machine_info(device=profile.device)
    config.hook.pytest_autoresearch_update_machine_info(config=config, machine_info=machine)
    doc = report.session_document(bench, machine)
    config.hook.pytest_autoresearch_update_json(config=config, report=doc)
    state = config.stash[STATE]
    if "ar_json" in outputs:
        state.write(f"[autoresearch] report: {report.write(doc, outputs['ar_json'])}")
    if "ar_html" in outputs:
        state.write(f"[autoresearch] HTML report: {htmlreport.write(doc, outputs['ar_html'])}")
    if "ar_tensorboard" in outputs:
        from . import track

        runs = track.write_tensorboard(doc, outputs["ar_tensorboard"])
        state.write(f"[autoresearch] TensorBoard: {runs} runs in {outputs['ar_tensorboard']}")


def _reported(bench: BenchmarkSession) -> list[CandidateResult]:
    """The candidates that ran, were stopped by a check or whose schedule stopped, best first (none
    under --collect-only)."""
    return [r for r in bench.ranked() if r.records or r.skipped or r.stopped]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench = config.stash[SESSION]
    if not (shown := _reported(bench)):
        return
    terminalreporter.write_sep("=", "autoresearch benchmark")
    terminalreporter.write_line(tabulate(table.summary_rows(shown), headers="keys"))
    for line in table.not_comparable_notes(shown):
        terminalreporter.write_line(line)
    if any(r.records for r in shown):
        terminalreporter.write_line(
            f"records appended to {bench.options.results_tsv} and {bench.options.results_jsonl}"
        )
