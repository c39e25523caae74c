"""Records: appended atomically, never lost, readable after a crash; baselines per machine."""

import csv
import errno
import json
import math
import multiprocessing
import os
import statistics
import subprocess
from pathlib import Path

import pytest

from autoresearch_bench import files, git
from autoresearch_bench.storage import baselines, fingerprints, schema


def record(**overrides) -> schema.RunRecord:
    fields = dict(
        task="tiny",
        candidate="train",
        commit="abc1234",
        dirty=False,
        profile="cpu",
        seed=0,
        mode="time",
        budget=3.0,
        metric="val_bpb",
        value=2.5,
        status="ok",
        description="train",
        error="",
        seconds=3.0,
        tokens=1000,
        steps=10,
        peak_mem_gb=0.4,
        params=100,
        eval_seconds=1.0,
        overhead_seconds=2.0,
        machine="cpu-x",
        started_at="2026-11-26T00:00:00+00:00",
    )
    return schema.RunRecord(**{**fields, **overrides})


def _append_many(args):
    tsv, jsonl, worker = args
    for i in range(50):
        schema.append_results(
            record(seed=i, description=f"worker {worker} " + "x" * 200, extra={"pad": "y" * 3000}), tsv, jsonl
        )


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "results.tsv", tmp_path / "results.jsonl"


def rows(tsv):
    return list(csv.DictReader(open(tsv), delimiter="\t"))


def test_record_round_trips_through_a_dict():
    r = record(extra={"mfu": 0.4}, value=None)
    assert schema.RunRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert schema.RunRecord.from_dict({**r.to_dict(), "added_later": 1}) == r


def test_tsv_starts_with_autoresearchs_columns_and_a_crash_scores_zero(paths):
    tsv, jsonl = paths
    schema.append_results(record(dirty=True, description="tab\there\nnewline"), tsv, jsonl)
    schema.append_results(record(value=None, status="crash", error="boom"), tsv, jsonl)
    schema.append_results(record(value=9.0, status="violation", peak_mem_gb=81.26), tsv, jsonl)
    assert tsv.read_text().splitlines()[0] == "\t".join(schema.TSV_COLUMNS)
    assert schema.TSV_COLUMNS[:5] == ("commit", "val_bpb", "memory_gb", "status", "description")
    got = rows(tsv)
    assert [(r["commit"], r["val_bpb"], r["memory_gb"], r["status"]) for r in got] == [
        ("abc1234+dirty", "2.500000", "0.4", "ok"),
        ("abc1234", "0.000000", "0.4", "crash"),
        ("abc1234", "0.000000", "81.3", "violation"),
    ]
    assert (
        got[0]["description"] == "tab here newline" and got[0]["machine"] == "cpu-x" and got[0]["metric"] == "val_bpb"
    )
    assert [r.error for r in schema.read_results(jsonl)] == ["", "boom", ""]


def test_concurrent_appends_lose_and_tear_nothing(paths):
    tsv, jsonl = paths
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_append_many, [(tsv, jsonl, w) for w in range(8)], chunksize=1)
    lines = tsv.read_text().splitlines()
    assert lines.count("\t".join(schema.TSV_COLUMNS)) == 1 and lines[0] == "\t".join(schema.TSV_COLUMNS)
    assert len(lines) == 401 and all(len(line.split("\t")) == len(schema.TSV_COLUMNS) for line in lines)
    records = schema.read_results(jsonl)
    assert len(records) == 400 and all(r.extra["pad"] == "y" * 3000 for r in records)
    assert sorted((r.description[:8], r.seed) for r in records) == sorted(
        (f"worker {w}", i) for w in range(8) for i in range(50)
    )


def test_a_torn_last_line_is_skipped_and_the_next_row_starts_afresh(paths):
    tsv, jsonl = paths
    schema.append_results(record(), tsv, jsonl)
    with open(jsonl, "a") as f:
        f.write('{"task": "tiny", "cand')
    with pytest.warns(RuntimeWarning, match="skipping unreadable line 2"):
        assert len(schema.read_results(jsonl)) == 1
    schema.append_results(record(seed=1), tsv, jsonl)
    with pytest.warns(RuntimeWarning):
        assert [r.seed for r in schema.read_results(jsonl)] == [0, 1]


