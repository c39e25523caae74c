"""The experiment tracker: a session's runs as TensorBoard event files (`--ar-tensorboard DIR`).

    pip install 'autoresearch-bench[track]'
    pytest --autoresearch --ar-tensorboard runs/
    tensorboard --logdir runs/

Each run is one TensorBoard run, DIR/<task>/<candidate>/seed<k>-<start time>: its loss curve (scalar
`loss` by step, from the progress stream kept with the record), its final metric (scalar
`<metric>`, e.g. val_bpb, at its last step), its settings and verdict (text `settings`, `verdict`),
and both as hyperparameters (the HPARAMS tab: candidate, seed, profile, mode, budget, commit and
verdict against the metric). The parent process writes them at the end of the session, from the
session's report document (report.py), so the numbers are the table's; candidate code, which runs
without network in its sandbox, never talks to the tracker.

Why TensorBoard: its event files are plain local files (nothing to serve, no account, no network;
CI can upload the folder as an artifact), torch ships the writer (torch.utils.tensorboard) and the
`tensorboard` package, the only extra, installs in seconds from wheels and reads the files back
(EventAccumulator), which the tests do. MLflow's file store pulls in a web stack (Flask,
SQLAlchemy, pandas, ...) several times the size; W&B's offline mode writes files only its own
service reads back and needs `wandb sync` to show anything.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from . import files

RUN_SETTINGS = ("task", "candidate", "seed", "profile", "mode", "budget", "commit", "status", "machine")


def write_tensorboard(doc: dict, folder: str | Path) -> int:
    """Write each run of a session report as a TensorBoard run under folder; how many runs."""
    from torch.utils.tensorboard import SummaryWriter

    count = 0
    for task in doc["tasks"]:
        for candidate in task["candidates"]:
            d = candidate["decision"]
            verdict = (
                f"{d['verdict']} against the {candidate['baseline']}: {d['reason']}"
                if d
                else candidate["error"] or "no decision (no baseline to compare with)"
            )
            for run in candidate["runs"]:
                name = f"seed{run['seed']}-{files.safe_name(run['started_at'])}"
                writer = SummaryWriter(
                    log_dir=str(
                        Path(folder) / files.safe_name(task["task"]) / files.safe_name(candidate["label"]) / name
                    )
                )
                start = datetime.fromisoformat(run["started_at"]).timestamp()  # TensorBoard's relative time axis
                try:
                    for step, elapsed, loss in run.get("extra", {}).get("curve") or []:
                        if loss is not None:
                            writer.add_scalar("loss", loss, step, walltime=start + elapsed)
                    settings = {k: run[k] for k in RUN_SETTINGS} | {"candidate": candidate["label"]}
                    writer.add_text(
                        "settings",
                        "\n".join(f"    {k}: {v}" for k, v in settings.items())
                        + f"\n\n    session: {json.dumps(doc['settings'])}",
                    )
                    writer.add_text("verdict", verdict)
                    if run["value"] is not None:
                        writer.add_scalar(run["metric"], run["value"], run["steps"])
                        writer.add_hparams(
                            {
                                **{
                                    k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                    for k, v in settings.items()
                                },
                                "verdict": d["verdict"] if d else "none",
                            },
                            {f"hparam/{run['metric']}": run["value"]},
                            run_name=".",
                        )
                finally:
                    writer.close()
                count += 1
    return count
