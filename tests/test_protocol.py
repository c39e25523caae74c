"""The protocol where the harness's processes meet: every spec survives its trip as JSON, typed, and a
report of a kind the protocol does not name is refused at the sender."""

import dataclasses
import json
import os

import pytest

from autoresearch_bench.protocol import (
    KINDS,
    SPECS,
    CheckSpec,
    Emitter,
    FeederSpec,
    ModelSpec,
    ScorerSpec,
    SharedSpec,
    TrainSpec,
    read_spec,
    write_spec,
)

EXAMPLES = [
    TrainSpec(
        candidate="/scratch/candidate.py",
        cfg={"depth": 2},
        device="cpu",
        seed=3,
        budget_s=5.0,
        max_tokens=None,
        latest_start=12.5,
        file_defaults={"device_batch_size": 8},
    ),
    FeederSpec(train_tokens="/cache/train.npy", seed=3, crop=False, budget_s=5.0, max_tokens=4096, latest_start=1.0),
    ModelSpec(
        candidate="/c.py",
        weights="/w.pt",
        cfg={},
        device="cpu",
        seed=0,
        max_rows=4,
        seq_len=8,
        vocab=16,
        inputs=SharedSpec(5, 128, "cpu"),
        logits=SharedSpec(6, 2048, "cpu"),
    ),
    ScorerSpec(
        candidate="/c.py",
        cfg={},
        device="cpu",
        seed=0,
        rows="/rows.npz",
        tokenizer_dir="/tok",
        eval_batch_size=8,
        eval_split="val",
        metric="val_bpb",
        max_params=None,
        sandbox_level="off",
        sandbox_prefix=("unshare", "--fork"),
        sandbox_uid=1 << 20,
        tmp="/tmp/m",
    ),
    CheckSpec(candidate="/c.py", cfg={}, seed=0, allowed_imports=("torch", "math"), max_params=1000),
]


def test_every_spec_kind_has_an_example():
    assert {type(s) for s in EXAMPLES} == set(SPECS)


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: type(s).__name__)
def test_a_spec_comes_back_equal_and_its_file_is_gone(tmp_path, spec):
    path = tmp_path / "spec.json"
    write_spec(path, spec)
    assert json.loads(path.read_text())["type"] == type(spec).__name__
    back = read_spec(path)
    assert back == spec and type(back) is type(spec) and not path.exists()
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.seed = 1  # frozen: what a process was told cannot drift while it runs


def test_reports_are_json_lines_of_the_protocol_s_kinds_only():
    read, write = os.pipe()
    try:
        emit = Emitter(fd=write)
        emit("progress", step=0, loss=1.5)
        with pytest.raises(ValueError, match="report kind 'progres' is not one of the protocol's"):
            emit("progres", step=1)
        os.close(write)
        lines = os.read(read, 4096).decode().splitlines()
    finally:
        os.close(read)
    assert [json.loads(line) for line in lines] == [{"kind": "progress", "step": 0, "loss": 1.5}]
    assert "progress" in KINDS and "progres" not in KINDS
