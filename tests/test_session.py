"""The benchmark session: every run accounted for, machine speed in time-mode verdicts, git
candidates' provenance, the base as a role. run_candidate is replaced by a fake (no training)."""

import time
from dataclasses import replace

import pytest
from gitrepo import commit_all, git
from test_storage import record

from autoresearch_bench import calibrate, files
from autoresearch_bench import executor as ex
from autoresearch_bench.candidate import BASE, Candidate, resolve_candidates
from autoresearch_bench.session import DRIFT_ADVICE, RUN_SLACK_S, SPEED_ADVICE, TASK_SLACK_S, BenchmarkSession, Options
from autoresearch_bench.storage import baselines, schema


class FakeRuns:
    """Stands in for run_candidate: seed s scores 2.0 + 0.01 s in `steps` steps and `seconds`, as a
    run in the checkout would record it (commit "checkout", dirty); run number `fail_at` raises `error`."""

    def __init__(
        self, monkeypatch, steps: int = 100, seconds: float = 0.0, fail_at: int = 0, error: BaseException | None = None
    ):
        self.steps, self.seconds, self.fail_at, self.error, self.calls = steps, seconds, fail_at, error, []
        monkeypatch.setattr(ex, "run_candidate", self)

    def __call__(self, task, profile, candidate, seed, *, on_progress=None, log=print, **options):
        self.calls.append((candidate.name, candidate.path, seed))
        if len(self.calls) == self.fail_at:
            raise self.error
        time.sleep(self.seconds)
        return record(
            task=task.name,
            candidate=candidate.name,
            profile=profile.name,
            seed=seed,
            commit="checkout",
            dirty=True,
            value=2.0 + 0.01 * seed,
            steps=self.steps,
            extra={"data_id": "d0"},
            description=options.get("description") or candidate.name,
        )


class Speeds:
    """Stands in for calibrate.measure: the CPU's speed at each measurement, in turn."""

    def __init__(self, *cpu: float):
        self.left = list(cpu)

    def __call__(self, device: str) -> dict[str, float]:
        assert self.left, "measured more often than expected"
        return {"cpu": self.left.pop(0)}


def session(tmp_path, speeds: Speeds | None = None, **options) -> BenchmarkSession:
    """A session with two seeds and no baseline unless options say otherwise; the machine runs at
    `speeds` (default: 100 GFLOP/s before and after)."""
    opts = Options(
        **{
            "enabled": True,
            "seeds": 2,
            "results_tsv": tmp_path / "results.tsv",
            "baseline": "none",
            "baselines_dir": tmp_path / "baselines",
            "scratch": tmp_path / ".ar",
            **options,
        }
    )
    return BenchmarkSession(opts, log=lambda m: None, measure_speed=speeds or Speeds(100, 100))


def plan(bench, task, *names):
    candidates = [Candidate(n, task.train_file, "task" if n == "train" else "candidates") for n in names]
    for c in candidates:
        bench.plan(task, task.profile("cpu"), c)
    return candidates


# --- every benchmark item has its runs -------------------------------------------------------------


def test_a_schedule_that_fails_marks_every_candidate_that_lacks_runs_with_the_reason(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch, fail_at=3, error=OSError(28, "disk full while appending"))
    bench = session(tmp_path, speeds=Speeds(100))
    train, wide = plan(bench, tiny_task, "train", "wide")
    first = bench.result(tiny_task, train)  # runs the whole schedule: train 0, wide 0, then train 1 fails
    second = bench.result(tiny_task, wide)  # nothing runs again
    for result in (first, second):
        assert len(result.records) == 1 and result.status == "interrupted"
        assert result.error == (
            "the schedule stopped after 1 of its 2 run(s) (OSError: [Errno 28] disk full while appending)"
        )
    assert [r.seed for r in schema.read_results(tmp_path / "results.jsonl")] == [0, 0]


def test_an_interrupted_schedule_marks_the_candidates_and_goes_on_up(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch, fail_at=2, error=KeyboardInterrupt())
    bench = session(tmp_path, speeds=Speeds(100))
    train, wide = plan(bench, tiny_task, "train", "wide")
    with pytest.raises(KeyboardInterrupt):
        bench.result(tiny_task, train)
    done = bench.results[(tiny_task.name, "wide")]
    assert done.status == "interrupted"
    assert done.error == "the schedule stopped after 0 of its 2 run(s) (KeyboardInterrupt)"
    assert bench.results[(tiny_task.name, "train")].stopped.startswith("the schedule stopped after 1 of its 2")


