"""Reports that tools read: a benchmark session, an agent's loop or a league as one JSON document.

`pytest --autoresearch --ar-json report.json` writes the session's; the agent loop writes report.json
beside its records after each experiment, the league beside league.json when it ends. The same
document is what the HTML report (htmlreport.py, --ar-html) and the tracker (track.py) are drawn
from, and `autoresearch-bench compare` reads its runs as it reads a results.jsonl.

The format (SCHEMA, SCHEMA_VERSION; a reader refuses a newer major version and ignores keys it does
not know, so that fields can be added without a new version). Numbers that are not finite (no
interval, no p) are null. Every document has:

    schema, schema_version    "autoresearch-bench/report", 1
    kind                      "session" | "agent" | "league"
    created_at, harness       ISO time (UTC); the harness's version
    machine                   the machine fingerprint (device, model, torch, cuda, python) plus host,
                              CPU count and what pytest_autoresearch_update_machine_info added
    settings                  how it ran: the session's options (seeds, tokens or budget, profile, ...),
                              or the loop's / league's Settings

kind "session" adds `tasks`, one per task:

    task, metric, direction   e.g. "gpt_pretrain", "val_bpb", "lower"
    profile, fingerprint,     the profile; the fingerprint baselines match on (machine + mode + budget)
    fingerprint_id            and its id (the stored baseline's file name)
    data_ids                  the data ids of the task's ok runs (hash of validation tokens + tokenizer)
    baseline                  what candidates were compared with, or null: kind "stored" | "base",
                              label, commit, data_id, runs [{seed, value}] (seed null where unknown)
    candidates                best first, each: name, label (as in the table), origin, path, role
                              ("candidate" | "base"), status (ok | crash | timeout | violation |
                              interrupted | not run), error, skipped, stopped, summary {n, mean, std,
                              ci95}, decision (null when none was made: verdict, delta, ci [lo, hi], p,
                              test, threshold, detectable, reason, open; see stats.Decision),
                              calibration (machine speed around the runs, time mode), runs: the
                              storage.schema.RunRecord of each run, as results.jsonl holds it, whose
                              extra.curve is the run's loss curve [[step, seconds, loss], ...]

kind "agent" adds agent (its AgentSpec less nothing secret: the key's variable name only), task,
metric, direction, tag, experiments (each agent.Experiment: n, commit, value, status, description,
reason, stage, seeds, runs, best_runs, p, tokens, cost, seconds) and runs (the harness's RunRecords
of its pytest runs, bench.jsonl).

kind "league" adds league, experiments, heldout_seeds, noise_units, leaderboard (the rows of the
printed table), entries (each league.Entry), agents {task: {agent: [experiments]}} and runs (the
held-out RunRecords, heldout.jsonl).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from . import files, stats
from .storage import fingerprints, schema

SCHEMA = "autoresearch-bench/report"
SCHEMA_VERSION = 1
KINDS = ("session", "agent", "league")


class ReportError(Exception):
    """A file that is not a report this version can read; the message says what to do."""


def _version() -> str:
    try:
        return metadata.version("autoresearch-bench")
    except metadata.PackageNotFoundError:
        return "unknown"


def machine_info(profile: str = "", device: str = "cpu") -> dict:
    """The machine as reports show it: its fingerprint (without the profile, unless given), host, CPUs."""
    fingerprint = fingerprints.machine_fingerprint(profile, device)
    if not profile:
        fingerprint.pop("profile")
    return {**fingerprint, "host": platform.node(), "cpus": os.cpu_count()}


def document(kind: str, machine: dict, settings: dict, **body) -> dict:
    """The envelope of every report: schema, version, kind, time, harness, machine, settings."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "harness": _version(),
        "machine": machine,
        "settings": settings,
        **body,
    }


def plain(value):
    """value as JSON data: dataclasses and tuples unfolded, paths as text, non-finite numbers null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decision_dict(decision: stats.Decision | None) -> dict | None:
    return plain(decision) if decision else None


def summary_dict(values: list[float]) -> dict | None:
    """n, mean, std and the 95% interval of the mean of a candidate's ok values (None without any)."""
    if not values:
        return None
    s = stats.summarize(values)
    return plain({"n": s.n, "mean": s.mean, "std": s.std, "ci95": s.ci95 if s.n > 1 else None})


