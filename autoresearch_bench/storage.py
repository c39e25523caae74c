"""Records of runs, results files, machine fingerprints and stored baselines.

- results.tsv starts with autoresearch's columns (commit, val_bpb, memory_gb, status, description),
  then task, profile, seed, tokens, steps, seconds, machine; results.jsonl holds the full record.
  A crash writes 0.000000 as autoresearch does. Appends are atomic against concurrent writers and
  crashes: an exclusive flock on a lock file beside the results, one os.write of the whole line on
  an O_APPEND descriptor, then fsync. Rows are never rewritten.
- A machine fingerprint names what makes scores comparable: device model, torch and CUDA versions,
  profile (plus, from the session, training mode and budget). Baselines are stored per task ×
  fingerprint as baselines/<task>/<fingerprint id>.json.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from . import stats

TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description",
               "task", "profile", "seed", "tokens", "steps", "seconds", "machine")


@dataclass
class RunRecord:
    task: str
    candidate: str
    commit: str
    dirty: bool
    profile: str
    seed: int
    mode: str  # time | tokens
    budget: float  # seconds or tokens
    metric: str
    value: float | None
    status: str  # ok | crash | timeout | violation
    description: str
    error: str
    seconds: float
    tokens: int
    steps: int
    peak_mem_gb: float
    params: int
    eval_seconds: float
    overhead_seconds: float
    machine: str
    started_at: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def tsv_row(self) -> str:
        cells = (self.commit + ("+dirty" if self.dirty else ""), f"{self.value or 0.0:.6f}",
                 f"{self.peak_mem_gb:.1f}", self.status, self.description, self.task, self.profile,
                 self.seed, self.tokens, self.steps, f"{self.seconds:.1f}", self.machine)
        return "\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in cells) + "\n"


def machine_fingerprint(profile: str, device: str = "cpu") -> dict:
    import torch
    if device == "cuda" and torch.cuda.is_available():
        model = torch.cuda.get_device_name()
    else:
        model = _cpu_model()
    return {"device": model, "torch": torch.__version__.split("+")[0], "cuda": torch.version.cuda or "none",
            "python": platform.python_version(), "profile": profile}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")[:40]


def fingerprint_id(fp: dict) -> str:
    """A readable, filesystem-safe id, e.g. nvidia-h100-80gb-hbm3__torch-2.11.0__cuda-13.0__h100."""
    parts = [_slug(fp["device"]), f"torch-{fp['torch']}", f"cuda-{fp['cuda']}", _slug(fp["profile"])]
    if "mode" in fp:
        parts.append(f"{fp['mode']}-{_slug(fp['budget'])}")
    return "__".join(parts)


def git_state(path: Path) -> tuple[str, bool]:
    """(short commit, dirty) of the repository holding path; ("nogit", False) outside one."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout
        return git("rev-parse", "--short=7", "HEAD").strip(), bool(git("status", "--porcelain").strip())
    except (OSError, subprocess.CalledProcessError):
        return "nogit", False


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _append_line(path: Path, line: str, header: str = "") -> None:
    """Append one line under an exclusive lock; write the header first when the file is new or empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = ((header if os.fstat(fd).st_size == 0 else "") + line).encode()
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, f"short write to {path}")
            os.fsync(fd)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"disk full while appending to {path}: the run was not recorded; "
                                            f"free space and rerun (earlier rows are intact)") from None
            raise
        finally:
            os.close(fd)


def append_results(record: RunRecord, tsv_path: Path, jsonl_path: Path) -> None:
    _append_line(Path(tsv_path), record.tsv_row(), header="\t".join(TSV_COLUMNS) + "\n")
    _append_line(Path(jsonl_path), json.dumps(record.to_dict()) + "\n")


def read_results(jsonl_path: Path) -> list[RunRecord]:
    """Every complete record; a torn last line (a crash mid-write) is skipped with a warning."""
    records = []
    for i, line in enumerate(Path(jsonl_path).read_text().splitlines()):
        try:
            records.append(RunRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            print(f"autoresearch-bench: skipping unreadable line {i + 1} of {jsonl_path}", file=sys.stderr)
    return records


@dataclass(frozen=True)
class Baseline:
    values: tuple[float, ...]
    mean: float
    std: float
    n: int
    fingerprint: dict
    commit: str

    @classmethod
    def from_file(cls, path: Path) -> "Baseline":
        d = json.loads(Path(path).read_text())
        return cls(tuple(d["values"]), d["mean"], d["std"], d["n"], d["fingerprint"], d["commit"])


def save_baseline(baselines_dir: Path, task: str, fingerprint: dict, records: list[RunRecord]) -> Path:
    values = [r.value for r in records if r.value is not None]
    summary = stats.summarize(values)
    path = Path(baselines_dir) / task / f"{fingerprint_id(fingerprint)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"task": task, "values": values, "seeds": [r.seed for r in records], "mean": summary.mean,
               "std": summary.std, "n": summary.n, "fingerprint": fingerprint, "commit": records[0].commit,
               "metric": records[0].metric, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_baseline(baselines_dir: Path, task: str, fingerprint: dict) -> Baseline | None:
    path = Path(baselines_dir) / task / f"{fingerprint_id(fingerprint)}.json"
    return Baseline.from_file(path) if path.is_file() else None