def test_a_benchmark_is_bounded_by_the_harness_s_own_limits_for_all_its_task_s_runs(tmp_path, tiny_task):
    """Three seeds of an h100-sized profile (300 s + 15 s grace + 120 s allowance + 300 s evaluation)
    for two candidates: far more than pytest-timeout's ini `timeout = 600`. The runner's clock rule:
    a limit that left out the grace would cut a run the runner still lets finish."""
    big = replace(tiny_task.profile("cpu"), budget_s=300, startup_allowance_s=120, eval_timeout_s=300)
    task = replace(tiny_task, profiles={"cpu": big})
    bench = session(tmp_path, seeds=3)
    plan(bench, task, "train", "wide")
    assert bench.time_limit(task) == 3 * 2 * (300 + 15 + 120 + 300 + RUN_SLACK_S) + TASK_SLACK_S
    tokens = session(tmp_path, seeds=3, max_tokens=1000)
    plan(tokens, task, "train")
    assert tokens.time_limit(task) == 3 * (300 * 10 + 120 + 300 + RUN_SLACK_S) + TASK_SLACK_S  # the runaway clock


# --- machine speed in time-mode verdicts --------------------------------------------------------


def stored_baseline(bench, task, steps=100, speed=100.0, source=None):
    fingerprint = bench.fingerprint(task.profile("cpu"))
    runs = [record(task=task.name, seed=s, value=2.0 + 0.01 * s, steps=steps, extra={"data_id": "d0"}) for s in (0, 1)]
    baselines.save_baseline(
        bench.options.baselines_dir,
        task.name,
        fingerprint,
        runs,
        calibration={"before": {"cpu": speed}, "after": {"cpu": speed}},
        source=source or files.file_digest(task.train_file),
    )


def test_time_mode_measures_the_machine_before_and_after_and_records_it(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch)
    bench = session(tmp_path, speeds=Speeds(100, 97), baseline="auto")
    stored_baseline(bench, tiny_task)
    (train,) = plan(bench, tiny_task, "train")
    result = bench.result(tiny_task, train)
    assert result.calibration == {"before": {"cpu": 100}, "after": {"cpu": 97}}
    assert [r.extra["calibration"] for r in schema.read_results(tmp_path / "results.jsonl")] == [{"cpu": 100}] * 2
    assert result.decision.verdict == "no difference"  # 3% apart: within calibrate.TOLERANCE
    [path] = bench.save_baselines()
    saved = baselines.Baseline.from_file(path)
    # the same file on the same data at the same speed: its runs joined the stored baseline's two
    assert saved.calibration == result.calibration and saved.steps == [100] * 4
    assert saved.source == files.file_digest(tiny_task.train_file)


@pytest.mark.parametrize(
    "speeds, stored_speed, steps, reason",
    [
        (
            (100, 70),
            100,
            100,
            f"the machine's speed changed during the runs: the cpu ran 30% slower than before the runs "
            f"(70.0 against 100.0 GFLOP/s): {DRIFT_ADVICE}",
        ),
        (
            (80, 80),
            100,
            100,
            f"the cpu ran 20% slower than when the stored baseline @abc1234 was recorded "
            f"(80.0 against 100.0 GFLOP/s): {SPEED_ADVICE}",
        ),
        ((130, 130), 100, 100, "the cpu ran 30% faster than when the stored baseline @abc1234 was recorded"),
        (
            (100, 100),
            100,
            70,
            f"the task's own train.py, unchanged since the stored baseline @abc1234, ran 70 steps "
            f"against 100 then (30% fewer): {SPEED_ADVICE}",
        ),
    ],
)
def test_a_time_budget_on_a_machine_of_another_speed_is_not_comparable(
    monkeypatch, tmp_path, tiny_task, speeds, stored_speed, steps, reason
):
    FakeRuns(monkeypatch, steps=steps)
    bench = session(tmp_path, speeds=Speeds(*speeds), baseline="auto", fail_on_regression=True)
    stored_baseline(bench, tiny_task, speed=stored_speed)
    train, wide = plan(bench, tiny_task, "train", "wide")
    bench.result(tiny_task, train)
    for name in ("train", "wide"):  # the task's own file measures the machine for every candidate
        decision = bench.results[(tiny_task.name, name)].decision
        assert decision.verdict == "not comparable" and decision.reason.startswith(reason), decision.reason
    assert len(bench.regressions()) == 2  # the gate cannot vouch for either


