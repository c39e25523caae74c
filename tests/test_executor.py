"""Executors: local slots, xdist workers pinned one GPU each, Ray tasks; same records, same files."""

import csv
import json
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gitrepo import commit_all
from test_storage import record

from autoresearch_bench import executor as ex
from autoresearch_bench import stats
from autoresearch_bench.candidate import BASE, Candidate
from autoresearch_bench.process import child_env
from autoresearch_bench.session import BenchmarkSession, Options
from autoresearch_bench.storage import appends, baselines, schema

TINY = Path(__file__).parent / "tiny_task"
FAST = ["--ar-tokens", "16384", "-p", "no:cacheprovider", "-k", "benchmark"]  # fixed tokens: runs share the machine


# --- unit: GPU pinning, names, errors ------------------------------------------------------------


def test_each_worker_is_pinned_to_its_gpu_modulo_the_gpu_count(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test, whatever pin_gpu sets
    assert ex.pin_gpu("gw3", ["4", "5"]) == "5"
    assert ex.visible_gpus() == ["5"]  # the pin is what this process and its children see
    assert ex.pin_gpu("gw4", ["4", "5"]) == "4"
    assert ex.XdistExecutor(worker="gw1", gpus=["0", "1", "2"]).label == "xdist:gw1:gpu1"


def test_xdist_workers_that_share_a_gpu_each_fit_their_share_of_it(monkeypatch, tiny_task):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "5")  # five workers on two GPUs: gw0, gw2, gw4 on the first
    assert [ex.XdistExecutor(worker=f"gw{n}", gpus=["0", "1"]).gpu_sharing for n in range(5)] == [3, 2, 3, 2, 3]
    fake = FakeRuns(monkeypatch)
    profile = replace(tiny_task.profile("cpu"), device="cuda")
    ex.XdistExecutor(worker="gw1", gpus=["0", "1"]).map(
        [ex.Run(tiny_task, profile, Candidate("c", tiny_task.train_file), 0)]
    )
    assert fake.sharing == [2]


def test_no_worker_or_no_gpu_means_no_pin(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert ex.pin_gpu(None, ["0", "1"]) is None and ex.pin_gpu("gw1", []) is None
    assert ex.visible_gpus() == ["7"]
    assert ex.XdistExecutor(worker="gw0", gpus=[]).label == "xdist:gw0"


def test_bad_executor_requests_say_what_to_do(monkeypatch):
    with pytest.raises(ex.ExecutorError, match="unknown executor 'gpu'; choose one of local, xdist, ray"):
        ex.make_executor("gpu")
    with pytest.raises(ex.ExecutorError, match="slots must be at least 1"):
        ex.make_executor("local", slots=0)
    with pytest.raises(ex.ExecutorError, match="start more workers with pytest -n N"):
        ex.make_executor("xdist", slots=2)
    with pytest.raises(ex.ExecutorError, match="is not gw<N>"):
        ex.pin_gpu("controller", ["0"])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ex.ExecutorError, match=r"pip install autoresearch-bench\[ray\]"):
        ex.make_executor("ray")


# --- scheduling, with run_candidate replaced by a timed fake --------------------------------------


class FakeRuns:
    """Stands in for run_candidate: sleeps (later submissions finish first), counts runs in flight,
    scores base/train at 2.0 and anything else at 2.5 (plus a little per seed)."""

    def __init__(self, monkeypatch, data_id: str = "d0"):
        self.lock, self.running, self.peak, self.calls = threading.Lock(), 0, 0, []
        self.data_id = data_id  # the data.PreparedData.data_id the records say they were scored on
        self.gpus_busy, self.gpu_clash = [], False  # GPUs of the runs in flight; one GPU taken twice
        self.sharing = []  # how many runs each was told share its GPU
        monkeypatch.setattr(ex, "run_candidate", self)

    def __call__(self, task, profile, candidate, seed, *, on_progress=None, log=print, **options):
        gpu = options.get("gpu")
        with self.lock:
            self.calls.append((candidate.name, seed, gpu))
            self.sharing.append(options.get("gpu_sharing", 1))
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.gpu_clash |= gpu is not None and gpu in self.gpus_busy
            self.gpus_busy.append(gpu)
            order = len(self.calls)
        time.sleep(0.5 / order)
        if on_progress:
            on_progress({"step": 1})
        with self.lock:
            self.running -= 1
            self.gpus_busy.remove(gpu)
        record = self.record(task.name, candidate.name, profile.name, task.metric, seed)
        record.extra["data_id"] = self.data_id
        return record

    @staticmethod
    def record(task: str, candidate: str, profile: str, metric: str, seed: int) -> schema.RunRecord:
        value = (2.0 if candidate in (BASE, "train") else 2.5) + 0.01 * seed
        one_second = dict(budget=1.0, seconds=1.0, tokens=100, steps=1, peak_mem_gb=0.1, params=10)
        return record(
            task=task,
            candidate=candidate,
            profile=profile,
            metric=metric,
            seed=seed,
            value=value,
            description=candidate,
            eval_seconds=0.1,
            overhead_seconds=0.1,
            **one_second,
        )


