"""Hostile agent commands: the agent's sandbox keeps the data, the records, the harness and the
machine out of its reach, and an honest agent command still gets its change measured.

One agent loop per isolation runs one attack per experiment (the script below, told which by
AR_EXPERIMENT): as root the agent runs as a uid of its own ("unprivileged"); an ordinary user gets a user
namespace, forced here as tests/test_sandbox.py forces it for candidates. Skipped without namespaces.
"""

import hashlib
import json
import os
import socket
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from gitrepo import commit_all, git
from test_agent import FAST, PROGRAM

from autoresearch_bench import agent, data, sandbox
from autoresearch_bench.agent import AgentLoop, AgentSpec, Children, CommandProposer, Context, copy_back
from autoresearch_bench.storage import appends
from autoresearch_bench.task import load_task
from conftest import copy_tiny_task

pytestmark = pytest.mark.skipif(
    sandbox.namespaces_available() is None, reason="Linux namespaces are not available on this machine"
)

ATTACKER = textwrap.dedent("""
    import json, os, pathlib, subprocess, sys, time
    targets = json.loads(pathlib.Path(sys.argv[1]).read_text())
    attack = targets["plan"][int(os.environ["AR_EXPERIMENT"]) - 1]
    FORGED, OWNED = "forged\\tkeep\\n", "# owned\\n"

    def attempt(what, action):
        try:
            print(f"{what}: {action()}", flush=True)
        except OSError as e:
            print(f"{what}: blocked ({type(e).__name__})", flush=True)

    if attack == "reads":
        for path in targets["secrets"]:
            attempt(f"read {path}", lambda: f"got {len(open(path, 'rb').read(64))} bytes")
        attempt("list the cache", lambda: f"listed {os.listdir(targets['cache'])}")
    elif attack == "writes_records":
        for path in targets["records"]:
            attempt(f"write {path}", lambda: f"wrote {open(path, 'a').write(FORGED)} bytes")
    elif attack == "edits_outside":
        for path in targets["outside"]:
            attempt(f"write {path}", lambda: f"wrote {open(path, 'a').write(OWNED)} bytes")
    elif attack == "daemon":
        subprocess.Popen(["sleep", targets["marker"]], start_new_session=True)
        print("left a daemon")
    elif attack == "memory":
        hog = bytearray(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))  # all the RAM at once
    elif attack == "processes":
        while True:  # fork until stopped; each child sleeps
            try:
                if os.fork() == 0:
                    time.sleep(120)
                    os._exit(0)
            except OSError:
                time.sleep(0.01)
    elif attack == "honest":
        train = pathlib.Path(os.environ["AR_EDITABLE"].split(":")[0])
        train.write_text(train.read_text().replace("LR = 1e-05", "LR = 3e-3"))
        pathlib.Path(os.environ["AR_DESCRIPTION_FILE"]).write_text("learning rate 3e-3")
""")
USERNS = sandbox.Plan("userns", (sandbox.UNSHARE[0], "--user", "--map-root-user", *sandbox.UNSHARE[1:]))
ISOLATIONS = ["unprivileged", "userns"] if sandbox.namespaces_available().level == "unprivileged" else ["userns"]


@dataclass
class Attacked:
    """One loop of attacks: its records, what the attacks aimed at, and their digests before."""

    loop: AgentLoop
    experiments: list[dict]
    targets: dict
    digests: dict[str, str | None]
    survivors: list[str]  # processes of the daemon left afterwards
    plan: sandbox.Plan

    def log(self, n: int) -> str:
        return (self.loop.out / "logs" / f"{n}.agent.log").read_text()


def digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def processes_running(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module", params=ISOLATIONS)
def attacked(request, tmp_path_factory) -> Attacked:
    root = tmp_path_factory.mktemp(f"agent-{request.param}")
    task_dir = copy_tiny_task(root)
    train = task_dir / "train.py"
    source = train.read_text().replace('lr=ctx.cfg["lr"]', "lr=LR")
    train.write_text(source.replace("\n\nclass Block", "\nLR = 1e-05  # learning rate of AdamW\n\n\nclass Block", 1))
    (task_dir / "program.md").write_text(PROGRAM)
    repo = commit_all(root, ignore=".ar/\n")
    other = repo / ".ar/worktrees/other-agent/tasks/tiny"  # another agent's worktree
    other.mkdir(parents=True)
    (other / "train.py").write_text("# another agent's file\n")
    helper = tmp_path_factory.mktemp("attacker")
    helper.chmod(0o755)  # shown read-only to the agent, which runs as a uid of its own when the tests are root
    (helper / "attacker.py").write_text(ATTACKER)
    task = load_task(task_dir)
    prepared = data.prepare(task.profile("cpu").data, task.name, log=lambda m: None)
    plan = ["reads", "writes_records", "edits_outside", "daemon", "memory"]
    plan += ["honest", "processes"] if request.param == "unprivileged" else ["processes"]  # honest: once
    marker = f"{os.getpid()}.{len(request.param)}4242"
    spec = AgentSpec(
        "hostile",
        kind="command",
        cmd=f"{sys.executable} {helper / 'attacker.py'} {helper / 'targets.json'}",
        ro=[str(helper)],
    )
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "userns":
            patch.setattr(sandbox, "namespaces_available", lambda: USERNS)
        patch.setattr(sandbox, "MAX_PROCESSES", 20)  # the watch of this process (the agent's), not the runs'
        loop = AgentLoop(
            task_dir, spec, f"attacks-{request.param}", replace(FAST, max_experiments=len(plan)), log=lambda m: None
        )
        out = loop.out
        targets = {
            "plan": plan,
            "marker": marker,
            "cache": str(data.cache_root()),
            "secrets": [
                str(prepared.val_tokens),
                str(prepared.train_tokens),
                str(data.EMBEDDED_CORPUS),
                str(repo / "tasks/tiny/train.py"),
                str(out / "results.tsv"),
            ],
            "records": [
                str(out / "results.tsv"),
                str(appends.ledger_path(out / "results.tsv")),
                str(out / "experiments.jsonl"),
                str(out / "bench.jsonl"),
                str(out / "bench.tsv"),
            ],
            "outside": [
                str(Path(agent.__file__)),
                str(repo / "tasks/tiny/train.py"),
                str(repo / ".git/config"),
                str(other / "train.py"),
                str(loop.worktree.path / ".gitignore"),
                os.path.join(sys.prefix, "pyvenv.cfg"),
            ],
        }
        (helper / "targets.json").write_text(json.dumps(targets))
        loop.worktree.prepare(loop.log)  # so that its files have digests before
        digests = {p: digest(p) for p in targets["outside"] + targets["secrets"]}
        loop.run()
        attacked = Attacked(
            loop,
            [json.loads(l) for l in loop.jsonl.read_text().splitlines()],
            targets,
            digests,
            processes_running(marker),
            loop.proposer.plan,
        )
    return attacked


def test_the_agent_runs_in_the_sandbox_it_was_given(attacked, request):
    assert attacked.plan.level == request.node.callspec.params["attacked"]
    assert [e["n"] for e in attacked.experiments] == list(range(len(attacked.targets["plan"]) + 1))


def test_an_agent_cannot_read_the_data_cache_or_the_user_s_checkout(attacked):
    n = attacked.targets["plan"].index("reads") + 1
    log = attacked.log(n)
    for path in attacked.targets["secrets"]:
        line = next(l for l in log.splitlines() if l.startswith(f"read {path}:"))
        assert "blocked" in line or "got 0 bytes" in line, line  # absent, or covered by /dev/null
    assert "list the cache: blocked" in log
    assert attacked.experiments[n]["status"] == "discard" and attacked.experiments[n]["reason"] == "the change is empty"


def test_an_agent_cannot_write_the_records_and_they_stay_intact(attacked):
    n = attacked.targets["plan"].index("writes_records") + 1
    log = attacked.log(n)
    assert all(f"write {p}: blocked" in log for p in attacked.targets["records"]), log
    out = attacked.loop.out
    statuses = [line.split("\t")[3] for line in (out / "results.tsv").read_text().splitlines()[1:]]
    assert statuses == [e["status"] for e in attacked.experiments] and "forged" not in (out / "results.tsv").read_text()
    assert appends.appended_only(out / "results.tsv", (0, None))  # every row is one the harness appended


def test_an_agent_cannot_edit_the_harness_the_checkout_or_other_worktrees(attacked):
    n = attacked.targets["plan"].index("edits_outside") + 1
    log = attacked.log(n)
    harness = [str(Path(agent.__file__)), os.path.join(sys.prefix, "pyvenv.cfg")]
    assert all(f"write {p}: blocked (" in log for p in harness), log  # shown read-only
    # the rest is not there: blocked, or (in a user namespace) a new file on the run's own /tmp
    assert {p: digest(p) for p in attacked.targets["outside"]} == {
        p: attacked.digests[p] for p in attacked.targets["outside"]
    }
    assert attacked.experiments[n]["reason"] == "the change is empty"


def test_no_process_of_the_agent_outlives_its_experiment(attacked):
    n = attacked.targets["plan"].index("daemon") + 1
    assert "left a daemon" in attacked.log(n)
    assert attacked.survivors == []


def test_an_agent_that_exhausts_memory_fails_its_experiment_with_the_reason(attacked):
    n = attacked.targets["plan"].index("memory") + 1
    assert "MemoryError" in attacked.log(n)
    assert attacked.experiments[n]["status"] == "discard" and "exited with code 1" in attacked.experiments[n]["reason"]


def test_a_fork_bomb_is_stopped_at_the_process_limit(attacked):
    n = attacked.targets["plan"].index("processes") + 1
    e = attacked.experiments[n]
    assert e["status"] == "discard" and "processes (limit 20); it was killed" in e["reason"], e["reason"]
    assert attacked.experiments[-1]["n"] == n  # and the loop went on to record it


def test_an_honest_agent_command_gets_its_change_measured(attacked):
    if "honest" not in attacked.targets["plan"]:
        pytest.skip("run once, as the unprivileged uid")
    n = attacked.targets["plan"].index("honest") + 1
    e = attacked.experiments[n]
    assert e["description"] == "learning rate 3e-3" and e["stage"] == "confirm" and e["status"] == "keep", e
    assert "LR = 3e-3" in git(attacked.loop.worktree.path, "show", f"{e['commit']}:tasks/tiny/train.py")


def test_only_plain_files_come_back_from_the_agent_s_copy(tmp_path):
    task, copy = tmp_path / "task", tmp_path / "copy"
    task.mkdir()
    (task / "train.py").write_text("old\n")
    (task / "gone.py").write_text("deleted by the agent\n")
    copy.mkdir()
    (copy / "train.py").write_text("new\n")
    (copy / "extra").mkdir()
    (copy / "extra" / "notes.md").write_text("added\n")
    assert copy_back(copy, task) == ""
    assert (task / "train.py").read_text() == "new\n" and not (task / "gone.py").exists()
    assert (task / "extra" / "notes.md").read_text() == "added\n"
    (copy / "train.py").unlink()
    (copy / "train.py").symlink_to("/etc/passwd")  # would copy a file of the harness's user into the worktree
    assert "train.py, which is not a plain file" in copy_back(copy, task)
    assert (task / "train.py").read_text() == "new\n"


def test_agent_env_names_must_be_set_and_ro_paths_must_exist(monkeypatch):
    monkeypatch.delenv("AR_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(agent.AgentError, match="AR_TEST_NO_SUCH_KEY .* not set in this environment"):
        AgentSpec.from_dict("a", {"kind": "command", "cmd": "true", "env": ["AR_TEST_NO_SUCH_KEY"]})
    with pytest.raises(agent.AgentError, match="/no/such/path .* does not exist"):
        AgentSpec.from_dict("a", {"kind": "command", "cmd": "true", "ro": ["/no/such/path"]})


PROBE = textwrap.dedent("""
    import os, socket, sys
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
        net = "reached"
    except OSError:
        net = "unreachable"
    print(f"{net} key={os.environ.get('AR_TEST_KEY')} other={os.environ.get('AR_TEST_OTHER')}")
""")


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_the_agent_gets_the_network_unless_offline_and_only_the_variables_it_was_given(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("AR_TEST_KEY", "sk-given")
    monkeypatch.setenv("AR_TEST_OTHER", "sk-not-given")
    listener = socket.socket()  # a server on this machine, as the model's API would be
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    helper = tmp_path / "helper"
    helper.mkdir(mode=0o755)
    (helper / "probe.py").write_text(PROBE)
    task_dir = copy_tiny_task(tmp_path)
    (tmp_path / "logs").mkdir()
    spec = AgentSpec(
        "probe",
        kind="command",
        cmd=f"{sys.executable} {helper / 'probe.py'} {listener.getsockname()[1]}",
        env=["AR_TEST_KEY"],
        ro=[str(helper)],
        offline=offline,
    )
    proposer = CommandProposer(spec, tmp_path / "logs", Children(), sandbox.namespaces_available(), "cpu", [])
    proposal = proposer.propose(Context(load_task(task_dir), task_dir, "", {}, [], None, 1, tmp_path / "results.tsv"))
    listener.close()
    assert proposal.description == f"{'unreachable' if offline else 'reached'} key=sk-given other=None"