def test_the_step_count_is_a_speed_probe_only_while_the_task_s_file_is_unchanged(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch, steps=70)
    bench = session(tmp_path, baseline="auto")
    stored_baseline(bench, tiny_task, source="the digest of another train.py")
    (train,) = plan(bench, tiny_task, "train")
    assert bench.result(tiny_task, train).decision.verdict == "no difference"  # fewer steps may be the change's


def test_fixed_token_mode_is_not_measured_and_not_affected(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch, steps=70)
    bench = session(tmp_path, speeds=Speeds(), base_ref=None, max_tokens=1000, baseline="auto")
    stored_baseline(bench, tiny_task, speed=1.0)
    (train,) = plan(bench, tiny_task, "train")
    result = bench.result(tiny_task, train)
    assert result.calibration is None and result.decision.verdict == "no difference"
    assert all("calibration" not in r.extra for r in result.records)


def test_a_failed_calibration_is_said_and_does_not_stop_the_runs(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch)
    lines = []

    def broken(device):
        raise RuntimeError("the calibration exited with code 1 (ImportError)")

    bench = BenchmarkSession(
        Options(enabled=True, results_tsv=tmp_path / "results.tsv"), log=lines.append, measure_speed=broken
    )
    (train,) = plan(bench, tiny_task, "train")
    assert bench.result(tiny_task, train).status == "ok"
    assert "machine speed not measured: the calibration exited with code 1 (ImportError)" in lines[0]


def test_the_calibration_measures_a_fixed_matmul_loop_in_a_second_or_two():
    speed = calibrate.measure("cpu")
    assert list(speed) == ["cpu"] and speed["cpu"] > 0.1
    assert calibrate.mismatch({"cpu": 88.0}, {"cpu": 100.0}, "then") == ""  # within TOLERANCE
    assert calibrate.mismatch({"cpu": 80.0, "cuda": 500.0}, {"cpu": 100.0, "cuda": 1000.0}, "then") == (
        "the cuda ran 50% slower than then (500.0 against 1000.0 GFLOP/s)"
    )  # the device that departs most
    assert calibrate.mismatch({"cuda": 500.0}, {"cpu": 100.0}, "then") == ""  # nothing measured on both


# --- provenance and the base --------------------------------------------------------------------


def test_a_git_ref_candidate_records_the_ref_s_commit_not_the_checkout_s(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch)
    repo = commit_all(tiny_task.root.parent.parent)
    git(repo, "checkout", "-q", "-b", "idea")
    tiny_task.train_file.write_text(tiny_task.train_file.read_text().replace("std=0.02", "std=0.01"))
    git(repo, "commit", "-q", "-am", "an idea")
    idea = git(repo, "rev-parse", "--short=7", "idea").strip()
    git(repo, "checkout", "-q", "main")
    tiny_task.train_file.write_text(tiny_task.train_file.read_text() + "\n")  # the checkout is dirty
    [_, candidate] = resolve_candidates(tiny_task, ("idea",), tmp_path / ".ar")
    assert candidate.origin == f"git:idea@{idea}" and "std=0.01" in candidate.path.read_text()
    bench = session(tmp_path)
    bench.plan(tiny_task, tiny_task.profile("cpu"), candidate)
    records = bench.result(tiny_task, candidate).records
    assert {(r.commit, r.dirty) for r in records} == {(idea, False)}


def test_a_candidate_named_base_runs_as_itself_beside_the_base(monkeypatch, tmp_path, tiny_task):
    fake = FakeRuns(monkeypatch)
    commit_all(tiny_task.root.parent.parent)
    own = tiny_task.root / "candidates" / "base.py"
    own.write_text(tiny_task.train_file.read_text())
    bench = session(tmp_path, base_ref="HEAD")
    [candidate] = [c for c in resolve_candidates(tiny_task, (), tmp_path / ".ar") if c.path == own]
    assert candidate.name == "base"
    bench.plan(tiny_task, tiny_task.profile("cpu"), candidate)
    result = bench.result(tiny_task, candidate)
    assert {(name, path) for name, path, _ in fake.calls} == {
        ("base", own),
        (BASE, bench.results[(tiny_task.name, BASE)].candidate.path),
    }
    assert result.baseline == "base @HEAD" and result.label == "base"
    assert bench.results[(tiny_task.name, BASE)].label == "base @HEAD"
    assert [r.description for r in schema.read_results(tmp_path / "results.jsonl")] == ["base @HEAD", "base"] * 2
