"""The pytest plugin end to end, run by pytester on the tiny task (a few seconds of CPU per run).

The pytest sessions run in this process (candidate code runs only in the harness's child processes
anyway), which saves a Python and torch start-up per session."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from gitrepo import commit_all, git
from test_session import FakeRuns
from test_storage import record

from autoresearch_bench import calibrate
from autoresearch_bench.session import RUN_SLACK_S, TASK_SLACK_S
from autoresearch_bench.storage import baselines, fingerprints

TINY = Path(__file__).parent / "tiny_task"
# Fixed tokens wherever a test is not about the clock: the same runs on an idle or a loaded machine.
FAST = ["--ar-tokens", "8192", "-p", "no:cacheprovider"]
# Two seeds, two runs sharing the machine at once (--ar-slots 2): fixed tokens keep them exact repeats.
TOKENS = ["--ar-tokens", "16384", "--ar-seeds", "2", "--ar-slots", "2", "-p", "no:cacheprovider"]
# The benchmarks alone, two seeds each, against the base commit measured side by side.
AGAINST_HEAD = ["--autoresearch", "tasks", "-k", "benchmark", "--ar-base-ref", "HEAD", "--ar-seeds", "2"]
# A time budget, for what is about the clock: 1 s, with the tiny task's start-up allowance (60 s).
TIMED = ["--ar-budget", "1", "-p", "no:cacheprovider"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """A project folder holding tasks/tiny, as a user's repository would."""
    shutil.copytree(TINY, pytester.path / "tasks" / "tiny")
    return pytester.path


def add_candidate(project: Path, name: str, old: str = "", new: str = "") -> None:
    source = (project / "tasks" / "tiny" / "train.py").read_text()
    assert old in source
    (project / "tasks" / "tiny" / "candidates").mkdir(exist_ok=True)
    (project / "tasks" / "tiny" / "candidates" / f"{name}.py").write_text(source.replace(old, new))