def test_reading_missing_results_gives_nothing(tmp_path):
    assert schema.read_results(tmp_path / "none.jsonl") == []


def test_full_disk_keeps_earlier_rows_and_says_what_to_do(paths, monkeypatch):
    tsv, jsonl = paths
    schema.append_results(record(), tsv, jsonl)
    before = tsv.read_bytes(), jsonl.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="disk full while appending to .*results.tsv.*free space and rerun") as e:
        schema.append_results(record(seed=1), tsv, jsonl)
    assert e.value.errno == errno.ENOSPC and "\n" not in str(e.value)
    monkeypatch.undo()
    assert (tsv.read_bytes(), jsonl.read_bytes()) == before


def test_a_disk_that_fills_mid_record_leaves_neither_file_half_written(paths, monkeypatch):
    tsv, jsonl = paths
    schema.append_results(record(), tsv, jsonl)
    before = tsv.read_bytes(), jsonl.read_bytes()
    real_write, calls = os.write, []

    def fills_up(fd, data):  # the TSV row fits, the JSON line gets half way
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data)
        if len(calls) == 2:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(OSError, match="results.jsonl"):
        schema.append_results(record(seed=1), tsv, jsonl)
    monkeypatch.undo()
    assert (tsv.read_bytes(), jsonl.read_bytes()) == before
    schema.append_results(record(seed=2), tsv, jsonl)
    assert [r.seed for r in schema.read_results(jsonl)] == [0, 2] and len(rows(tsv)) == 2


def test_file_digest_sees_any_change(tmp_path):
    path = tmp_path / "results.tsv"
    assert files.file_digest(path) is None
    path.write_text("a\n")
    first = files.file_digest(path)
    assert first == "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"
    path.write_text("b\n")
    assert files.file_digest(path) != first


def test_baseline_round_trips_and_matches_only_its_fingerprint(tmp_path):
    fp = {**fingerprints.machine_fingerprint("cpu"), "mode": "time", "budget": 45.0}
    runs = [record(value=2.5), record(seed=1, value=2.7), record(seed=2, value=None, status="crash")]
    path = baselines.save_baseline(tmp_path, "tiny", fp, runs)
    assert path == tmp_path / "tiny" / f"{fingerprints.fingerprint_id(fp)}.json"
    stored = json.loads(path.read_text())
    assert stored["seeds"] == [0, 1] and stored["n"] == 2 and stored["date"] and stored["fingerprint"] == fp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    found = baselines.load_baseline(tmp_path, "tiny", fp)
    assert found.values == [2.5, 2.7] and found.mean == pytest.approx(2.6) and found.n == 2
    assert found.std == pytest.approx(0.1414213562) and found.commit == "abc1234" and found.fingerprint == fp
    assert baselines.load_baseline(tmp_path, "tiny", {**fp, "budget": 60.0}) is None
    assert baselines.load_baseline(tmp_path, "tiny", {**fp, "torch": "0.0"}) is None
    assert baselines.load_baseline(tmp_path, "tiny", {**fp, "model": "Other CPU"}) is None
    assert baselines.load_baseline(tmp_path, "other", fp) is None


def test_a_baseline_keeps_the_machine_speed_the_steps_and_the_file_it_was_measured_with(tmp_path):
    fp = {**fingerprints.machine_fingerprint("cpu"), "mode": "time", "budget": 45.0}
    speed = {"before": {"cpu": 100.0}, "after": {"cpu": 98.0}}
    path = baselines.save_baseline(
        tmp_path, "tiny", fp, [record(steps=50), record(seed=1, steps=52)], calibration=speed, source="ab12"
    )
    found = baselines.Baseline.from_file(path)
    assert (found.steps, found.calibration, found.source) == ([50, 52], speed, "ab12")
    content = json.loads(path.read_text())
    for key in ("steps", "calibration", "source"):
        del content[key]
    path.write_text(json.dumps(content))  # a file from before they were stored
    old = baselines.Baseline.from_file(path)
    assert (old.steps, old.calibration, old.source) == (None, None, None) and old.values == [2.5, 2.5]


