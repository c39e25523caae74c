"""Stored baselines, one per task × machine fingerprint: baselines/<task>/<fingerprint id>.json.

A baseline holds its runs' values, seeds and steps, the noise measured from them (stats.Noise: the
seeds' spread, and a seed's rerun difference where a seed ran twice), which thresholds take before
the task profile's figures, the machine's speed when they were recorded (time mode) and the digest of
the file that ran, so that a later time-mode run can tell whether it ran at the same speed. Saved again
for the same file on the same data (and machine speed), it keeps its runs and gains the new ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import calibrate, files, stats
from .fingerprints import fingerprint_id
from .schema import RunRecord


@dataclass
class Baseline:
    values: list[float]
    mean: float
    std: float
    n: int
    fingerprint: dict
    commit: str
    data_id: str | None = None  # data.PreparedData.data_id of its runs; None in files from before it existed
    seeds: list[int] | None = None  # the seed of each value; None in files from before they were stored
    noise: stats.Noise = field(default_factory=stats.Noise)  # measured from its runs; empty in older files
    steps: list[int] | None = None  # the steps of each run; None in files from before they were stored
    calibration: dict | None = None  # machine speed around its runs (time mode), {"before": …, "after": …}
    source: str | None = None  # sha256 of the file its runs trained with

    @property
    def runs(self) -> list[tuple[int | None, float]]:
        """(seed, value) pairs; the seed is None where the file does not say."""
        return list(zip(self.seeds or [None] * len(self.values), self.values))

    @classmethod
    def from_file(cls, path: str | Path) -> Baseline:
        """Read a baseline file; raises ValueError with a one-line reason and what to do."""
        try:
            d = json.loads(Path(path).read_text())
            per_run = {
                k: list(d[k]) if d.get(k) and len(d[k]) == len(d["values"]) else None for k in ("seeds", "steps")
            }
            return cls(
                list(d["values"]),
                d["mean"],
                d["std"],
                d["n"],
                d["fingerprint"],
                d["commit"],
                d.get("data_id"),
                **per_run,
                noise=stats.Noise.from_dict(d.get("noise", {}), f"{path}: noise"),
                calibration=d.get("calibration"),
                source=d.get("source"),
            )
        except FileNotFoundError:
            raise ValueError(
                f"{path}: no such baseline file; pass a file that --ar-save-baseline wrote "
                f"(baselines/<task>/*.json), or --ar-baseline auto or none"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{path}: not a usable baseline file ({e!r}); delete it and record a new one with --ar-save-baseline"
            ) from None


def _baseline_path(baselines_dir: str | Path, task: str, fingerprint: dict) -> Path:
    return Path(baselines_dir) / task / f"{fingerprint_id(fingerprint)}.json"


def save_baseline(
    baselines_dir: str | Path,
    task: str,
    fingerprint: dict,
    records: list[RunRecord],
    calibration: dict | None = None,
    source: str | None = None,
) -> Path:
    """Write baselines/<task>/<fingerprint id>.json atomically (temp file, fsync, rename) from the
    records that have a value, with the machine's speed around them and the digest of their file;
    returns its path. A stored baseline of the same file on the same data (and, in time mode, at the
    same machine speed) keeps its runs and gains these: saved twice, every seed has two runs, and
    their differences measure the paired noise. Anything else is replaced."""
    scored = [r for r in records if r.value is not None]
    if not scored:
        raise ValueError(f"{task}: no run with a value to store as a baseline")
    path = _baseline_path(baselines_dir, task, fingerprint)
    data_ids = {r.extra.get("data_id") for r in scored}
    data_id = data_ids.pop() if len(data_ids) == 1 else None
    values, seeds, steps = [r.value for r in scored], [r.seed for r in scored], [r.steps for r in scored]
    commit = scored[0].commit
    if (kept := _extendable(path, source, data_id, calibration)) is not None:
        values, seeds, steps = kept.values + values, kept.seeds + seeds, kept.steps + steps
        commit = kept.commit
    summary = stats.summarize(values)
    noise = stats.Noise.measure(list(zip(seeds, values)), f"{len(values)} runs of this baseline")
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "task": task,
        "metric": scored[0].metric,
        "values": values,
        "data_id": data_id,
        "seeds": seeds,
        "steps": steps,
        "calibration": calibration,
        "source": source,
        "mean": summary.mean,
        "std": summary.std,
        "n": summary.n,
        "noise": noise.to_dict(),
        "fingerprint": fingerprint,
        "fingerprint_id": path.stem,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return files.write(path, json.dumps(content, indent=2) + "\n")


def _extendable(path: Path, source: str | None, data_id: str | None, calibration: dict | None) -> Baseline | None:
    """The stored baseline at path when new runs of `source` on `data_id` may join its runs, else None."""
    try:
        kept = Baseline.from_file(path)
    except ValueError:  # none, or unreadable: replaced
        return None
    if source is None or kept.source != source or data_id is None or kept.data_id != data_id:
        return None
    if kept.seeds is None or kept.steps is None:
        return None
    if (calibration or kept.calibration) and (
        not calibration
        or not kept.calibration
        or calibrate.mismatch(calibrate.around(calibration), calibrate.around(kept.calibration), "the stored baseline")
    ):
        return None
    return kept


def load_baseline(baselines_dir: str | Path, task: str, fingerprint: dict) -> Baseline | None:
    """The stored baseline whose fingerprint id equals this fingerprint's, or None."""
    path = _baseline_path(baselines_dir, task, fingerprint)
    return Baseline.from_file(path) if path.is_file() else None
