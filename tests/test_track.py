"""The experiment tracker (--ar-tensorboard), read back with TensorBoard's own reader, offline."""

import pytest
from test_htmlreport import CurvedRuns
from test_plugin import AGAINST_HEAD, FAST, add_candidate, commit_project, project, usage_error  # noqa: F401 (fixture)

from autoresearch_bench import plugin


def test_each_run_s_loss_curve_metric_settings_and_verdict_are_tensorboard_events(pytester, project, monkeypatch):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the track extra: pip install 'autoresearch-bench[track]'",
    )
    commit_project(project)
    add_candidate(project, "slow_lr")
    CurvedRuns(monkeypatch)
    run = pytester.runpytest_inprocess(
        *AGAINST_HEAD,
        "--ar-tensorboard",
        "tb",
        *FAST,
    )
    run.assert_outcomes(passed=3, deselected=6)
    run.stdout.fnmatch_lines(["*TensorBoard: 6 runs in tb"])  # base, train and slow_lr, two seeds each
    folders = sorted(p.parent for p in (project / "tb").rglob("events.out.tfevents.*"))
    assert sorted({(f.parent.name, f.name.split("-")[0]) for f in folders}) == [
        (c, f"seed{s}") for c in ("base_HEAD", "slow_lr", "train") for s in (0, 1)
    ]
    [slow_seed1] = {f for f in folders if f.parent.name == "slow_lr" and f.name.startswith("seed1")}
    events = accumulator.EventAccumulator(str(slow_seed1), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == list(range(20)) and loss[0].value == pytest.approx(6.01)
    assert loss[-1].value == pytest.approx(6.01 - 19 * 0.15) and loss[-1].wall_time > loss[0].wall_time
    [metric] = events.Scalars("val_bpb")
    assert metric.value == pytest.approx(2.51) and metric.step == 100
    text = lambda tag: events.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text("verdict").startswith("worse against the base @HEAD: Δ +0.5000")
    assert (
        "candidate: slow_lr" in text("settings") and "seed: 1" in text("settings") and "mode: time" in text("settings")
    )
    assert events.Scalars("hparam/val_bpb")[0].value == pytest.approx(2.51)


def test_without_tensorboard_the_option_stops_the_session_with_what_to_install(pytester, project, monkeypatch):
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)
    line = usage_error(
        pytester.runpytest_inprocess("--autoresearch", "tasks", "--ar-tensorboard", "tb", *FAST), project
    )
    assert line == "--ar-tensorboard needs the tensorboard package: pip install 'autoresearch-bench[track]'"