def test_saving_the_same_file_again_adds_its_runs_and_their_reruns_measure_the_paired_noise(tmp_path):
    fp = {**fingerprints.machine_fingerprint("cpu"), "mode": "tokens", "budget": 1000}
    seeded = [record(seed=s, value=v, extra={"data_id": "d1"}) for s, v in enumerate([2.50, 2.60, 2.70])]
    baselines.save_baseline(tmp_path, "tiny", fp, seeded, source="ab12")
    assert baselines.load_baseline(tmp_path, "tiny", fp).noise.pair_std is None  # no seed ran twice yet
    again = [
        record(seed=s, value=v, extra={"data_id": "d1"}, commit="def5678") for s, v in enumerate([2.51, 2.59, 2.70])
    ]
    baselines.save_baseline(tmp_path, "tiny", fp, again, source="ab12")
    both = baselines.load_baseline(tmp_path, "tiny", fp)
    assert both.seeds == [0, 1, 2, 0, 1, 2] and both.n == 6 and both.commit == "abc1234"
    # rerun differences 0.01, -0.01, 0: pair std = their root mean square (sqrt(2) x the pooled within-seed std)
    assert both.noise.pair_std == pytest.approx(math.sqrt((0.01**2 + 0.01**2) / 3), rel=1e-6)
    assert both.noise.seed_std == pytest.approx(statistics.stdev([2.505, 2.595, 2.70]))  # of the seeds' means
    # another file, or the same file on other data: a new baseline, the old runs gone
    baselines.save_baseline(tmp_path, "tiny", fp, again, source="cd34")
    assert baselines.load_baseline(tmp_path, "tiny", fp).n == 3
    baselines.save_baseline(tmp_path, "tiny", fp, seeded, source="cd34")
    assert baselines.load_baseline(tmp_path, "tiny", fp).n == 6
    baselines.save_baseline(tmp_path, "tiny", fp, [record(extra={"data_id": "d2"})], source="cd34")
    assert baselines.load_baseline(tmp_path, "tiny", fp).n == 1


def test_in_time_mode_runs_join_a_stored_baseline_only_at_the_same_machine_speed(tmp_path):
    fp = {**fingerprints.machine_fingerprint("cpu"), "mode": "time", "budget": 45.0}
    idle = {"before": {"cpu": 100.0}, "after": {"cpu": 98.0}}
    runs = [record(seed=s, extra={"data_id": "d1"}) for s in range(2)]
    baselines.save_baseline(tmp_path, "tiny", fp, runs, calibration=idle, source="ab12")
    baselines.save_baseline(
        tmp_path, "tiny", fp, runs, calibration={"before": {"cpu": 95.0}, "after": {"cpu": 97.0}}, source="ab12"
    )
    assert baselines.load_baseline(tmp_path, "tiny", fp).n == 4
    busy = {"before": {"cpu": 50.0}, "after": {"cpu": 52.0}}  # half the speed: its steps are not the same runs
    baselines.save_baseline(tmp_path, "tiny", fp, runs, calibration=busy, source="ab12")
    stored = baselines.load_baseline(tmp_path, "tiny", fp)
    assert stored.n == 2 and stored.calibration == busy


def test_a_broken_baseline_file_says_what_to_do(tmp_path):
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(ValueError, match="delete it"):
        baselines.Baseline.from_file(tmp_path / "b.json")
    with pytest.raises(ValueError) as missing:
        baselines.Baseline.from_file(tmp_path / "missing.json")
    assert "no such baseline file" in str(missing.value) and "--ar-save-baseline" in str(missing.value)
    assert "delete" not in str(missing.value)
    with pytest.raises(ValueError, match="no run with a value"):
        baselines.save_baseline(tmp_path, "tiny", fingerprints.machine_fingerprint("cpu"), [record(value=None)])


