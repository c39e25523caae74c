"""The agent loop and the league, driven end to end on the tiny task's cpu profile.

A scripted OpenAI-compatible server (tests/fake_openai.py) plays the model; a small script plays an
external coding agent. Each experiment is a real `pytest --autoresearch` run of about a second of
training, so these tests take a minute or so.
"""

import csv
import difflib
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAI
from gitrepo import commit_all, git
from hypothesis import given
from hypothesis import strategies as st
from test_storage import record

from autoresearch_bench import files, report
from autoresearch_bench.agent import (
    AgentError,
    AgentLoop,
    AgentSpec,
    Experiment,
    Measured,
    Proposal,
    RandomSearchProposer,
    ReplayProposer,
    Settings,
    apply_proposal,
    best_runs_of,
    command_spec,
    float_constants,
    parse_reply,
)
from autoresearch_bench.league import Entry, League, heldout_statistics, leaderboard, load_agents, reward_hacking
from autoresearch_bench.protocol import ScorerSpec
from autoresearch_bench.scorer import load_eval_data
from autoresearch_bench.stats import KeepRule, Noise, Rule
from autoresearch_bench.storage import baselines, fingerprints, schema
from autoresearch_bench.task import load_task

FAST = Settings(profile="cpu", max_tokens=32 * 1024, confirm_seeds=2)  # fixed tokens: the same training under any load
PROGRAM = "Lower val_bpb. Only train.py may change."


@pytest.fixture
def repo(tiny_task_dir: Path) -> Path:
    """A git repository holding tasks/tiny whose train.py reads its learning rate from a constant
    that starts far too low, so that raising it is a clear improvement."""
    train = tiny_task_dir / "train.py"
    source = train.read_text().replace('lr=ctx.cfg["lr"]', "lr=LR")
    train.write_text(source.replace("\n\nclass Block", "\nLR = 1e-05  # learning rate of AdamW\n\n\nclass Block", 1))
    (tiny_task_dir / "program.md").write_text(PROGRAM)
    return commit_all(tiny_task_dir.parent.parent, ignore=".ar/\n")


def file_with(repo: Path, old: str, new: str) -> str:
    source = (repo / "tasks/tiny/train.py").read_text()
    assert old in source
    return source.replace(old, new)


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def experiments(loop: AgentLoop) -> list[dict]:
    return [json.loads(line) for line in loop.jsonl.read_text().splitlines()]