def results(project: Path) -> list[dict]:
    with open(project / "results.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_without_autoresearch_only_checks_run(pytester, project):
    run = pytester.runpytest_inprocess("tasks", "-rs", *FAST)
    run.assert_outcomes(passed=3, skipped=1)
    run.stdout.fnmatch_lines(["*timed benchmark: run pytest with --autoresearch*"])
    assert not (project / "results.tsv").exists()


def test_a_task_s_tests_are_its_task_toml_s_checks_and_the_benchmark_beside_its_own(pytester, project):
    """One test per name of task.toml's checks list, with its [check_options] (no hand-kept twin of
    the list to drift from it), the benchmark, and any test file the task adds of its own."""
    toml = project / "tasks" / "tiny" / "task.toml"
    toml.write_text(
        toml.read_text().replace(
            'checks = ["source_policy", "logits_shape", "causality"]',
            'checks = ["source_policy", "causality", "param_limit"]',
        )
    )
    (project / "tasks" / "tiny" / "test_own.py").write_text("def test_own():\n    pass\n")
    run = pytester.runpytest_inprocess("tasks", "--collect-only", "-q", *FAST)
    ids = [line for line in run.stdout.lines if "::" in line]
    assert ids == [
        "tasks/tiny/task.toml::test_source_policy[train]",
        "tasks/tiny/task.toml::test_causality[train]",
        "tasks/tiny/task.toml::test_param_limit[train]",
        "tasks/tiny/test_own.py::test_own",
        "tasks/tiny/task.toml::test_benchmark[train]",
    ]  # benchmarks after every check
    toml.write_text(toml.read_text().replace("examples = 5", "examples = 0"))  # hypothesis refuses 0 examples
    failed = pytester.runpytest_inprocess("tasks", "-k", "causality", *FAST)
    failed.assert_outcomes(failed=1, deselected=4)
    assert "max_examples" in failed.stdout.str()


def test_collect_only_runs_nothing_and_claims_no_records(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--collect-only", "-q", *FAST)
    assert "autoresearch benchmark" not in run.stdout.str() and "records appended" not in run.stdout.str()
    assert not (project / "results.tsv").exists()


def test_autoresearch_trains_scores_records_and_shows_progress(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", *TIMED)  # no -s: progress must show anyway
    run.assert_outcomes(passed=4)
    run.stdout.fnmatch_lines(["*tiny/train seed 0 | step * | loss * | *tok/s | * s left*"])
    run.stdout.fnmatch_lines(
        ["*autoresearch benchmark*", "*task*candidate*commit*profile*val_bpb*status*", "*tiny*train*cpu*ok*"]
    )
    rows = results(project)
    assert len(rows) == 1
    row = rows[0]
    assert list(row)[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert row["status"] == "ok" and row["task"] == "tiny" and row["profile"] == "cpu"
    assert 0 < float(row["val_bpb"]) < 20 and int(row["tokens"]) > 0
    record = json.loads((project / "results.jsonl").read_text().splitlines()[0])
    assert record["value"] == pytest.approx(float(row["val_bpb"]), rel=1e-5) and record["mode"] == "time"
    assert record["extra"]["calibration"]["cpu"] > 0  # the machine's speed, measured before the run


def test_candidates_are_ranked_interleaved_and_a_failed_check_skips_only_its_benchmark(pytester, project):
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.01')
    add_candidate(project, "peeks_ahead", "is_causal=True", "is_causal=False")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", *TOKENS)
    run.stdout.fnmatch_lines(
        [
            "*_ test_causality?peeks_ahead? _*",
            "causality: *the model sees the future*",
            "*_ test_benchmark?peeks_ahead? _*",
            "not benchmarked: check test_causality failed: causality: *",
        ]
    )
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    ranked = [line.split()[1] for line in table.splitlines() if line.startswith("tiny")]
    assert ranked == ["train", "slow_lr", "peeks_ahead"]  # best first; the one not run last
    rows = results(project)
    assert [(r["description"], r["seed"]) for r in rows] == [
        ("train", "0"),
        ("slow_lr", "0"),
        ("train", "1"),
        ("slow_lr", "1"),
    ]  # seeds interleaved


def test_candidate_on_the_command_line_selected_alone_with_dash_k(pytester, project, tmp_path):
    idea = tmp_path / "idea.py"
    idea.write_text((project / "tasks" / "tiny" / "train.py").read_text())
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", f"--ar-candidate={idea}", "-k", "idea", *FAST)
    run.assert_outcomes(passed=4, deselected=4)
    assert [r["description"] for r in results(project)] == ["idea"]


def test_crashing_candidate_is_recorded_with_a_one_line_reason(pytester, project):
    add_candidate(project, "crashes", "    return model\n", "    raise RuntimeError('boom')\n")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "crashes", *FAST)
    run.stdout.fnmatch_lines(["*_ test_benchmark?crashes? _*", "crashes: crash: training: RuntimeError: boom"])
    assert [(r["description"], r["status"], r["val_bpb"]) for r in results(project)] == [
        ("crashes", "crash", "0.000000")
    ]


def test_candidate_that_does_not_import_fails_its_checks_and_is_not_run(pytester, project):
    add_candidate(project, "broken", "import math", "import math\nraise SyntaxError('half-written file')")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "broken", *FAST)
    run.stdout.fnmatch_lines(["*candidate failed to import*half-written file*"])
    assert not (project / "results.tsv").exists()


def like(text: str, pattern: str) -> bool:
    """Whether text matches pattern, in which only * is a wildcard."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text) is not None


def usage_error(run, project: Path) -> str:
    """The one line that a session stopped by a usage error printed, having run nothing."""
    assert run.ret == pytest.ExitCode.USAGE_ERROR, run.stdout.str() + run.stderr.str()
    lines = [line for line in run.stderr.str().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), lines
    assert "Traceback" not in run.stdout.str() + run.stderr.str() and not (project / "results.tsv").exists()
    return lines[0].removeprefix("ERROR: ")


BAD_INPUTS = [  # (options, the one line that refuses them)
    (["--ar-seeds", "0"], "--ar-seeds 0: run at least 1 seed"),
    (["--ar-seeds", "-2"], "--ar-seeds -2: run at least 1 seed"),
    (
        ["--ar-tokens", "0"],
        "--ar-tokens 0: fixed-token mode needs a positive number of tokens; leave the option out for a time budget",
    ),
    (["--ar-budget", "0"], "--ar-budget 0.0: the time budget must be a positive number of seconds"),
    (
        ["--ar-tasks", "nosuch"],
        "--ar-tasks: no task named nosuch among the collected folders (known: tiny); "
        "give task names, or the task folders' paths",
    ),
    (
        ["--ar-profile", "h200"],
        "--ar-profile h200: no such profile in tiny (profiles: cpu, gpu); choose one of "
        "theirs, or select tasks with --ar-tasks",
    ),
    (
        ["--ar-results", "a_file/results.tsv"],
        "cannot write */a_file/results.tsv (Not a directory): give --ar-results a writable path on a disk with room",
    ),
    (
        ["--ar-candidate", "missing.py"],
        "--ar-candidate missing.py: no such file, and no commit of that name in the "
        "git repository at *; give a file with the task contract, or a branch, tag "
        "or commit",
    ),
    (
        ["--ar-base-ref", "nosuch"],
        "--ar-base-ref nosuch: no commit of that name in the git repository at *; "
        "give a branch, tag or commit (e.g. origin/main)",
    ),
    (
        ["--ar-baseline", "missing.json"],
        "--ar-baseline missing.json: no such baseline file; pass a file that "
        "--ar-save-baseline wrote (baselines/<task>/*.json), or --ar-baseline auto "
        "or none",
    ),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_inputs_stop_the_session_at_once_with_one_line_that_says_what_to_do(pytester, project, args, message):
    (project / "a_file").write_text("")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", *FAST, *args)  # the last value counts
    assert like(usage_error(run, project), message), usage_error(run, project)


def test_a_cuda_profile_without_a_gpu_stops_the_session_before_any_check(pytester, project):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-profile", "gpu", *FAST)
    assert usage_error(run, project) == (
        "--ar-profile gpu needs a CUDA GPU and none is visible (tiny); run on a GPU machine or pass --ar-profile cpu"
    )


@pytest.mark.parametrize(
    "toml_edit, message",
    [
        (
            ("budget_s = 3\n", 'budget_s = "30s"\n'),
            "tasks/tiny/task.toml: [profiles.cpu] budget_s must be a number, got '30s'",
        ),
        (
            ("[profiles.cpu]", "[profiles.cpu"),
            "tasks/tiny/task.toml: malformed TOML (* (at line *, column *)); fix the syntax",
        ),
    ],
)
def test_a_broken_task_toml_is_one_line_naming_the_file(pytester, project, toml_edit, message):
    toml = project / "tasks" / "tiny" / "task.toml"
    toml.write_text(toml.read_text().replace(*toml_edit, 1))
    for args in (["tasks"], ["tasks", "--ar-tasks", "tiny"]):  # checks only, or a selection by name
        line = usage_error(pytester.runpytest_inprocess(*args, *FAST), project)
        assert like(line, message), line


# Under pytest-xdist the controller collects nothing and shows no worker's usage error: it judges the
# inputs itself, before it starts a worker.
XDIST = ["-n", "2", "--ar-executor", "xdist"]


def xdist_session(pytester, *args):
    """A session under pytest-xdist, in a child process (as a user runs it)."""
    pytest.importorskip("xdist", reason="pytest-xdist is not installed: pip install autoresearch-bench[xdist]")
    return pytester.runpytest_subprocess(*XDIST, *args)


def workers_started(run) -> bool:
    return "created: " in run.stdout.str() or "[gw0]" in run.stdout.str() + run.stderr.str()


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_under_xdist_bad_inputs_stop_the_session_before_any_worker_starts(pytester, project, args, message):
    (project / "a_file").write_text("")
    run = xdist_session(pytester, "--autoresearch", "tasks", *FAST, *args)
    assert like(usage_error(run, project), message), usage_error(run, project)
    assert not workers_started(run), run.stdout.str()


def test_under_xdist_a_cuda_profile_without_a_gpu_stops_the_session_before_any_worker_starts(pytester, project):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    run = xdist_session(pytester, "--autoresearch", "tasks", "--ar-profile", "gpu", *FAST)
    assert usage_error(run, project) == (
        "--ar-profile gpu needs a CUDA GPU and none is visible (tiny); run on a GPU machine or pass --ar-profile cpu"
    )
    assert not workers_started(run), run.stdout.str()


def test_under_xdist_folders_that_collection_does_not_reach_are_not_judged(pytester, project):
    """A task folder that a conftest's collect_ignore hides (as tests/tiny_task in this repository),
    and one nested in a task folder without test files, are not the session's: broken, they refuse
    nothing."""
    ignored = Path(shutil.copytree(TINY, project / "tests" / "tiny_task"))
    (project / "tests" / "conftest.py").write_text('collect_ignore = ["tiny_task"]\n')
    (project / "tests" / "test_other.py").write_text("def test_other():\n    pass\n")
    nested = project / "tasks" / "tiny" / "drafts" / "old"
    nested.mkdir(parents=True)
    for folder in (ignored, nested):
        (folder / "task.toml").write_text("[profiles.cpu\n")
    run = xdist_session(pytester, "--autoresearch", "tasks", "tests", *FAST)
    run.assert_outcomes(passed=5)
    assert workers_started(run) and [r["status"] for r in results(project)] == ["ok"]


def test_under_xdist_with_an_item_selection_a_profile_no_task_has_still_stops_the_session_first(pytester, project):
    """With -k (or -m, --deselect, --lf, --sw) whichever tasks keep items lack the profile."""
    run = xdist_session(pytester, "--autoresearch", "tasks", "-k", "benchmark", "--ar-profile", "h200", *FAST)
    assert usage_error(run, project).startswith("--ar-profile h200: no such profile in tiny")
    assert not workers_started(run), run.stdout.str()


def test_under_xdist_with_an_item_selection_the_workers_judge_a_profile_only_some_tasks_lack(pytester, project):
    """Only the collected items say which tasks remain: the workers report it, as one failed item."""
    other = project / "tasks" / "other"
    shutil.copytree(project / "tasks" / "tiny", other)
    (other / "task.toml").write_text(
        (other / "task.toml").read_text().replace('name = "tiny"', 'name = "other"')
        + '\n[profiles.h200]\nextends = "cpu"\n'
    )
    run = xdist_session(pytester, "--autoresearch", "tasks", "-k", "benchmark", "--ar-profile", "h200", *FAST)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*_ autoresearch_inputs _*", "*", "--ar-profile h200: no such profile in tiny *"])
    assert not (project / "results.tsv").exists()


def commit_project(project: Path) -> None:
    """Make the project a git repository with everything committed (pytester's own files ignored)."""
    commit_all(project, ignore="runpytest-*\nstdout\nstderr\n")


def test_change_outside_the_editable_surface_fails_the_session(pytester, project):
    commit_project(project)
    (project / "tasks" / "tiny" / "train.py").write_text((project / "tasks" / "tiny" / "train.py").read_text() + "\n")
    (project / "conftest.py").write_text("SCORE_OVERRIDE = 0.5  # an edit outside the editable surface\n")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-base-ref", "HEAD", *FAST)
    run.stdout.fnmatch_lines(["*editable surface: the change since HEAD touches conftest.py;*"])
    assert run.ret != 0
    assert not (project / "results.tsv").exists()


def test_gate_against_the_base_commit_measured_side_by_side(pytester, project):
    commit_project(project)
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.05')
    run = pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "--ar-base-ref", "HEAD", "-k", "benchmark", "--ar-fail-on-regression", *TOKENS
    )
    assert run.ret == 1
    run.stdout.fnmatch_lines(["*_ test_benchmark?slow_lr? _*", "slow_lr: worse than the base @HEAD: *"])
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    verdicts = {line.split()[1]: line for line in table.splitlines() if line.startswith("tiny")}
    assert "no difference" in verdicts["train"] and "worse" in verdicts["slow_lr"]
    assert {r["description"] for r in results(project)} == {"base @HEAD", "train", "slow_lr"}
    assert all(json.loads(line)["mode"] == "tokens" for line in (project / "results.jsonl").read_text().splitlines())


def test_one_seed_against_one_is_undecided_and_passes_the_gate(pytester, project):
    commit_project(project)
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.05')
    run = pytester.runpytest_inprocess(
        "--autoresearch",
        "tasks",
        "--ar-base-ref",
        "HEAD",
        "-k",
        "benchmark and slow",
        "--ar-fail-on-regression",
        *TOKENS[:2],
        "--ar-slots",
        "2",
        "-p",
        "no:cacheprovider",
    )
    assert run.ret == 0  # worse-looking by far, but one run a side cannot tell it from noise
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    assert "undecided" in next(line for line in table.splitlines() if line.split()[:2] == ["tiny", "slow_lr"])


def test_seeds_are_a_count_or_auto(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-seeds", "many", "-p", "no:cacheprovider")
    run.stderr.fnmatch_lines(["*--ar-seeds: 'many': give a number of seeds (1 or more) or auto*"])
    assert run.ret != 0 and not (project / "results.tsv").exists()


def test_saved_baseline_gates_a_later_run(pytester, project):
    saved = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", "--ar-save-baseline", *TOKENS)
    saved.assert_outcomes(passed=1, deselected=3)
    [baseline] = (project / "baselines" / "tiny").glob("*tokens-16384.json")
    assert len(json.loads(baseline.read_text())["values"]) == 2
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.05')
    gated = pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "-k", "benchmark", "--ar-fail-on-regression", "--ar-markdown", "summary.md", *TOKENS
    )
    gated.assert_outcomes(passed=1, failed=1, deselected=6)
    summary = (project / "summary.md").read_text()
    assert "| tiny" in summary and "no difference" in summary and "worse" in summary


# --- every benchmark item has its runs (run_candidate replaced: no training) -----------------------


def test_a_schedule_that_stops_fails_every_item_whose_runs_are_missing_and_shows_them(pytester, project, monkeypatch):
    add_candidate(project, "slow_lr")
    add_candidate(project, "wide")
    FakeRuns(monkeypatch, fail_at=2, error=RuntimeError("the GPU fell off the bus"))
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", *FAST)
    run.assert_outcomes(passed=1, failed=2, deselected=9)  # train has its run; the others have none
    why = "the schedule stopped after 0 of its 1 run(s) (RuntimeError: the GPU fell off the bus)"
    run.stdout.fnmatch_lines([f"slow_lr: {why}", f"wide: {why}"], consecutive=False)
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    rows = {re.split(r"\s{2,}", line)[1]: line for line in table.splitlines() if line.startswith("tiny")}
    assert rows["train"].endswith("  ok") and all(f"interrupted  {why}" in rows[n] for n in ("slow_lr", "wide"))


def test_the_ini_timeout_does_not_cut_a_benchmark_short(pytester, project, monkeypatch):
    """pytest-timeout's ini timeout is for checks; a benchmark item is bounded by the harness's own
    limits for its task's runs (three seeds here: 3 × (budget + its 10 s grace + allowance + evaluation
    + slack))."""
    pytester.makeini("[pytest]\ntimeout = 1\n")
    fake = FakeRuns(monkeypatch, seconds=0.5)
    items, _ = pytester.inline_genitems("--autoresearch", "tasks", "-k", "benchmark", "--ar-seeds", "3", *TIMED)
    tiny = [i for i in items if i.get_closest_marker("autoresearch")][0]
    assert tiny.get_closest_marker("timeout").args == (3 * (1 + 10 + 60 + 60 + RUN_SLACK_S) + TASK_SLACK_S,)
    run = pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "-k", "benchmark", "--ar-seeds", "3", "--ar-tokens", "8192", "-p", "no:cacheprovider"
    )
    run.assert_outcomes(passed=1, deselected=3)  # 1.5 s of runs under a 1 s ini timeout
    assert len(fake.calls) == 3


def test_a_candidate_file_named_base_is_a_candidate_beside_the_base_ref(pytester, project, monkeypatch):
    commit_project(project)
    add_candidate(project, "base")
    FakeRuns(monkeypatch)
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", "--ar-base-ref", "HEAD", *FAST)
    run.assert_outcomes(passed=3, deselected=6)
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    assert sorted(re.split(r"\s{2,}", line)[1] for line in table.splitlines() if line.startswith("tiny")) == [
        "base",
        "base @HEAD",
        "train",
    ]
    assert [r["description"] for r in results(project)] == ["base @HEAD", "train", "base"]


def test_a_time_budget_on_a_slower_machine_is_not_comparable_and_says_why_under_the_table(
    pytester, project, monkeypatch
):
    FakeRuns(monkeypatch)
    monkeypatch.setattr(calibrate, "measure", lambda device: {"cpu": 50.0})  # half the speed of the baseline's
    fingerprint = {**fingerprints.machine_fingerprint("cpu", "cpu"), "mode": "time", "budget": 1.0}
    baselines.save_baseline(
        project / "baselines",
        "tiny",
        fingerprint,
        [record(task="tiny", value=2.0, extra={"data_id": "d0"})],
        calibration={"before": {"cpu": 100.0}, "after": {"cpu": 100.0}},
    )
    run = pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "-k", "benchmark", "--ar-fail-on-regression", "--ar-markdown", "summary.md", *TIMED
    )
    run.assert_outcomes(failed=1, deselected=3)
    why = (
        "tiny/train: not comparable: the cpu ran 50% slower than when the stored baseline @abc1234 was recorded "
        "(50.0 against 100.0 GFLOP/s): use fixed-token mode --ar-tokens N, or record the baseline again with "
        "--ar-save-baseline on an idle machine"
    )
    assert why in run.stdout.str().split("autoresearch benchmark")[-1]
    assert f"- {why}" in (project / "summary.md").read_text()


def test_a_git_ref_candidate_is_recorded_at_the_ref_s_commit(pytester, project, monkeypatch):
    commit_project(project)
    git(project, "branch", "idea")
    (project / "tasks" / "tiny" / "train.py").write_text((project / "tasks" / "tiny" / "train.py").read_text() + "\n")
    git(project, "commit", "-qam", "the checkout moves on")
    FakeRuns(monkeypatch)
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", "--ar-candidate", "idea", *FAST)
    run.assert_outcomes(passed=2, deselected=6)
    commits = {r["description"]: r["commit"] for r in results(project)}
    assert commits == {"idea": git(project, "rev-parse", "--short=7", "idea").strip(), "train": "checkout+dirty"}