def test_machine_fingerprint_names_what_makes_scores_comparable():
    fp = fingerprints.machine_fingerprint("cpu", "cpu")
    assert set(fp) == {"device", "model", "torch", "cuda", "python", "profile"}
    assert fp["device"] == "cpu" and fp["model"] and fp["profile"] == "cpu"
    fid = fingerprints.fingerprint_id(fp)
    assert fid == fid.lower() and "/" not in fid and fid.startswith("cpu-") and fid.endswith("__cpu")


@pytest.mark.parametrize(
    "fp, expected",
    [
        (
            {
                "device": "cpu",
                "model": "AMD EPYC 7B13 64-Core Processor",
                "torch": "2.13.0",
                "cuda": "none",
                "profile": "cpu",
            },
            "cpu-amd-epyc-7b13__torch-2.13.0__cuda-none__cpu",
        ),
        (
            {
                "device": "cpu",
                "model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz",
                "torch": "2.5.1",
                "cuda": "12.4",
                "profile": "cpu",
                "mode": "time",
                "budget": 45.0,
            },
            "cpu-intel-xeon-platinum-8480__torch-2.5.1__cuda-12.4__cpu__time-45",
        ),
        (
            {
                "device": "cuda",
                "model": "NVIDIA H100 80GB HBM3",
                "torch": "2.11.0",
                "cuda": "13.0",
                "profile": "h100",
                "mode": "tokens",
                "budget": 1000000,
            },
            "cuda-nvidia-h100-80gb-hbm3__torch-2.11.0__cuda-13.0__h100__tokens-1000000",
        ),
    ],
)
def test_fingerprint_id_is_a_short_readable_file_name(fp, expected):
    assert fingerprints.fingerprint_id(fp) == expected


def test_git_state_outside_a_repository(tmp_path):
    assert git.state(tmp_path) == ("nogit", False)
    assert git.state(tmp_path / "missing" / "train.py") == ("nogit", False)


def test_git_state_reports_commit_and_dirt_but_ignores_untracked_files(tmp_path):
    def run(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    run("init", "-q")
    (tmp_path / "train.py").write_text("x = 1\n")
    run("add", "train.py")
    run("commit", "-q", "-m", "base")
    commit, dirty = git.state(tmp_path / "train.py")
    assert len(commit) == 7 and not dirty
    (tmp_path / "results.tsv").write_text("untracked\n")
    assert git.state(tmp_path) == (commit, False)
    (tmp_path / "train.py").write_text("x = 2\n")
    assert git.state(tmp_path) == (commit, True)


def test_check_writable_says_why_rows_could_not_be_appended_and_leaves_nothing_behind(tmp_path):
    assert files.check_writable(tmp_path / "results.tsv") == ""  # a new file in a folder that exists
    assert files.check_writable(tmp_path / "new" / "deeper" / "results.tsv") == ""  # folders made later
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "results.tsv").write_text("commit\n")
    assert files.check_writable(tmp_path / "results.tsv") == ""
    assert (tmp_path / "results.tsv").read_text() == "commit\n"
    (tmp_path / "a_file").write_text("")
    assert files.check_writable(tmp_path / "a_file" / "results.tsv").startswith(
        f"cannot write {tmp_path / 'a_file' / 'results.tsv'} ("
    )
    full = files.check_writable(tmp_path / "results.tsv", min_free=1 << 60)  # more than any disk has
    assert full.startswith("only ") and full.endswith(
        f"MB free for {tmp_path / 'results.tsv'}, at least 1099511627776 MB needed"
    )


def test_the_readme_lists_the_results_columns_as_written():
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert f"has {len(schema.TSV_COLUMNS)} tab-separated columns: `{' '.join(schema.TSV_COLUMNS[:5])}`" in readme
    assert f"then `{' '.join(schema.TSV_COLUMNS[5:])}`" in readme
