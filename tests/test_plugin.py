"""The pytest plugin end to end, run by pytester on the tiny task (a few seconds of CPU per run)."""
import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

TINY = Path(__file__).parent / "tiny_task"
FAST = ["--ar-budget", "1", "-p", "no:cacheprovider"]


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
    run = pytester.runpytest_subprocess("tasks", "-rs", *FAST)
    run.assert_outcomes(passed=3, skipped=1)
    run.stdout.fnmatch_lines(["*timed benchmark: run pytest with --autoresearch*"])
    assert not (project / "results.tsv").exists()


def test_autoresearch_trains_scores_and_records(pytester, project):
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", *FAST)
    run.assert_outcomes(passed=4)
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


def test_progress_is_shown_without_dash_s(pytester, project):
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-budget", "4")
    run.stdout.fnmatch_lines(["*tiny/train seed 0 | step * | loss * | *tok/s | * s left*"])


def test_candidates_are_ranked_and_a_failed_check_skips_only_its_benchmark(pytester, project):
    add_candidate(project, "slow_lr", 'lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.01')
    add_candidate(project, "wide", 'd = cfg["n_embd"]', 'd = 2 * cfg["n_embd"]')
    add_candidate(project, "peeks_ahead", "is_causal=True", "is_causal=False")
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", *FAST)
    run.stdout.fnmatch_lines([
        "*_ test_causality?peeks_ahead? _*", "causality: *the model sees the future*",
        "*_ test_benchmark?peeks_ahead? _*", "not benchmarked: check test_causality failed: causality: *"])
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    ranked = [line.split()[1] for line in table.splitlines() if line.startswith("tiny")]
    assert set(ranked[:3]) == {"train", "slow_lr", "wide"} and ranked[3] == "peeks_ahead"
    scores = {r["description"]: float(r["val_bpb"]) for r in results(project)}
    assert ranked[:3] == sorted(scores, key=scores.get)  # best first
    assert "peeks_ahead" not in scores


def test_dash_k_runs_one_candidate_alone(pytester, project):
    add_candidate(project, "wide", 'd = cfg["n_embd"]', 'd = 2 * cfg["n_embd"]')
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "-k", "wide", *FAST)
    run.assert_outcomes(passed=4, deselected=4)
    assert [r["description"] for r in results(project)] == ["wide"]


def test_seeds_are_interleaved_across_candidates(pytester, project):
    add_candidate(project, "wide", 'd = cfg["n_embd"]', 'd = 2 * cfg["n_embd"]')
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-seeds", "2", *FAST)
    run.assert_outcomes(passed=8)
    assert [(r["description"], r["seed"]) for r in results(project)] == [
        ("train", "0"), ("wide", "0"), ("train", "1"), ("wide", "1")]


def test_candidate_on_the_command_line(pytester, project, tmp_path):
    idea = tmp_path / "idea.py"
    idea.write_text((project / "tasks" / "tiny" / "train.py").read_text())
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", f"--ar-candidate={idea}", "-k", "idea", *FAST)
    run.assert_outcomes(passed=4, deselected=4)
    assert [r["description"] for r in results(project)] == ["idea"]


def test_crashing_candidate_is_recorded_with_a_one_line_reason(pytester, project):
    add_candidate(project, "crashes", "    return model\n", "    raise RuntimeError('boom')\n")
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "-k", "crashes", *FAST)
    run.stdout.fnmatch_lines(["*_ test_benchmark?crashes? _*", "crashes: crash: training: RuntimeError: boom"])
    assert [(r["description"], r["status"], r["val_bpb"]) for r in results(project)] == [
        ("crashes", "crash", "0.000000")]


def test_candidate_that_does_not_import_fails_its_checks_and_is_not_run(pytester, project):
    add_candidate(project, "broken", "import math", "import math\nraise SyntaxError('half-written file')")
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "-k", "broken", *FAST)
    run.stdout.fnmatch_lines(["*candidate failed to import*half-written file*"])
    assert not (project / "results.tsv").exists()


def test_malformed_task_toml_is_one_clear_line(pytester, project):
    (project / "tasks" / "tiny" / "task.toml").write_text("[task\nname = 'tiny'\n")
    run = pytester.runpytest_subprocess("tasks")
    assert run.ret != 0
    run.stdout.fnmatch_lines(["*task.toml: malformed TOML*fix the syntax*"])


def test_gpu_profile_without_gpu_is_recorded_as_crash(pytester, project):
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-profile", "gpu", *FAST)
    run.stdout.fnmatch_lines(["*needs a CUDA GPU and none is visible; run on a GPU machine or pass --ar-profile cpu*"])
    assert [r["status"] for r in results(project)] == ["crash"]


def test_change_outside_the_editable_surface_fails_the_session(pytester, project):
    git = lambda *a: subprocess.run(["git", *a], cwd=project, check=True, capture_output=True)
    git("init", "-q")
    (project / ".gitignore").write_text("runpytest-*\nstdout\nstderr\n")  # pytester's own files
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "base", "--allow-empty")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "task")
    (project / "tasks" / "tiny" / "train.py").write_text((project / "tasks" / "tiny" / "train.py").read_text() + "\n")
    (project / "conftest.py").write_text("SCORE_OVERRIDE = 0.5  # an edit outside the editable surface\n")
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-base-ref", "HEAD", *FAST)
    run.stdout.fnmatch_lines(["*editable surface: the change since HEAD touches conftest.py;*"])
    assert run.ret != 0
    assert not (project / "results.tsv").exists()