@pytest.mark.parametrize("slots", [1, 3])
def test_local_slots_run_at_once_and_records_come_back_in_order(monkeypatch, tiny_task, slots):
    fake = FakeRuns(monkeypatch)
    profile = tiny_task.profile("cpu")
    runs = [ex.Run(tiny_task, profile, Candidate(f"c{i}", tiny_task.train_file), seed=i) for i in range(4)]
    seen, progress = [], []
    records = ex.make_executor("local", slots=slots).map(
        runs,
        on_record=lambda run, r: seen.append((run.candidate.name, r.candidate)),
        on_progress=lambda run, p: progress.append(run.seed),
    )
    assert [r.candidate for r in records] == ["c0", "c1", "c2", "c3"]
    assert seen == [(f"c{i}", f"c{i}") for i in range(4)]  # on_record in order, with its own run
    assert fake.peak == slots and sorted(progress) == [0, 1, 2, 3]
    assert {r.extra["executor"] for r in records} == {"local"}
    assert {gpu for _, _, gpu in fake.calls} == {None}  # a cpu profile is never pinned to a GPU


def test_local_slots_on_several_gpus_run_one_experiment_per_gpu_at_a_time(monkeypatch, tiny_task):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    fake = FakeRuns(monkeypatch)
    profile = replace(tiny_task.profile("cpu"), device="cuda")
    runs = [ex.Run(tiny_task, profile, Candidate(f"c{i}", tiny_task.train_file), seed=i) for i in range(5)]
    records = ex.make_executor("local", slots=2).map(runs)
    assert fake.peak == 2 and not fake.gpu_clash
    assert {gpu for _, _, gpu in fake.calls} == {"3", "5"}
    assert {r.candidate: r.extra["gpu"] for r in records} == {name: gpu for name, _, gpu in fake.calls}


def test_a_pinned_run_s_workers_see_only_their_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert child_env(gpu="2")["CUDA_VISIBLE_DEVICES"] == "2"
    assert child_env()["CUDA_VISIBLE_DEVICES"] == "0,1,2"  # unpinned: what the harness sees


def test_local_slots_on_one_gpu_share_it_unpinned(monkeypatch, tiny_task):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    fake = FakeRuns(monkeypatch)
    profile = replace(tiny_task.profile("cpu"), device="cuda")
    runs = [ex.Run(tiny_task, profile, Candidate(f"c{i}", tiny_task.train_file), seed=i) for i in range(3)]
    ex.make_executor("local", slots=3).map(runs)
    assert fake.peak == 3 and {gpu for _, _, gpu in fake.calls} == {None}
    assert fake.sharing == [3, 3, 3]  # each plans its device batch for a third of the GPU's memory


def _session(tmp_path, tiny_task, executor, **options):
    opts = Options(
        **{
            "enabled": True,
            "seeds": 2,
            "results_tsv": tmp_path / "results.tsv",
            "baseline": "none",
            "scratch": tmp_path / ".ar",
            **options,
        }
    )
    # a machine of constant speed: these tests are about scheduling and decisions (test_session.py: speed)
    return BenchmarkSession(opts, log=lambda m: None, executor=executor, measure_speed=lambda device: {"cpu": 1.0})


def test_session_submits_the_interleaved_schedule_and_appends_in_that_order(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch)
    session = _session(tmp_path, tiny_task, ex.make_executor("local", slots=2))
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    candidates = [Candidate("train", train), Candidate("wide", train)]
    for c in candidates:
        session.plan(tiny_task, profile, c)
    assert [r.seed for r in session.result(tiny_task, candidates[0]).records] == [0, 1]
    assert [(r.description, r.seed) for r in schema.read_results(tmp_path / "results.jsonl")] == [
        ("train", 0),
        ("wide", 0),
        ("train", 1),
        ("wide", 1),
    ]
    assert [r.seed for r in session.result(tiny_task, candidates[1]).records] == [0, 1]  # nothing run twice


