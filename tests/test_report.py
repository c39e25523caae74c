"""Reports that tools read (--ar-json, compare on them) and the plugin's pytest and CI conventions:
ini options, hooks, the report header, an uncalled ar_benchmark, no torch in unrelated sessions,
JUnit properties and the GitHub step summary. Runs are stand-ins (FakeRuns) unless a test is about
what a real run records."""

import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_plugin import AGAINST_HEAD, FAST, add_candidate, commit_project, project, results, usage_error  # noqa: F401 (fixture)
from test_session import FakeRuns
from test_storage import record

from autoresearch_bench import cli, report, runner
from autoresearch_bench.compare import CompareError, compare
from autoresearch_bench.storage import baselines, fingerprints, schema

HOOKS = """
def pytest_autoresearch_update_machine_info(config, machine_info):
    machine_info["rack"] = "r7"

def pytest_autoresearch_update_record(config, record):
    record.extra["ci_run"] = "run-42"

def pytest_autoresearch_update_json(config, report):
    report["pull_request"] = 17
"""


def test_the_json_report_holds_each_candidate_s_runs_decision_baseline_machine_and_settings(
    pytester, project, monkeypatch
):
    (project / "conftest.py").write_text(HOOKS)
    commit_project(project)
    add_candidate(project, "idea")
    FakeRuns(monkeypatch)
    run = pytester.runpytest_inprocess(
        *AGAINST_HEAD,
        "--ar-json",
        "out/report.json",
        *FAST,
    )
    run.assert_outcomes(passed=3, deselected=6)  # the editable-surface item too
    doc = report.load(project / "out" / "report.json")
    assert (doc["schema"], doc["schema_version"], doc["kind"]) == ("autoresearch-bench/report", 1, "session")
    assert doc["machine"]["rack"] == "r7" and doc["machine"]["device"] == "cpu" and doc["pull_request"] == 17
    assert (
        doc["settings"]["seeds"] == 2
        and doc["settings"]["max_tokens"] == 8192
        and doc["settings"]["base_ref"] == "HEAD"
    )
    [task] = doc["tasks"]
    assert (task["task"], task["metric"], task["direction"], task["profile"]) == ("tiny", "val_bpb", "lower", "cpu")
    assert task["fingerprint"]["mode"] == "tokens" and task["fingerprint_id"].endswith("__cpu__tokens-8192")
    assert task["data_ids"] == ["d0"]
    assert task["baseline"]["kind"] == "base" and task["baseline"]["label"] == "base @HEAD"
    assert [r["seed"] for r in task["baseline"]["runs"]] == [0, 1]
    by_name = {c["name"]: c for c in task["candidates"]}
    assert set(by_name) == {"@base", "train", "idea"} and by_name["@base"]["role"] == "base"
    idea = by_name["idea"]
    assert idea["decision"]["verdict"] == "no difference" and idea["decision"]["test"] == "paired t, seeds 0, 1"
    assert set(idea["decision"]) == {"verdict", "delta", "p", "ci", "reason", "test", "threshold", "detectable", "open"}
    assert idea["decision"]["delta"] == 0.0 and idea["summary"]["n"] == 2 and idea["baseline"] == "base @HEAD"
    assert by_name["@base"]["decision"] is None  # the reference itself is not judged
    # the runs are the records appended to results.jsonl, hook's additions included
    appended = [json.loads(line) for line in (project / "results.jsonl").read_text().splitlines()]
    assert sorted((r["candidate"], r["seed"]) for c in task["candidates"] for r in c["runs"]) == sorted(
        (r["candidate"], r["seed"]) for r in appended
    )
    assert all(r["extra"]["ci_run"] == "run-42" for r in appended)
    assert [r.to_dict() for r in report.records(doc)] == [r for c in task["candidates"] for r in c["runs"]]


def test_the_json_report_names_a_stored_baseline_with_its_seeds(pytester, project, monkeypatch):
    FakeRuns(monkeypatch)
    fingerprint = {**fingerprints.machine_fingerprint("cpu", "cpu"), "mode": "tokens", "budget": 8192}
    baselines.save_baseline(
        project / "baselines",
        "tiny",
        fingerprint,
        [record(task="tiny", seed=s, value=2.0 + 0.01 * s, extra={"data_id": "d0"}) for s in (0, 1)],
    )
    pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "-k", "benchmark", "--ar-seeds", "2", "--ar-json", "report.json", *FAST
    ).assert_outcomes(passed=1, deselected=3)
    [task] = report.load(project / "report.json")["tasks"]
    assert task["baseline"] == {
        "kind": "stored",
        "label": "stored baseline @abc1234",
        "commit": "abc1234",
        "data_id": "d0",
        "runs": [{"seed": 0, "value": 2.0}, {"seed": 1, "value": 2.01}],
    }
    assert task["candidates"][0]["decision"]["verdict"] == "no difference"


