"""The pytest plugin end to end, run by pytester on the tiny task (a few seconds of CPU per run).

The pytest sessions run in this process (candidate code runs only in the harness's child processes
anyway), which saves a Python and torch start-up per session."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from gitrepo import commit_all

TINY = Path(__file__).parent / "tiny_task"
FAST = ["--ar-budget", "1", "-p", "no:cacheprovider"]
# Fixed tokens: exact repeats whatever the load, so two runs may share the machine (--ar-slots 2).
TOKENS = ["--ar-tokens", "16384", "--ar-seeds", "2", "--ar-slots", "2", "-p", "no:cacheprovider"]


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


def test_collect_only_runs_nothing_and_claims_no_records(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--collect-only", "-q", *FAST)
    assert "autoresearch benchmark" not in run.stdout.str() and "records appended" not in run.stdout.str()
    assert not (project / "results.tsv").exists()


def test_autoresearch_trains_scores_records_and_shows_progress(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", *FAST)  # no -s: progress must show anyway
    run.assert_outcomes(passed=4)
    run.stdout.fnmatch_lines(["*tiny/train seed 0 | step * | loss * | *tok/s | * s left*"])
    run.stdout.fnmatch_lines(["*autoresearch benchmark*", "*task*candidate*commit*profile*val_bpb*status*",
                              "*tiny*train*cpu*ok*"])
    rows = results(project)
    assert len(rows) == 1
    row = rows[0]
    assert list(row)[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert row["status"] == "ok" and row["task"] == "tiny" and row["profile"] == "cpu"
    assert 0 < float(row["val_bpb"]) < 20 and int(row["tokens"]) > 0
    record = json.loads((project / "results.jsonl").read_text().splitlines()[0])
    assert record["value"] == pytest.approx(float(row["val_bpb"]), rel=1e-5)


def test_candidates_are_ranked_interleaved_and_a_failed_check_skips_only_its_benchmark(pytester, project):
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.01')
    add_candidate(project, "peeks_ahead", "is_causal=True", "is_causal=False")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", *TOKENS)
    run.stdout.fnmatch_lines([
        "*_ test_causality?peeks_ahead? _*", "causality: *the model sees the future*",
        "*_ test_benchmark?peeks_ahead? _*", "not benchmarked: check test_causality failed: causality: *"])
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    ranked = [line.split()[1] for line in table.splitlines() if line.startswith("tiny")]
    assert ranked == ["train", "slow_lr", "peeks_ahead"]  # best first; the one not run last
    rows = results(project)
    assert [(r["description"], r["seed"]) for r in rows] == [
        ("train", "0"), ("slow_lr", "0"), ("train", "1"), ("slow_lr", "1")]  # seeds interleaved


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
        ("crashes", "crash", "0.000000")]


def test_candidate_that_does_not_import_fails_its_checks_and_is_not_run(pytester, project):
    add_candidate(project, "broken", "import math", "import math\nraise SyntaxError('half-written file')")
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "broken", *FAST)
    run.stdout.fnmatch_lines(["*candidate failed to import*half-written file*"])
    assert not (project / "results.tsv").exists()


def test_malformed_task_toml_is_one_clear_line(pytester, project):
    (project / "tasks" / "tiny" / "task.toml").write_text("[task\nname = 'tiny'\n")
    run = pytester.runpytest_inprocess("tasks")
    assert run.ret != 0
    run.stdout.fnmatch_lines(["*task.toml: malformed TOML*fix the syntax*"])


def test_gpu_profile_without_gpu_is_recorded_as_crash(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-profile", "gpu", "-k", "benchmark", *FAST)
    run.stdout.fnmatch_lines(["*needs a CUDA GPU and none is visible; run on a GPU machine or pass --ar-profile cpu*"])
    assert [r["status"] for r in results(project)] == ["crash"]


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
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-base-ref", "HEAD", "-k", "benchmark",
                                        "--ar-fail-on-regression", *TOKENS)
    assert run.ret == 1
    run.stdout.fnmatch_lines(["*_ test_benchmark?slow_lr? _*", "slow_lr: worse than the base @HEAD: *"])
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    verdicts = {line.split()[1]: line for line in table.splitlines() if line.startswith("tiny")}
    assert "no difference" in verdicts["train"] and "worse" in verdicts["slow_lr"]
    assert {r["description"] for r in results(project)} == {"base", "train", "slow_lr"}
    assert all(json.loads(line)["mode"] == "tokens" for line in (project / "results.jsonl").read_text().splitlines())


def test_one_seed_against_one_is_undecided_and_passes_the_gate(pytester, project):
    commit_project(project)
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.05')
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-base-ref", "HEAD", "-k", "benchmark and slow",
                                        "--ar-fail-on-regression", *TOKENS[:2], "--ar-slots", "2",
                                        "-p", "no:cacheprovider")
    assert run.ret == 0  # worse-looking by far, but one run a side cannot tell it from noise
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    assert "undecided" in next(line for line in table.splitlines() if line.split()[:2] == ["tiny", "slow_lr"])


def test_seeds_are_a_count_or_auto(pytester, project):
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-seeds", "0", "-p", "no:cacheprovider")
    run.stderr.fnmatch_lines(["*--ar-seeds: '0': give a number of seeds (1 or more) or auto*"])
    assert run.ret != 0 and not (project / "results.tsv").exists()


def test_saved_baseline_gates_a_later_run(pytester, project):
    saved = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", "--ar-save-baseline", *TOKENS)
    saved.assert_outcomes(passed=1, deselected=3)
    [baseline] = (project / "baselines" / "tiny").glob("*tokens-16384.json")
    assert len(json.loads(baseline.read_text())["values"]) == 2
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.05')
    gated = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", "--ar-fail-on-regression",
                                          "--ar-markdown", "summary.md", *TOKENS)
    gated.assert_outcomes(passed=1, failed=1, deselected=6)
    summary = (project / "summary.md").read_text()
    assert "| tiny" in summary and "no difference" in summary and "worse" in summary
