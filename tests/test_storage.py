"""Records: appended atomically, never lost, readable after a crash; baselines per machine."""
import csv
import errno
import json
import multiprocessing
import os

import pytest

from autoresearch_bench import storage


def record(**overrides) -> storage.RunRecord:
    fields = dict(task="tiny", candidate="train", commit="abc1234", dirty=False, profile="cpu", seed=0,
                  mode="time", budget=3.0, metric="val_bpb", value=2.5, status="ok", description="train",
                  error="", seconds=3.0, tokens=1000, steps=10, peak_mem_gb=0.4, params=100, eval_seconds=1.0,
                  overhead_seconds=2.0, machine="cpu-x", started_at="2026-11-26T00:00:00+00:00")
    return storage.RunRecord(**{**fields, **overrides})


def _append_many(args):
    tsv, jsonl, worker = args
    for i in range(50):
        storage.append_results(record(seed=i, description=f"worker {worker}"), tsv, jsonl)


def test_tsv_starts_with_autoresearchs_columns_and_a_crash_scores_zero(tmp_path):
    tsv, jsonl = tmp_path / "results.tsv", tmp_path / "results.jsonl"
    storage.append_results(record(), tsv, jsonl)
    storage.append_results(record(value=None, status="crash", error="boom"), tsv, jsonl)
    rows = list(csv.DictReader(open(tsv), delimiter="\t"))
    assert tuple(rows[0]) == storage.TSV_COLUMNS
    assert [(r["val_bpb"], r["status"]) for r in rows] == [("2.500000", "ok"), ("0.000000", "crash")]
    assert [r.error for r in storage.read_results(jsonl)] == ["", "boom"]


def test_concurrent_appends_lose_and_tear_nothing(tmp_path):
    tsv, jsonl = tmp_path / "results.tsv", tmp_path / "results.jsonl"
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_append_many, [(tsv, jsonl, w) for w in range(8)])
    lines = tsv.read_text().splitlines()
    assert lines.count("\t".join(storage.TSV_COLUMNS)) == 1 and len(lines) == 401
    assert all(len(line.split("\t")) == len(storage.TSV_COLUMNS) for line in lines)
    assert len(storage.read_results(jsonl)) == 400


def test_a_torn_last_line_is_skipped(tmp_path, capsys):
    tsv, jsonl = tmp_path / "results.tsv", tmp_path / "results.jsonl"
    storage.append_results(record(), tsv, jsonl)
    with open(jsonl, "a") as f:
        f.write('{"task": "tiny", "cand')
    assert len(storage.read_results(jsonl)) == 1
    assert "skipping unreadable line 2" in capsys.readouterr().err


def test_full_disk_keeps_earlier_rows_and_says_what_to_do(tmp_path, monkeypatch):
    tsv, jsonl = tmp_path / "results.tsv", tmp_path / "results.jsonl"
    storage.append_results(record(), tsv, jsonl)
    before = tsv.read_bytes()
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match="disk full while appending to .*free space and rerun"):
        storage.append_results(record(seed=1), tsv, jsonl)
    monkeypatch.undo()
    assert tsv.read_bytes() == before


def test_baseline_round_trips_and_matches_only_its_fingerprint(tmp_path):
    fp = {**storage.machine_fingerprint("cpu"), "mode": "time", "budget": 45.0}
    path = storage.save_baseline(tmp_path, "tiny", fp, [record(value=2.5), record(seed=1, value=2.7)])
    assert path.parent.name == "tiny" and json.loads(path.read_text())["n"] == 2
    found = storage.load_baseline(tmp_path, "tiny", fp)
    assert found.values == (2.5, 2.7) and found.mean == pytest.approx(2.6) and found.commit == "abc1234"
    assert storage.load_baseline(tmp_path, "tiny", {**fp, "budget": 60.0}) is None
    assert storage.load_baseline(tmp_path, "tiny", {**fp, "torch": "0.0"}) is None


def test_fingerprint_id_is_a_readable_file_name():
    fid = storage.fingerprint_id({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "cuda": "13.0",
                                  "profile": "h100", "mode": "tokens", "budget": 1000000})
    assert fid == "nvidia-h100-80gb-hbm3__torch-2.11.0__cuda-13.0__h100__tokens-1000000"


def test_git_state_outside_a_repository(tmp_path):
    assert storage.git_state(tmp_path) == ("nogit", False)