def test_non_finite_numbers_are_null_so_that_strict_json_readers_take_the_file(tmp_path):
    path = report.write(
        {
            "schema": report.SCHEMA,
            "schema_version": 1,
            "ci": (float("-inf"), float("inf")),
            "p": float("nan"),
            "where": tmp_path,
        },
        tmp_path / "r.json",
    )
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the file")) == {
        "schema": report.SCHEMA,
        "schema_version": 1,
        "ci": [None, None],
        "p": None,
        "where": str(tmp_path),
    }


def test_compare_reads_a_json_report_as_it_reads_the_results_file(pytester, project, monkeypatch):
    FakeRuns(monkeypatch)
    pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "-k", "benchmark", "--ar-seeds", "2", "--ar-json", "report.json", *FAST
    ).assert_outcomes(passed=1, deselected=3)
    from_report = compare(project / "report.json", project / "results.jsonl", tasks_dir=project / "tasks")
    from_results = compare(project / "results.jsonl", project / "results.jsonl", tasks_dir=project / "tasks")
    assert from_report.rows == from_results.rows and from_report.rows[0]["A"].endswith("(n=2, 100 steps)")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"runs": []}', 'not an autoresearch-bench report (no "schema": "autoresearch-bench/report")'),
        (
            '{"schema": "autoresearch-bench/report", "schema_version": 9}',
            "report schema version 9, newer than this harness reads (1); upgrade autoresearch-bench",
        ),
        ("{not json", "not a JSON report"),
    ],
)
def test_compare_refuses_a_json_file_that_is_not_a_report_it_can_read_in_one_line(tmp_path, capsys, content, message):
    (tmp_path / "r.json").write_text(content)
    (tmp_path / "a.jsonl").write_text("")
    assert cli.main(["compare", str(tmp_path / "r.json"), str(tmp_path / "a.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    with pytest.raises(CompareError):
        compare(tmp_path / "r.json", tmp_path / "a.jsonl")


def test_a_real_run_keeps_its_loss_curve_with_its_record(pytester, project):
    pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", *FAST).assert_outcomes(
        passed=1, deselected=3
    )
    [record] = schema.read_results(project / "results.jsonl")
    curve = record.extra["curve"]
    assert len(curve) == record.steps and [p[0] for p in curve] == list(range(record.steps))
    assert all(b[1] >= a[1] for a, b in zip(curve, curve[1:])) and curve[-1][2] < curve[0][2]  # it learned


def test_a_curve_stays_bounded_and_numeric_whatever_the_candidate_logs():
    curve = runner.Curve()
    for step in range(10_000):
        curve.add({"step": step, "elapsed": step / 100, "loss": float("nan") if step == 4 else 5.0 - step / 1e4})
    curve.add({"step": "1e9", "elapsed": None, "loss": "x" * 1000})  # not numbers: dropped
    assert curve.MAX_POINTS // 2 <= len(curve.points) < curve.MAX_POINTS
    steps = [p[0] for p in curve.points]
    assert steps[0] == 0 and steps[-1] > 9_000 and steps == sorted(steps)  # spread over the whole run
    assert all((p[2] is None) == (p[0] == 4) for p in curve.points)  # a NaN loss is no number


# --- pytest conventions ----------------------------------------------------------------------------


def test_every_ar_option_can_be_set_in_the_ini_file_and_the_command_line_wins(pytester, project, monkeypatch):
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\nar_seeds = "2"\nar_tokens = "8192"\n'
        'ar_description = "from ini"\nautoresearch = true\n'
    )
    fake = FakeRuns(monkeypatch)
    pytester.runpytest_inprocess("tasks", "-k", "benchmark", "-p", "no:cacheprovider").assert_outcomes(
        passed=1, deselected=3
    )
    assert [(r["seed"], r["description"]) for r in results(project)] == [("0", "from ini"), ("1", "from ini")]
    header = pytester.runpytest_inprocess("tasks", "--co", "-p", "no:cacheprovider")
    header.stdout.fnmatch_lines(["autoresearch: profile auto | * | seeds 0, 1 | 8,192 tokens | *"])
    fake.calls.clear()
    pytester.runpytest_inprocess(
        "tasks", "-k", "benchmark", "--ar-seeds", "1", "--ar-description", "cli", "-p", "no:cacheprovider"
    ).assert_outcomes(passed=1, deselected=3)
    assert [seed for _, _, seed in fake.calls] == [0] and results(project)[-1]["description"] == "cli"


def test_pytest_help_lists_an_ini_option_for_every_ar_flag(pytester):
    shown = pytester.runpytest_inprocess("--help").stdout.str()
    flags = set(re.findall(r"^ +(--autoresearch|--ar-[a-z-]+)", shown, re.MULTILINE))
    ini = set(re.findall(r"^ +(autoresearch|ar_[a-z_]+) \(", shown, re.MULTILINE))
    assert len(flags) > 20 and {f.lstrip("-").replace("-", "_") for f in flags} == ini


def test_a_bad_ini_value_stops_the_session_with_one_line(pytester, project):
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nar_seeds = "many"\n')
    line = usage_error(pytester.runpytest_inprocess("tasks", *FAST), project)
    assert (
        line
        == "ini option ar_seeds = 'many': 'many': give a number of seeds (1 or more) or auto (as --ar-seeds takes it)"
    )
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nar_sandbox = "loose"\n')
    assert usage_error(pytester.runpytest_inprocess("tasks", *FAST), project) == (
        "ini option ar_sandbox = 'loose': choose one of off, auto, strict"
    )


def test_the_report_header_says_profile_machine_seeds_mode_and_sandbox(pytester, project):
    run = pytester.runpytest_inprocess(
        "--autoresearch", "tasks", "--co", "--ar-seeds", "2", "--ar-seed-base", "5", *FAST
    )
    run.stdout.fnmatch_lines(
        ["autoresearch: profile auto | machine cpu *, torch *, cuda * | seeds 5, 6 | 8,192 tokens | sandbox *"]
    )


def test_a_test_that_takes_ar_benchmark_and_never_calls_it_fails(pytester, project, monkeypatch):
    (project / "tasks" / "tiny" / "test_forgot.py").write_text(
        "import pytest\n\n@pytest.mark.autoresearch\ndef test_forgot(ar_benchmark):\n    pass\n"
    )
    fake = FakeRuns(monkeypatch)
    run = pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark or forgot", *FAST)
    run.assert_outcomes(passed=1, failed=1, deselected=3)
    run.stdout.fnmatch_lines(
        [
            "*test_forgot?train? takes the ar_benchmark fixture but never calls it, so nothing "
            "was measured: call ar_benchmark() in the test"
        ]
    )
    assert [name for name, _, _ in fake.calls] == ["train"]  # the honest test_benchmark still ran


def test_a_session_with_no_autoresearch_item_imports_no_torch(tmp_path):
    (tmp_path / "test_plain.py").write_text(
        "def test_plain(pytestconfig):\n    assert pytestconfig.pluginmanager.hasplugin('autoresearch')\n"
    )
    probe = (
        "import json, sys, pytest\ncode = pytest.main(['-q', '-p', 'no:cacheprovider', 'test_plain.py'])\n"
        "print(json.dumps({'code': int(code), 'heavy': sorted({'torch', 'numpy', 'pyarrow'} & set(sys.modules))}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 0, "heavy": []}, done.stdout + done.stderr


# --- CI conventions --------------------------------------------------------------------------------


def test_junit_xml_properties_carry_each_benchmark_s_metric_delta_and_verdict(pytester, project, monkeypatch):
    commit_project(project)
    FakeRuns(monkeypatch)
    run = pytester.runpytest_inprocess(
        *AGAINST_HEAD,
        "--junitxml=junit.xml",
        *FAST,
    )
    run.assert_outcomes(passed=2, deselected=3)  # the editable-surface item and the benchmark
    [case] = [c for c in ET.parse(project / "junit.xml").getroot().iter("testcase") if "benchmark" in c.get("name")]
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["ar.metric"] == "val_bpb" and properties["ar.value"] == "2.005"
    assert properties["ar.delta"] == "0" and properties["ar.verdict"] == "no difference"
    assert properties["ar.baseline"] == "base @HEAD" and properties["ar.status"] == "ok"
    # the example workflow's annotation step reads them
    workflow = (Path(__file__).parents[1] / ".github" / "workflows" / "autoresearch.yml").read_text()
    script = textwrap.dedent(workflow.split("python - <<'EOF'\n")[1].split("EOF\n")[0])
    (project / "benchmark.xml").write_bytes((project / "junit.xml").read_bytes())
    annotations = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True, check=True
    )
    assert annotations.stdout.splitlines() == [
        "::notice title=test_benchmark[train]::val_bpb 2.005 (delta 0 vs base @HEAD): no difference"
    ]


def test_under_github_actions_the_summary_is_appended_to_the_step_summary(pytester, project, monkeypatch):
    summary = project / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    FakeRuns(monkeypatch)
    pytester.runpytest_inprocess("--autoresearch", "tasks", "-k", "benchmark", *FAST).assert_outcomes(
        passed=1, deselected=3
    )
    text = summary.read_text()
    assert text.startswith("earlier step\n## autoresearch benchmark\n") and "| tiny " in text


def test_under_xdist_the_controller_writes_the_report_of_the_workers_runs(pytester, project):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed: pip install autoresearch-bench[xdist]")
    run = pytester.runpytest_subprocess(
        "--autoresearch",
        "tasks",
        "-n",
        "2",
        "--ar-executor",
        "xdist",
        "-k",
        "benchmark",
        "--ar-json",
        "report.json",
        "--ar-html",
        "report.html",
        *FAST,
    )
    run.assert_outcomes(passed=1)
    [task] = report.load(project / "report.json")["tasks"]
    [train] = task["candidates"]
    assert train["status"] == "ok" and [r["seed"] for r in train["runs"]] == [0] and train["runs"][0]["extra"]["curve"]
    assert 'data-candidate="train"' in (project / "report.html").read_text()