def test_per_item_executor_runs_only_its_candidate_and_the_base_once(monkeypatch, tmp_path, tiny_task):
    fake = FakeRuns(monkeypatch)
    commit_all(tmp_path)
    session = _session(tmp_path, tiny_task, ex.XdistExecutor(worker="gw0", gpus=[]), base_ref="HEAD", min_effect=0.1)
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    worse, same = Candidate("worse", train), Candidate("train", train)
    for c in (same, worse):
        session.plan(tiny_task, profile, c)
    assert session.result(tiny_task, worse).decision.verdict == "worse"
    assert [call[:2] for call in fake.calls] == [
        (BASE, 0),
        ("worse", 0),
        (BASE, 1),
        ("worse", 1),
    ]  # not train: another worker's
    assert session.result(tiny_task, same).decision.verdict == "no difference"
    assert [call[:2] for call in fake.calls[4:]] == [("train", 0), ("train", 1)]  # the base is not measured again
    assert {r.extra["executor"] for r in session.results[(tiny_task.name, "worse")].records} == {"xdist:gw0"}
    # what a worker sends, the controller merges into the same result
    copy = _session(tmp_path, tiny_task, ex.make_executor("local"))
    merged = copy.merge_report(tiny_task, json.loads(json.dumps(session.to_report(tiny_task, "worse"))))
    original = session.results[(tiny_task.name, "worse")]
    assert merged.records == original.records and merged.decision == original.decision
    assert merged.baseline == original.baseline == "base @HEAD"


# --- end to end through pytest: xdist workers, Ray tasks -------------------------------------------


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    shutil.copytree(TINY, pytester.path / "tasks" / "tiny")
    candidates = pytester.path / "tasks" / "tiny" / "candidates"
    candidates.mkdir(exist_ok=True)
    source = (pytester.path / "tasks" / "tiny" / "train.py").read_text()
    (candidates / "slow_lr.py").write_text(source.replace('lr=ctx.cfg["lr"]', 'lr=ctx.cfg["lr"] * 0.01'))
    return pytester.path


def _rows_and_table(project: Path, run) -> tuple[list[dict], list[str]]:
    with open(project / "results.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert all(None not in row and len(row) == len(schema.TSV_COLUMNS) for row in rows)  # no torn rows
    table = run.stdout.str().split("autoresearch benchmark")[-1]
    return rows, [line.split()[1] for line in table.splitlines() if line.startswith("tiny")]


def test_two_xdist_workers_run_one_candidate_each_and_the_controller_prints_the_table(pytester, project, monkeypatch):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed: pip install autoresearch-bench[xdist]")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the controller's GPU list; a CPU torch ignores it
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "-n", "2", "--ar-executor", "xdist", *FAST)
    run.assert_outcomes(passed=2)
    rows, ranked = _rows_and_table(project, run)
    assert sorted(r["description"] for r in rows) == ["slow_lr", "train"] and {r["status"] for r in rows} == {"ok"}
    assert ranked == ["train", "slow_lr"]
    workers = {r.candidate: r.extra["executor"] for r in schema.read_results(project / "results.jsonl")}
    assert sorted(workers.values()) == ["xdist:gw0:gpu3", "xdist:gw1:gpu5"]  # one worker, one GPU each


def test_xdist_executor_and_dash_n_go_together(pytester, project):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed: pip install autoresearch-bench[xdist]")
    alone = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-executor", "xdist", *FAST)
    alone.stderr.fnmatch_lines(["*--ar-executor xdist runs one pytest-xdist worker per GPU: add -n N*"])
    assert alone.ret != 0 and not (project / "results.tsv").exists()


def test_ray_runs_each_experiment_as_a_task_on_a_local_cluster(pytester, project):
    pytest.importorskip("ray", reason="Ray is not installed: pip install autoresearch-bench[ray]")
    pytester.makeconftest(
        "import ray\n\ndef pytest_configure(config):\n    ray.init(num_cpus=2, include_dashboard=False)\n"
    )
    run = pytester.runpytest_subprocess("--autoresearch", "tasks", "--ar-executor", "ray", *FAST)
    run.assert_outcomes(passed=2)
    rows, ranked = _rows_and_table(project, run)
    assert [r["description"] for r in rows] == ["train", "slow_lr"]  # submission order, though run at once
    assert ranked == ["train", "slow_lr"] and {r["status"] for r in rows} == {"ok"}
    assert {r.extra["executor"] for r in schema.read_results(project / "results.jsonl")} == {"ray"}