def session_document(bench, machine: dict) -> dict:
    """A BenchmarkSession (session.py) as a report of kind session: its options, and per task its
    reference, candidates (best first), decisions and runs."""
    from .candidate import BASE

    tasks: dict[str, dict] = {}
    for r in bench.ranked():
        if not (r.records or r.skipped or r.stopped):
            continue
        if r.task.name not in tasks:
            fingerprint = bench.fingerprint(r.profile)
            tasks[r.task.name] = {
                "task": r.task.name,
                "metric": r.task.metric,
                "direction": r.task.direction,
                "profile": r.profile.name,
                "fingerprint": fingerprint,
                "fingerprint_id": fingerprints.fingerprint_id(fingerprint),
                "data_ids": [],
                "baseline": _reference(bench, r.task, r.profile),
                "candidates": [],
            }
        task = tasks[r.task.name]
        task["data_ids"] = sorted(
            set(task["data_ids"])
            | {x.extra["data_id"] for x in r.records if x.status == "ok" and x.extra.get("data_id")}
        )
        task["candidates"].append(
            plain(
                {
                    "name": r.candidate.name,
                    "label": r.label,
                    "origin": r.candidate.origin,
                    "path": r.candidate.path,
                    "role": "base" if r.candidate.name == BASE else "candidate",
                    "status": r.status,
                    "error": r.error,
                    "skipped": r.skipped,
                    "stopped": r.stopped,
                    "baseline": r.baseline or None,
                    "summary": summary_dict(r.values),
                    "decision": decision_dict(r.decision),
                    "calibration": r.calibration,
                    "runs": [x.to_dict() for x in r.records],
                }
            )
        )
    return document("session", machine, plain(dataclasses.asdict(bench.options)), tasks=list(tasks.values()))


def _reference(bench, task, profile) -> dict | None:
    """What the task's candidates were compared with: the stored baseline, else the base's runs. (An
    xdist controller planned nothing: it reads the stored baseline as its workers did.)"""
    from .candidate import BASE

    stored = bench.baselines[task.name] if task.name in bench.baselines else bench.stored_baseline(task, profile)
    base = bench.results.get((task.name, BASE))
    if stored:
        return plain(
            {
                "kind": "stored",
                "label": f"stored baseline @{stored.commit}",
                "commit": stored.commit,
                "data_id": stored.data_id,
                "runs": [{"seed": s, "value": v} for s, v in stored.runs],
            }
        )
    if base and base.values:
        return plain(
            {
                "kind": "base",
                "label": base.label,
                "commit": base.records[0].commit,
                "data_id": None,
                "runs": [{"seed": s, "value": v} for s, v in base.runs],
            }
        )
    return None


def _jsonl(path: Path) -> list[dict]:
    """The readable lines of a JSON-lines file ([] if it does not exist; a torn line is skipped)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def agent_document(out: Path, task, tag: str, spec, settings, machine: dict) -> dict:
    """An agent loop's records folder (the agent package: experiments.jsonl, bench.jsonl) as a report of kind agent."""
    return document(
        "agent",
        machine,
        plain(settings),
        agent=plain(spec),
        task=task.name,
        metric=task.metric,
        direction=task.direction,
        tag=tag,
        experiments=plain(_jsonl(out / "experiments.jsonl")),
        runs=plain(_jsonl(out / "bench.jsonl")),
    )


def league_document(out: Path, machine: dict) -> dict:
    """A league's folder (league.py: league.json, <task>/<agent>/experiments.jsonl, heldout.jsonl) as a
    report of kind league."""
    league = json.loads((out / "league.json").read_text())
    agents = {
        task: {
            agent: plain(_jsonl(out / task / agent / "experiments.jsonl"))
            for agent in dict.fromkeys(e["agent"] for e in league["entries"] if e["task"] == task)
        }
        for task in dict.fromkeys(e["task"] for e in league["entries"])
    }
    return document(
        "league",
        machine,
        league["settings"],
        league=league["league"],
        experiments=league["experiments"],
        heldout_seeds=league["heldout_seeds"],
        noise_units=league["noise_units"],
        leaderboard=plain(league["leaderboard"]),
        entries=plain(league["entries"]),
        agents=agents,
        runs=plain(_jsonl(out / "heldout.jsonl")),
    )


def write(doc: dict, path: str | Path) -> Path:
    """Write the document atomically."""
    return files.write(path, json.dumps(plain(doc), indent=1, allow_nan=False) + "\n")


def load(path: str | Path) -> dict:
    """A report written by write(); ReportError with what to do for a file that is not one, or is newer."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report; pass the file that --ar-json wrote") from None
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a JSON report ({e}); pass the file that --ar-json wrote") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ReportError(
            f'{path}: not an autoresearch-bench report (no "schema": "{SCHEMA}"); pass the '
            f"file that --ar-json wrote, or a results.jsonl"
        )
    if not isinstance(doc.get("schema_version"), int) or doc["schema_version"] > SCHEMA_VERSION:
        raise ReportError(
            f"{path}: report schema version {doc.get('schema_version')!r}, newer than this "
            f"harness reads ({SCHEMA_VERSION}); upgrade autoresearch-bench"
        )
    return doc


def records(doc: dict) -> list[schema.RunRecord]:
    """Every run a report holds: the session's candidates' runs, an agent's or a league's runs."""
    rows = [run for task in doc.get("tasks", []) for c in task["candidates"] for run in c["runs"]]
    return [schema.RunRecord.from_dict(r) for r in rows + doc.get("runs", [])]


def read_records(path: str | Path) -> list[schema.RunRecord]:
    """The runs of a report (.json) or of a results file (.jsonl)."""
    return records(load(path)) if Path(path).suffix == ".json" else schema.read_results(path)