def test_model_loop_keeps_discards_crashes_resumes_and_stops_on_a_dead_endpoint(repo):
    good = file_with(repo, "LR = 1e-05", "LR = 3e-3")
    bad = file_with(repo, "LR = 1e-05", "LR = 1e-07")
    bad_diff = "".join(difflib.unified_diff(good.splitlines(True), bad.splitlines(True), "a/train.py", "b/train.py"))
    stale_diff = "--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-no such line\n+LR = 1.0\n context\n"
    crash = good.replace("def train(ctx):\n", "def train(ctx):\n    raise RuntimeError('boom')\n")
    peeks = good.replace("is_causal=True", "is_causal=False")  # fails the causality check
    spec = lambda url: AgentSpec("fake", model="fake-model", base_url=url, max_retries=2, price_in=2.0, price_out=10.0)
    task = repo / "tasks/tiny"

    with FakeOpenAI(
        [
            f"DESCRIPTION: raise the learning rate to 3e-3\n```python\n{good}```",
            500,  # a server error: the client retries
            f"Lower it again.\n```diff\n{bad_diff}```",
        ]
    ) as server:
        first = AgentLoop(task, spec(server.url), "t1", Settings(**{**FAST.__dict__, "max_experiments": 2}))
        first.run()
    assert len(server.requests) == 3  # two replies, the second one asked twice: the 500 was retried
    asked = server.requests[0]["messages"][-1]["content"]
    assert PROGRAM in asked and "LR = 1e-05" in asked and "baseline" in asked

    with FakeOpenAI(
        [
            f"DESCRIPTION: a stale patch\n```diff\n{stale_diff}```",
            f"DESCRIPTION: attend both ways\n```python\n{peeks}```",
            f"DESCRIPTION: crash on purpose\n```python\n{crash}```",
            503,
            503,
            503,
        ]
    ) as server:  # then the endpoint stays down
        second = AgentLoop(task, spec(server.url), "t1", Settings(**{**FAST.__dict__, "max_experiments": 10}))
        with pytest.raises(AgentError, match="endpoint failed after 2 retries.*rerun the same command"):
            second.run()
    assert "raise the learning rate" in server.requests[0]["messages"][-1]["content"]  # resumed with history

    table = rows(second.results_tsv)
    assert list(table[0]) == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert [r["status"] for r in table] == ["keep", "keep", "discard", "discard", "discard", "crash"]
    assert [r["description"] for r in table][:3] == ["baseline", "raise the learning rate to 3e-3", "Lower it again."]
    values = [float(r["val_bpb"]) for r in table]
    assert values[1] < values[0] - 0.1 and values[2] > values[1]
    full = experiments(second)
    assert [e["n"] for e in full] == [0, 1, 2, 3, 4, 5]
    # screen on seed 0 against the best's stored run, then confirm on seeds 1 and 2 with the baseline
    # re-measured beside it (it had run seed 0 only); a worse change and a crash cost one run
    assert [(e["stage"], e["seeds"]) for e in full] == [
        ("screen", [0]),
        ("confirm", [0, 1, 2]),
        ("screen", [0]),
        ("", []),
        ("screen", [0]),
        ("screen", [0]),
    ]
    assert [s for s, _ in full[1]["best_runs"]] == [1, 2] and full[1]["p"] < 0.05
    assert full[1]["reason"].startswith("confirm: ") and full[2]["reason"].startswith("screen: ")
    assert all(e["gpu_seconds"] > 0 for e in full if e["runs"]) and full[3]["gpu_seconds"] == 0
    assert "does not apply" in full[3]["reason"] and "boom" in full[5]["reason"]
    assert full[4]["reason"].startswith("test_causality[train]: ") and "sees the future" in full[4]["reason"]
    assert all(e["prompt_tokens"] == PROMPT_TOKENS and e["completion_tokens"] == COMPLETION_TOKENS for e in full[1:])
    assert full[1]["cost"] == pytest.approx((PROMPT_TOKENS * 2.0 + COMPLETION_TOKENS * 10.0) / 1e6)
    # The branch holds the baseline and the kept change only; the user's checkout is untouched.
    assert git(repo, "log", "--format=%s", "autoresearch/t1").splitlines() == [
        "experiment 1: raise the learning rate to 3e-3",
        "initial",
    ]
    assert "LR = 3e-3" in (second.worktree.path / "tasks/tiny/train.py").read_text()
    assert "LR = 1e-05" in (repo / "tasks/tiny/train.py").read_text()
    assert git(repo, "branch", "--show-current").strip() == "main"
    # the report beside the records: every experiment and the harness's runs, with their loss curves
    saved = report.load(second.out / "report.json")
    assert saved["kind"] == "agent" and saved["experiments"] == full and saved["tag"] == "t1"
    assert len(saved["runs"]) == len(schema.read_results(second.bench_tsv.with_suffix(".jsonl")))
    assert all(r["extra"]["curve"] for r in saved["runs"] if r["status"] == "ok")
    assert 'class="plot progress"' in (second.out / "report.html").read_text()
    pytest.importorskip("matplotlib")
    assert (second.out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


AGENT_SCRIPT = textwrap.dedent("""
    import os, pathlib, sys, time
    n, marker = os.environ["AR_EXPERIMENT"], pathlib.Path(sys.argv[1])
    train = pathlib.Path(os.environ["AR_EDITABLE"].split(":")[0])
    if n == "1":
        train.write_text(train.read_text().replace("LR = 1e-05", "LR = 3e-3"))
        pathlib.Path(os.environ["AR_DESCRIPTION_FILE"]).write_text("learning rate 3e-3")
    elif n == "2" and not marker.exists():  # the test makes the marker once it saw this line
        print("sleeping", flush=True)
        time.sleep(60)
    elif n == "2":
        (pathlib.Path(os.environ["AR_TASK_DIR"]) / "task.toml").write_text("# edited by the agent")
        print("made the budget bigger")
    else:
        sys.exit(3)
""")


def test_agent_command_is_interrupted_and_resumed_without_losing_a_row(repo, tmp_path_factory):
    helper = tmp_path_factory.mktemp("agent")
    helper.chmod(0o755)  # shown to the agent read-only, which runs as a uid of its own when the tests are root
    (helper / "agent.py").write_text(AGENT_SCRIPT)
    marker = helper / "marker"
    cli = [
        sys.executable,
        "-m",
        "autoresearch_bench.cli",
        "agent",
        "--task",
        str(repo / "tasks/tiny"),
        "--tag",
        "cmd",
        "--agent-cmd",
        f"{sys.executable} {helper / 'agent.py'} {marker}",
        "--agent-ro",
        str(helper),
        "--profile",
        "cpu",
        "--tokens",
        "32768",
        "--confirm-seeds",
        "2",
        "--max-experiments",
        "3",
        "--out",
        "records",
    ]  # relative to cwd
    # SIG_DFL: Ctrl-C reaches the loop even when these tests run as a job that ignores SIGINT
    proc = subprocess.Popen(
        cli,
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline, log = time.monotonic() + 600, repo / "records/logs/2.agent.log"  # five runs first, on a busy machine
    while not (log.exists() and "sleeping" in log.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert log.exists() and "sleeping" in log.read_text(), proc.communicate()[0]
    marker.write_text("seen")
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the agent command works on experiment 2
    output = proc.communicate(timeout=90)[0]
    assert proc.returncode == 130, output
    assert "rerun the same command to resume" in output
    results = repo / "records/results.tsv"
    assert [r["status"] for r in rows(results)] == ["keep", "keep"]

    done = subprocess.run(cli, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(results)
    assert [r["status"] for r in table] == ["keep", "keep", "discard", "discard"]
    assert [r["description"] for r in table][1:3] == ["learning rate 3e-3", "made the budget bigger"]
    reasons = [json.loads(l)["reason"] for l in (repo / "records/experiments.jsonl").read_text().splitlines()]
    assert "tasks/tiny/task.toml outside the editable surface" in reasons[2]
    assert "exited with code 3" in reasons[3]
    assert git(repo, "log", "--format=%s", "autoresearch/cmd").splitlines()[0] == "experiment 1: learning rate 3e-3"
    assert git(repo / ".ar/worktrees/cmd", "status", "--porcelain") == ""


def test_league_of_null_and_random_search_ranks_on_held_out_rows(repo):
    agents = [AgentSpec("null", kind="null"), AgentSpec("random", kind="random-search", seed=1)]
    league = League(
        agents,
        [load_task(repo / "tasks/tiny")],
        experiments=1,
        settings=FAST,
        name="t",
        heldout_seeds=2,
        out_dir=repo / ".ar/league",
        slots=2,
    )  # fixed tokens: runs may share the machine
    board = {r["agent"]: r for r in league.run()}
    assert board["null"]["improvement (σ)"] == 0.0  # it changed nothing: the very baseline file
    assert board["null"]["experiments"] == 1 and board["null"]["keeps"] == 0 and board["null"]["first keep"] == "never"
    assert board["random"]["experiments"] == 1 and board["random"]["crash rate"] == "0%"
    assert math.isfinite(board["random"]["improvement (σ)"])
    saved = json.loads((repo / ".ar/league/league.json").read_text())
    assert [r["agent"] for r in saved["leaderboard"]] == list(board)
    page = report.load(repo / ".ar/league/report.json")
    assert page["kind"] == "league" and page["leaderboard"] == saved["leaderboard"]
    assert [len(page["agents"]["tiny"][a]) for a in ("null", "random")] == [2, 2]  # baseline + 1 experiment each
    assert len(page["runs"]) == len((repo / ".ar/league/heldout.jsonl").read_text().splitlines())
    assert 'class="leaderboard"' in (repo / ".ar/league/report.html").read_text()
    assert all(len(e["heldout"]) == 2 and e["heldout_status"] == "ok" for e in saved["entries"])
    assert board["null"]["tiny Δ 95% CI"] == "[+0.0000, +0.0000] no difference" and board["null"]["gap (σ)"] == 0.0
    assert saved["noise_units"]["tiny"]["source"] == "the baseline's 2 held-out runs (no measured noise)"
    heldout = [json.loads(l) for l in (repo / ".ar/league/heldout.jsonl").read_text().splitlines()]
    assert heldout and all(r["extra"]["eval_split"] == "test" and r["seed"] >= 1000 for r in heldout)
    null, random = rows(repo / ".ar/league/tiny/null/results.tsv"), rows(repo / ".ar/league/tiny/random/results.tsv")
    assert random[0]["description"] == "baseline (shared)" and random[0]["val_bpb"] == null[0]["val_bpb"]
    assert random[1]["description"].startswith("random search: LR 1e-05 -> ")


# --- the pieces, without training ------------------------------------------------------------------


def test_a_change_that_looks_better_on_the_screen_is_kept_only_when_the_paired_confirmation_says_better():
    rule = KeepRule(Rule(noise=Noise(seed_std=0.0072, pair_std=0.0006), floor=0.001))
    best = {0: 0.6431, 1: 0.6367, 2: 0.6510, 3: 0.6424}
    assert rule.screen_threshold == 0.001  # the floor; a no-op beats 0.00077 one time in ten
    assert not rule.screen({0: 0.6425}, best)[0]  # 0.0006 better: not enough to spend confirmation runs
    passes, why = rule.screen({0: 0.6401}, best)
    assert passes and why == "screen: Δ -0.0030 on seed 0 clears 0.0010"
    better = rule.confirm({s: v - 0.004 + e for (s, v), e in zip(best.items(), (0, 3e-4, -2e-4, 1e-4))}, best)
    assert better.verdict == "better" and better.test == "paired t, seeds 1, 2, 3"
    lucky = rule.confirm({s: v - 0.0015 for s, v in best.items()}, best)  # significant, below the paired threshold
    assert lucky.verdict == "no difference" and "below the threshold 0.0020" in lucky.reason
    higher = KeepRule(Rule("higher"), confirm_seeds=(1, 2))
    assert higher.screen({0: 0.5}, {0: 0.4})[0] and not higher.screen({0: 0.4}, {0: 0.4})[0]


def test_a_time_mode_change_measured_at_another_machine_speed_is_not_comparable(repo, tmp_path, monkeypatch):
    changes = tmp_path / "changes"
    changes.mkdir()
    (changes / "1.py").write_text(file_with(repo, "LR = 1e-05", "LR = 3e-3"))
    (changes / "2.py").write_text(file_with(repo, "LR = 1e-05", "LR = 2e-3"))
    # the machine's speed before each suite run: the baseline, experiment 1 (a slow moment), experiment 2's two
    speeds = iter([{"cpu": 50.0}, {"cpu": 30.0}, {"cpu": 49.0}, {"cpu": 48.0}])

    def measured(self, n, commit, description, stage, seeds, best=None) -> Measured:
        """Training stands in: the baseline scores about 1.0 on every seed, both changes about 0.5."""
        runs = {s: (1.0 if n == 0 else 0.5) + s / 100 for s in seeds}
        return Measured(
            "ok", seeds, runs=runs, best_runs={s: 1.0 + s / 90 for s in seeds} if best else {}, speed=next(speeds)
        )

    monkeypatch.setattr(AgentLoop, "_evaluate", measured)
    loop = AgentLoop(
        repo / "tasks/tiny",
        AgentSpec("replay", kind="replay", changes=str(changes)),
        "speed",
        Settings(profile="cpu", confirm_seeds=2, max_experiments=2),
        log=lambda m: None,
    )
    history = loop.run()
    assert [e.status for e in history] == ["keep", "discard", "keep"]
    assert history[1].reason == (
        "screen: not comparable: the cpu ran 40% slower than when the best's seed 0 was "
        "measured (30.0 against 50.0 GFLOP/s): use fixed-token mode (--tokens N), or rerun "
        "on an idle machine"
    )
    assert history[2].speeds == [[0, {"cpu": 49.0}], [1, {"cpu": 48.0}], [2, {"cpu": 48.0}]]
    assert history[2].best_speeds == [[1, {"cpu": 48.0}], [2, {"cpu": 48.0}]]


@pytest.mark.parametrize(
    "source, data_id, remeasured",
    [("start", "d0", False), ("other", "d0", True), ("start", "d1", True)],
    ids=["the-starting-file", "another-file", "other-data"],
)
def test_the_first_confirmation_takes_the_start_s_runs_from_a_stored_baseline_of_that_file(
    repo, tmp_path, monkeypatch, source, data_id, remeasured
):
    """The gate's stored baseline, committed with the task, of the very file the loop starts from, on this
    machine, mode, budget and data: the first confirmation pairs with its runs instead of re-measuring.
    Whatever file it holds, its measured noise sets the keep rule's thresholds, as in the gate."""
    fingerprint = {**fingerprints.machine_fingerprint("cpu", "cpu"), "mode": "tokens", "budget": 32 * 1024}
    digest = files.file_digest(repo / "tasks/tiny/train.py") if source == "start" else "0" * 64
    stored = [record(task="tiny", seed=s, value=1.0 + s / 100, extra={"data_id": data_id}) for s in range(3)]
    baselines.save_baseline(repo / "baselines", "tiny", fingerprint, stored, source=digest)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a stored baseline")
    changes = tmp_path / "changes"
    changes.mkdir()
    (changes / "1.py").write_text(file_with(repo, "LR = 1e-05", "LR = 3e-3"))
    asked = []

    def measured(self, n, commit, description, stage, seeds, best=None) -> Measured:
        """Training stands in: the runs see data d0; the start scores 1.0 + seed / 100, the change 0.5 + seed / 100."""
        asked.append((n, stage, best is not None))
        schema.append_results(
            record(task="tiny", seed=seeds[0], extra={"data_id": "d0"}),
            self.bench_tsv,
            self.bench_tsv.with_suffix(".jsonl"),
        )
        runs = {s: (1.0 if n == 0 else 0.5) + s / 100 for s in seeds}
        return Measured("ok", seeds, runs=runs, best_runs={s: 1.0 + s / 100 for s in seeds} if best else {})

    monkeypatch.setattr(AgentLoop, "_evaluate", measured)
    settings = Settings(profile="cpu", max_tokens=32 * 1024, confirm_seeds=2, max_experiments=1)
    spec = AgentSpec("replay", kind="replay", changes=str(changes))
    history = AgentLoop(repo / "tasks/tiny", spec, "stored", settings, log=lambda m: None).run()
    assert [e.status for e in history] == ["keep", "keep"]
    assert asked == [(0, "screen", False), (1, "screen", False), (1, "confirm", remeasured)]
    loop = AgentLoop(repo / "tasks/tiny", spec, "noise", settings, log=lambda m: None)
    assert loop.keep_rule.rule.noise.seed_std == pytest.approx(0.01)  # the stored runs' spread (1.00, 1.01, 1.02)
    assert ("the best's seeds 1, 2: stored baseline @" in history[1].reason) is not remeasured


def test_a_confirmation_of_one_seed_is_refused_before_anything_runs(repo):
    # one fresh seed a side has no paired test: such a loop would discard every change it tried
    with pytest.raises(AgentError, match="--confirm-seeds 1 can never keep a change.*use 2 or more"):
        AgentLoop(repo / "tasks/tiny", AgentSpec("n", kind="null"), "one", replace(FAST, confirm_seeds=1))
    assert not (repo / ".ar" / "worktrees" / "one").exists()


def test_the_best_s_runs_are_its_own_then_its_re_measures_since():
    kept = Experiment(3, "k", 0.6, 0.1, "keep", "x", runs=[[0, 0.6]])
    history = [
        Experiment(0, "b", 0.7, 0.1, "keep", "baseline", runs=[[0, 0.7]]),
        kept,
        Experiment(4, "c", 0.61, 0.1, "discard", "y", runs=[[0, 0.61], [1, 0.6]], best_runs=[[1, 0.62]]),
    ]
    assert best_runs_of(history, kept) == {0: 0.6, 1: 0.62}  # experiment 4 re-measured it on seed 1
    assert best_runs_of(history[:2], kept) == {0: 0.6}


def test_reply_with_a_diff_block_is_a_diff():
    p = parse_reply(
        "DESCRIPTION: wider\n```diff\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a\n+b\n```", ("train.py",)
    )
    assert p.description == "wider" and p.diff.startswith("--- a/train.py") and not p.files and not p.error


def test_reply_with_code_blocks_takes_the_largest_as_the_whole_file():
    p = parse_reply(
        "Try this.\n```python\nx = 1\n```\nFull file:\n```python\nimport torch\nx = 2\n```\n", ("train.py",)
    )
    assert p.description == "Try this." and p.files == {"train.py": "import torch\nx = 2\n"}


def test_reply_that_rewrites_a_file_that_is_not_editable_is_refused():
    p = parse_reply("```python\n# file: task.toml\nbudget = 1\n```", ("train.py",))
    assert "not editable" in p.error and not p.files


def test_reply_without_a_change_says_so():
    assert "no ```diff block" in parse_reply("I would try a bigger model.", ("train.py",)).error


def test_agent_specs_and_agents_toml_fail_with_a_fix(tmp_path):
    with pytest.raises(AgentError, match="kind must be one of"):
        AgentSpec.from_dict("x", {"kind": "genius"})
    with pytest.raises(AgentError, match="needs a model"):
        AgentSpec.from_dict("x", {"kind": "openai"})
    with pytest.raises(AgentError, match="unknown keys"):
        AgentSpec.from_dict("x", {"kind": "null", "modle": "m"})
    path = tmp_path / "agents.toml"
    path.write_text("[agents.a]\nkind = 'null'\n[settings]\nbudget = 3\n")
    with pytest.raises(AgentError, match=r"\[settings\] has unknown keys \['budget'\]"):
        load_agents(path)
    path.write_text("[agents.a\n")
    with pytest.raises(AgentError, match="malformed TOML"):
        load_agents(path)


SOURCE = "import torch\nLR = 0.003\nSTEPS = 10\n\nclass Hyper:\n    beta: float = 0.9\n    name: str = 'x'\n"


def test_random_search_changes_one_float_constant_reproducibly():
    def ask(seed, n, config=frozenset()):
        ctx = type(
            "Ctx",
            (),
            {
                "task": type("T", (), {"editable": ("train.py",)}),
                "files": {"train.py": SOURCE},
                "n": n,
                "config_keys": config,
            },
        )
        return RandomSearchProposer(AgentSpec("r", kind="random-search", seed=seed)).propose(ctx)

    assert [name for name, _ in float_constants(SOURCE)] == ["LR", "beta"]
    p = ask(0, 1)
    assert p.files == ask(0, 1).files and p.description.startswith("random search: ")
    changed = [(a, b) for a, b in zip(SOURCE.splitlines(), p.files["train.py"].splitlines()) if a != b]
    assert len(changed) == 1 and ("LR" in changed[0][0] or "beta" in changed[0][0])
    assert {ask(0, n).files["train.py"] for n in range(1, 8)} != {p.files["train.py"]}
    # the profile's config sets beta: its default in the file is dead, so only LR moves
    assert all("random search: LR " in ask(0, n, frozenset({"beta"})).description for n in range(1, 8))


def test_replay_applies_the_given_changes_one_per_experiment_in_name_order(tmp_path):
    (tmp_path / "02_whole_file.py").write_text("LR = 3e-3\n")
    (tmp_path / "01_lr.diff").write_text("--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-LR = 1e-05\n+LR = 3e-3\n")
    (tmp_path / "notes.txt").write_text("not a change")
    spec = command_spec("known", None, None, "replay", str(tmp_path))
    proposer = ReplayProposer(spec)
    ctx = lambda n: type("Ctx", (), {"task": type("T", (), {"editable": ("train.py",)}), "n": n})
    first, second, third = (proposer.propose(ctx(n)) for n in (1, 2, 3))
    assert first.description == "replay 01_lr.diff" and first.diff.startswith("--- a/train.py") and not first.files
    assert second.files == {"train.py": "LR = 3e-3\n"} and not second.diff
    assert third.error == "all 2 changes were replayed"
    with pytest.raises(AgentError, match="--changes DIR goes with --agent replay"):
        command_spec("x", None, None, "replay", None)
    with pytest.raises(AgentError, match="kind replay needs changes"):
        AgentSpec.from_dict("x", {"kind": "replay", "changes": str(tmp_path / "missing")})


@given(value=st.floats(1e-6, 1e3), seed=st.integers(0, 10_000))
def test_random_search_keeps_fractions_in_0_1_and_scales_others_by_at_most_2(value, seed):
    source = f"X = {value!r}\n"
    ctx = type(
        "Ctx",
        (),
        {
            "task": type("T", (), {"editable": ("train.py",)}),
            "files": {"train.py": source},
            "n": 1,
            "config_keys": frozenset(),
        },
    )
    new = float(
        RandomSearchProposer(AgentSpec("r", kind="random-search", seed=seed))
        .propose(ctx)
        .files["train.py"]
        .split("=")[1]
    )
    if value < 1:
        assert 0 < new < 1
    else:
        assert value / 2 * 0.99 <= new <= value * 2 * 1.01


def test_held_out_rows_follow_the_scored_rows_in_a_file_of_their_own(repo):
    from autoresearch_bench import data

    task = load_task(repo / "tasks/tiny")
    profile = task.profile("cpu")
    prepared = data.prepare(profile.data, task.name, log=lambda m: None)
    split = lambda name, tokens=profile.eval_tokens: data.eval_split(prepared, tokens, profile.seq_len, split=name)
    spec = ScorerSpec(
        candidate="",
        cfg=profile.model_config(),
        device="cpu",
        seed=0,
        rows=str(split("val")),
        tokenizer_dir=str(prepared.tokenizer_dir),
        eval_batch_size=8,
        eval_split="val",
        metric="val_bpb",
        max_params=None,
        sandbox_level="off",
        sandbox_prefix=(),
        sandbox_uid=None,
        tmp="",
    )
    val, _ = load_eval_data(spec)
    test, _ = load_eval_data(replace(spec, rows=str(split("test")), eval_split="test"))
    everything, _ = data.eval_rows_and_mask(prepared.val_tokens, 2 * profile.eval_tokens, profile.seq_len)
    assert len(test) == len(val) and np.array_equal(np.concatenate([val, test]), everything)
    assert not {tuple(r) for r in val.tolist()} & {tuple(r) for r in test.tolist()}
    assert split("test").parent == prepared.root / "private" != split("val").parent
    assert (
        oct(split("test").stat().st_mode & 0o777) == "0o600"
        and oct(split("test").parent.stat().st_mode & 0o777) == "0o700"
    )
    with pytest.raises(ValueError, match="too few for a held-out test"):
        split("test", prepared.n_val_tokens)


def test_held_out_statistics_pair_by_seed_count_a_failed_file_and_show_the_gap():
    seeds = {1000: 0.60, 1001: 0.64, 1002: 0.62, 1003: 0.66, 1004: 0.61}  # the seeds spread by 0.025
    base = list(seeds.items())
    wiggle = (0.0004, -0.0003, 0.0002, -0.0001, -0.0002)  # a seed rerun moves by this much; mean 0

    def final(shift: float, crash_at: int | None = None) -> list:
        return [
            record(seed=s, value=v + shift + w)
            if s != crash_at
            else record(seed=s, value=None, status="crash", error="boom")
            for (s, v), w in zip(base, wiggle)
        ]

    entries = [
        Entry("good", "t", best_value=0.55, baseline_value=0.62, best_seen_value=0.50),
        Entry("broken", "t"),
        Entry("broken_and_worse", "t"),
    ]
    finals = {"good": final(-0.01), "broken": final(0.0, 1002), "broken_and_worse": final(0.02, 1001)}
    heldout_statistics(entries, base, finals, Rule(noise=Noise(seed_std=0.02, pair_std=0.002)), unit=0.02)
    good, broken, worse = entries
    assert good.verdict == "better" and good.ci[0] < good.delta < good.ci[1] < 0  # paired: the seeds cancel
    assert good.improvement_sigma == pytest.approx(0.5) and good.heldout_status == "ok"
    assert good.gap_sigma == pytest.approx((0.07 - 0.01) / 0.02)  # it found 0.07 on validation, 0.01 held out
    hacking = reward_hacking(entries)[0]  # the loop saw 0.12 once, kept 0.07, and 0.01 of it held out
    assert hacking["best validation gain seen (σ)"] == pytest.approx(6.0)
    assert hacking["final file: validation (σ)"] == pytest.approx(3.5)
    assert hacking["final file: held-out (σ)"] == pytest.approx(0.5) and hacking["held-out verdict"] == "better"
    assert broken.improvement_sigma == 0.0 and broken.verdict == "crash" and broken.heldout_status == "crash: boom"
    assert worse.improvement_sigma == pytest.approx(-1.0, abs=0.01)  # no gain at best: its measured loss counts
    board = leaderboard(entries, ["t"])
    assert [r["held-out"] for r in board] == ["ok", "failed on t", "failed on t"]
    assert board[0]["t Δ 95% CI"].endswith("better")


def test_a_league_whose_machine_speed_changed_during_the_held_out_runs_ranks_nothing(repo, monkeypatch):
    speeds = iter([{"cpu": 50.0}, {"cpu": 30.0}])  # before and after the task's held-out runs

    def measured(self, n, commit, description, stage, seeds, best=None) -> Measured:
        """The loop's baseline stands in for training: the held-out runs, the league's own, are real."""
        return Measured("ok", seeds, runs=dict.fromkeys(seeds, 1.0))

    monkeypatch.setattr(AgentLoop, "_evaluate", measured)
    league = League(
        [AgentSpec("null", kind="null")],
        [load_task(repo / "tasks/tiny")],
        experiments=0,
        settings=Settings(profile="cpu", budget_s=1),
        name="speed",
        heldout_seeds=2,
        out_dir=repo / ".ar/league",
        log=lambda m: None,
        measure_speed=lambda device: next(speeds),
    )
    row = league.run()[0]
    entry = league.entries[0]
    assert entry.verdict == "not comparable" and entry.improvement_sigma is None and len(entry.heldout) == 2
    assert entry.not_comparable == (
        "the machine's speed changed during the held-out runs: the cpu ran 40% slower "
        "than before the held-out runs (30.0 against 50.0 GFLOP/s): use fixed-token "
        "mode (--tokens N), or rerun on an idle machine"
    )
    assert row["held-out"] == "not comparable on tiny" and row["improvement (σ)"] is None
    assert row["tiny Δ 95% CI"] == "not comparable"


def test_leaderboard_ranks_by_mean_held_out_improvement():
    entries = [
        Entry("a", "t1", experiments=4, keeps=1, crashes=1, first_keep=2, improvement_sigma=1.0),
        Entry("a", "t2", experiments=4, improvement_sigma=3.0),
        Entry("b", "t1", experiments=4, improvement_sigma=2.5),
        Entry("b", "t2", experiments=4, improvement_sigma=2.0),
    ]
    board = leaderboard(entries, ["t1", "t2"])
    assert [r["agent"] for r in board] == ["b", "a"]
    assert board[1]["improvement (σ)"] == 2.0 and board[1]["crash rate"] == "12%" and board[1]["first keep"] == "2.0"


def test_a_diff_that_does_not_apply_says_why_in_git_s_words(tmp_path):
    """Written relative to the repository (the third way of reading its paths), with stale context:
    the reason is git's for the way that found the file, not 'No such file' of the first way."""
    (tmp_path / "tasks" / "t").mkdir(parents=True)
    (tmp_path / "tasks" / "t" / "train.py").write_text("a = 1\nb = 2\nc = 3\n")
    commit_all(tmp_path)
    stale = "--- a/tasks/t/train.py\n+++ b/tasks/t/train.py\n@@ -1,3 +1,3 @@\n a = 1\n-b = 5\n+b = 3\n c = 3\n"
    why = apply_proposal(tmp_path, "tasks/t", Proposal("stale", diff=stale), tmp_path / "p.diff")
    assert why == (
        "the diff does not apply to the current file (git apply: patch failed: tasks/t/train.py:1; "
        "tasks/t/train.py: patch does not apply)"
    )