def test_rows_that_concurrent_runs_append_are_not_tampering_but_anything_else_is(tmp_path):
    tsv, jsonl = tmp_path / "results.tsv", tmp_path / "results.jsonl"
    fresh = appends.results_mark(tsv)  # before the first row: no file yet
    record = FakeRuns.record("tiny", "train", "cpu", "val_bpb", seed=0)
    schema.append_results(record, tsv, jsonl)
    marks = {p: appends.results_mark(p) for p in (tsv, jsonl)}
    schema.append_results(FakeRuns.record("tiny", "wide", "cpu", "val_bpb", seed=1), tsv, jsonl)  # another worker
    assert appends.appended_only(tsv, fresh) and all(appends.appended_only(p, m) for p, m in marks.items())
    with open(tsv, "a") as f:  # a forged row
        f.write(record.tsv_row().replace("train", "forged"))
    assert not appends.appended_only(tsv, marks[tsv])
    jsonl.write_text(jsonl.read_text().replace('"seed": 0', '"seed": 9'))  # an edited row
    assert not appends.appended_only(jsonl, marks[jsonl])


@pytest.mark.parametrize("data_id, verdict", [("d0", "no difference"), ("other", "not comparable")])
def test_a_stored_baseline_decides_only_runs_scored_on_its_data(monkeypatch, tmp_path, tiny_task, data_id, verdict):
    FakeRuns(monkeypatch, data_id=data_id)
    session = _session(
        tmp_path,
        tiny_task,
        ex.make_executor("local"),
        baseline="auto",
        baselines_dir=tmp_path / "baselines",
        fail_on_regression=True,
    )
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    stored = [FakeRuns.record(tiny_task.name, "train", "cpu", tiny_task.metric, seed) for seed in (0, 1)]
    for one in stored:
        one.extra["data_id"] = "d0"
    baselines.save_baseline(tmp_path / "baselines", tiny_task.name, session.fingerprint(profile), stored)
    session.plan(tiny_task, profile, Candidate("train", train))
    result = session.result(tiny_task, Candidate("train", train))
    assert result.decision.verdict == verdict
    assert (result in session.regressions()) == (verdict == "not comparable")  # the gate cannot vouch for it
    if verdict == "not comparable":
        assert "data id d0, this run other" in result.decision.reason and "--ar-save-baseline" in result.decision.reason


@pytest.mark.parametrize("stored_seeds, verdict", [(True, "better"), (False, "no difference")])
def test_the_gate_pairs_runs_by_seed_with_a_stored_baseline(monkeypatch, tmp_path, tiny_task, stored_seeds, verdict):
    """Seeds far apart and a candidate 0.05 better on each: the paired test sees the shift; without
    the baseline's seeds (files from before they were stored) Welch's test sees only the spread."""
    spread = {0: 0.0, 1: 0.3, 2: -0.3}
    FakeRuns(monkeypatch)
    plain = FakeRuns.record
    monkeypatch.setattr(
        FakeRuns,
        "record",
        staticmethod(
            lambda task, candidate, profile, metric, seed: replace(
                plain(task, candidate, profile, metric, seed), value=2.0 + spread[seed]
            )
        ),
    )
    session = _session(
        tmp_path,
        tiny_task,
        ex.make_executor("local"),
        seeds=3,
        baseline="auto",
        baselines_dir=tmp_path / "baselines",
        min_effect=0.01,
    )
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    stored = [
        replace(
            plain(tiny_task.name, "train", "cpu", tiny_task.metric, seed),
            value=2.05 + spread[seed],
            extra={"data_id": "d0"},
        )
        for seed in spread
    ]
    path = baselines.save_baseline(tmp_path / "baselines", tiny_task.name, session.fingerprint(profile), stored)
    if not stored_seeds:
        content = json.loads(path.read_text())
        del content["seeds"]
        path.write_text(json.dumps(content))
    session.plan(tiny_task, profile, Candidate("train", train))
    decision = session.result(tiny_task, Candidate("train", train)).decision
    assert decision.verdict == verdict and decision.delta == pytest.approx(-0.05)
    assert ("paired t" if stored_seeds else "Welch") in decision.reason


def _scored(monkeypatch, values) -> FakeRuns:
    """FakeRuns whose candidate `name` scores values(name, seed)."""
    fake, plain = FakeRuns(monkeypatch), FakeRuns.record
    monkeypatch.setattr(
        FakeRuns,
        "record",
        staticmethod(
            lambda task, candidate, profile, metric, seed: replace(
                plain(task, candidate, profile, metric, seed), value=values(candidate, seed)
            )
        ),
    )
    return fake


def test_auto_seeds_add_seeds_only_while_the_question_is_open(monkeypatch, tmp_path, tiny_task):
    """--ar-seeds auto: 3 seeds each; a clear regression is decided there; a small noisy difference
    gets one more seed at a time (and the base beside it) until it is settled or has 8."""
    wiggle = [0.004, -0.006, 0.005, -0.003, 0.006, -0.005, 0.002, -0.004]
    seed_effect = lambda seed: 0.05 * (seed % 3)
    fake = _scored(
        monkeypatch,
        lambda name, seed: 2.0 + seed_effect(seed) + {BASE: 0.0, "worse": 0.5, "close": 0.004 + wiggle[seed]}[name],
    )
    commit_all(tmp_path)
    session = _session(tmp_path, tiny_task, ex.make_executor("local"), seeds="auto", base_ref="HEAD", min_effect=0.01)
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    worse, close = Candidate("worse", train), Candidate("close", train)
    for c in (worse, close):
        session.plan(tiny_task, profile, c)
    decided = session.result(tiny_task, worse)
    runs = lambda name: [seed for n, seed, _ in fake.calls if n == name]
    assert decided.decision.verdict == "worse" and runs("worse") == [0, 1, 2]
    assert runs("close") == runs(BASE) == list(range(6))  # by 6 seeds, Δ is inside ±0.01 at 95%: settled
    settled = session.results[(tiny_task.name, "close")].decision
    assert settled.verdict == "no difference" and not settled.open
    assert settled.test == "paired t, seeds 0, 1, 2, 3, 4, 5"


def test_auto_seeds_stop_where_the_stored_baseline_has_no_seed_to_pair_with(monkeypatch, tmp_path, tiny_task):
    fake = _scored(monkeypatch, lambda name, seed: 2.0 + [0.004, -0.006, 0.005][seed % 3])
    session = _session(
        tmp_path,
        tiny_task,
        ex.make_executor("local"),
        seeds="auto",
        baseline="auto",
        baselines_dir=tmp_path / "baselines",
        min_effect=0.01,
    )
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    stored = [
        replace(FakeRuns.record(tiny_task.name, "train", "cpu", tiny_task.metric, seed), value=2.0 + 0.001 * seed)
        for seed in (0, 1, 2)
    ]
    baselines.save_baseline(tmp_path / "baselines", tiny_task.name, session.fingerprint(profile), stored)
    session.plan(tiny_task, profile, Candidate("train", train))
    decision = session.result(tiny_task, Candidate("train", train)).decision
    assert [seed for _, seed, _ in fake.calls] == [0, 1, 2] and not decision.open


def test_candidates_of_a_task_are_one_holm_family(monkeypatch, tmp_path, tiny_task):
    _scored(
        monkeypatch,
        lambda name, seed: (
            2.0 + 0.1 * seed + {BASE: 0.0, "a": 0.3, "b": 0.0, "c": -0.3}[name] + 0.001 * (seed % 2) * (name != BASE)
        ),
    )
    commit_all(tmp_path)
    session = _session(tmp_path, tiny_task, ex.make_executor("local"), seeds=3, base_ref="HEAD", min_effect=0.01)
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    for name in "abc":
        session.plan(tiny_task, profile, Candidate(name, train))
    session.result(tiny_task, Candidate("a", train))
    decisions = {name: session.results[(tiny_task.name, name)].decision for name in "abc"}
    assert {n: d.verdict for n, d in decisions.items()} == {"a": "worse", "b": "no difference", "c": "better"}
    assert all("Holm over 3" in d.reason for d in decisions.values() if d.verdict != "no difference")


def test_a_nan_in_a_stored_baseline_is_an_error_that_names_it_never_a_verdict(monkeypatch, tmp_path, tiny_task):
    FakeRuns(monkeypatch)
    session = _session(
        tmp_path, tiny_task, ex.make_executor("local"), baseline="auto", baselines_dir=tmp_path / "baselines"
    )
    profile, (train,) = tiny_task.profile("cpu"), tiny_task.candidate_files()
    stored = [FakeRuns.record(tiny_task.name, "train", "cpu", tiny_task.metric, seed) for seed in (0, 1)]
    path = baselines.save_baseline(tmp_path / "baselines", tiny_task.name, session.fingerprint(profile), stored)
    path.write_text(path.read_text().replace('"values": [\n    2.0,', '"values": [\n    NaN,'))
    session.plan(tiny_task, profile, Candidate("train", train))
    with pytest.raises(stats.NotFinite, match="baseline value 1 of 2 is nan, not a finite number"):
        session.result(tiny_task, Candidate("train", train))
