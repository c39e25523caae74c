"""Records of runs, results files, machine fingerprints and stored baselines.

- results.tsv starts with autoresearch's columns (commit, val_bpb, memory_gb, status,
  description), then task, profile, seed, tokens, steps, seconds, machine, metric; results.jsonl
  holds the full RunRecord. The val_bpb column (autoresearch's name, kept so its tools read the
  file) holds the value of the task's metric, named in the last column (val_bpb, val_loss,
  val_accuracy), for an ok run and 0.000000 otherwise, as autoresearch writes for a crash; a dirty
  work tree shows as "<commit>+dirty".
- Appends are atomic against concurrent writers and crashes: an exclusive flock on one lock file
  beside results.tsv covers both files, each line goes out in one os.write on an O_APPEND
  descriptor, then fsync. Existing rows are never rewritten; a failed append (full disk) removes
  only its own partial bytes, so the two files stay in step and the next row starts on a fresh line.
- Each appended row's sha256 goes first to a ledger beside its file (.results.tsv.appends), so that
  a run's tamper check (results_mark / appended_only) accepts rows that concurrent runs appended
  meanwhile and nothing else.
- read_results skips unreadable lines (a torn last line after a crash) with a warning.
- A machine fingerprint names what makes scores comparable: device kind and model, torch and CUDA
  versions, profile (the session adds training mode and budget). Its id is a readable file name;
  baselines are stored per task × fingerprint as baselines/<task>/<fingerprint id>.json, with the
  noise measured from their runs (stats.Noise: the seeds' spread, and a seed's rerun difference
  where a seed ran twice), which thresholds take before the task profile's figures, and the
  machine's speed when they were recorded (time mode), each run's steps and the digest of the file
  that ran, so that a later time-mode run can tell whether it ran at the same speed.
- check_writable tells before a session starts whether its results files can be written.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from . import calibrate, files, stats

TSV_COLUMNS = (
    "commit",
    "val_bpb",
    "memory_gb",
    "status",
    "description",
    "task",
    "profile",
    "seed",
    "tokens",
    "steps",
    "seconds",
    "machine",
    "metric",
)
MIN_FREE_BYTES = 64 << 20  # free space a session needs beside its results files (check_writable)


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
    metric: str  # e.g. val_bpb
    value: float | None
    status: str  # ok | crash | timeout | violation
    description: str
    error: str
    seconds: float  # training wall time
    tokens: int
    steps: int
    peak_mem_gb: float
    params: int
    eval_seconds: float
    overhead_seconds: float
    machine: str  # fingerprint id
    started_at: str  # ISO time
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        """The inverse of to_dict; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def tsv_row(self) -> str:
        value = self.value if self.status == "ok" and self.value is not None else 0.0
        cells = (
            self.commit + ("+dirty" if self.dirty else ""),
            f"{value:.6f}",
            f"{self.peak_mem_gb:.1f}",
            self.status,
            self.description,
            self.task,
            self.profile,
            self.seed,
            self.tokens,
            self.steps,
            f"{self.seconds:.1f}",
            self.machine,
            self.metric,
        )
        return tsv_line(cells)


@functools.cache
def _machine(device: str) -> tuple[tuple[str, str], ...]:
    import torch

    gpu = device == "cuda" and torch.cuda.is_available()
    return (
        ("device", "cuda" if gpu else "cpu"),
        ("model", torch.cuda.get_device_name() if gpu else _cpu_model()),
        ("torch", torch.__version__.split("+")[0]),
        ("cuda", torch.version.cuda or "none"),
        ("python", platform.python_version()),
    )


def machine_fingerprint(profile_name: str, device: str = "cpu") -> dict:
    """What makes scores comparable: device kind and model, torch, CUDA and Python versions, profile.
    A cuda profile on a machine without a visible GPU reports the CPU it would fall back to."""
    return {**dict(_machine(device)), "profile": profile_name}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# Marketing words that make CPU names long without telling models apart.
_NOISE = re.compile(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|\b\d+-core\b|@.*$")


def _slug(text: object, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")[:limit].strip("-") or "unknown"


def tsv_line(cells) -> str:
    """One TSV row of cells: tabs and line breaks inside a cell become spaces."""
    return "\t".join(re.sub(r"[\t\r\n]+", " ", str(c)) for c in cells) + "\n"


def fingerprint_id(fp: dict) -> str:
    """A readable, filesystem-safe id, e.g. cpu-amd-epyc-7b13__torch-2.13.0__cuda-none__cpu;
    a fingerprint with a training mode and budget gets them too (…__cpu__time-45). The Python
    version is recorded in the fingerprint but not matched on."""
    model = _NOISE.sub(" ", fp["model"].lower())
    parts = [
        _slug(f"{fp['device']} {model}"),
        f"torch-{_slug(fp['torch'])}",
        f"cuda-{_slug(fp['cuda'])}",
        _slug(fp["profile"]),
    ]
    if "mode" in fp:
        budget = fp["budget"]
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        parts.append(_slug(f"{fp['mode']}-{budget}"))
    return "__".join(parts)


def file_digest(path: str | Path) -> str | None:
    """sha256 of the file's contents, None if it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def ledger_path(path: Path) -> Path:
    """The ledger of appended-row hashes beside a results file; runs may not open it (runner)."""
    return Path(path).with_name(f".{Path(path).name}.appends")


def _line_hash(row: bytes) -> str:
    return hashlib.sha256(row).hexdigest()


def results_mark(path: str | Path) -> tuple[int, str | None]:
    """(size, sha256) of a results file now (0, None if it does not exist), for appended_only."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return 0, None
    return len(data), hashlib.sha256(data).hexdigest()


def appended_only(path: str | Path, mark: tuple[int, str | None]) -> bool:
    """Whether the file still holds what it held at mark, followed only by rows that append_lines
    wrote (each listed by hash in the .<name>.appends ledger beside it): runs that go on at the same
    time (xdist workers, Ray tasks, local slots) append their records meanwhile; anything else is a change."""
    size, digest = mark
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return digest is None
    if digest is not None and hashlib.sha256(data[:size]).hexdigest() != digest:
        return False
    added = data[size:]
    if not added:
        return True
    try:
        known = set(ledger_path(path).read_text().split())
    except FileNotFoundError:
        return False
    return added.endswith(b"\n") and all(
        _line_hash(row) in known for row in added.splitlines(keepends=True) if row.strip()
    )


class _Appender:
    """Appends to one file inside the caller's lock; rollback() removes what it wrote."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.start = os.fstat(self.fd).st_size
        self.end = self.start

    def write(self, line: str, header: str = "") -> None:
        if self.start == 0:
            line = header + line
        elif os.pread(self.fd, 1, self.start - 1) != b"\n":  # an earlier torn line: start afresh
            line = "\n" + line
        data = line.encode()
        with open(ledger_path(self.path), "a") as ledger:  # first: whoever sees a row finds its hash (appended_only)
            ledger.writelines(_line_hash(row) + "\n" for row in data.splitlines(keepends=True) if row.strip())
        while data:  # one write unless the disk runs out mid-line
            written = os.write(self.fd, data)
            if not written:
                raise OSError(errno.EIO, "write made no progress")
            self.end += written
            data = data[written:]
        os.fsync(self.fd)

    def rollback(self) -> None:
        """Cut back to the starting size, only if nobody outside the lock appended meanwhile."""
        try:
            if os.fstat(self.fd).st_size == self.end and self.end > self.start:
                os.ftruncate(self.fd, self.start)
        except OSError:
            pass


def append_results(record: RunRecord, tsv_path: str | Path, jsonl_path: str | Path) -> None:
    """Append the record to results.tsv and results.jsonl, both or neither."""
    append_lines(
        [
            (Path(tsv_path), record.tsv_row(), "\t".join(TSV_COLUMNS) + "\n"),
            (Path(jsonl_path), json.dumps(record.to_dict()) + "\n", ""),
        ]
    )


def append_lines(entries: list[tuple[Path, str, str]]) -> None:
    """Append one line to each file of (path, line, header for a new file), all or none, under one
    flock beside the first file; raises a one-line OSError that says what to do when the disk is full."""
    first = entries[0][0]
    first.parent.mkdir(parents=True, exist_ok=True)
    with open(first.with_name(f".{first.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        appenders: list[_Appender] = []
        where = first
        try:
            for where, line, header in entries:
                appenders.append(_Appender(where))
                appenders[-1].write(line, header)
        except OSError as e:
            for a in appenders:
                a.rollback()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(
                    e.errno,
                    f"disk full while appending to {where}: this row was not recorded "
                    f"(earlier rows are intact); free space and rerun",
                ) from None
            raise
        finally:
            for a in appenders:
                os.close(a.fd)


def check_writable(path: str | Path, min_free: int = MIN_FREE_BYTES) -> str:
    """Why files cannot be written at path (a file to append to, or a folder to write files in),
    or "": the file, or else the folder (or its nearest existing ancestor, for one that does not
    exist yet), must open for writing, and its file system must have min_free bytes free. Leaves
    nothing behind."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if path.is_file():
            open(path, "a").close()
        else:
            tempfile.TemporaryFile(dir=folder).close()
        disk = os.statvfs(folder)
    except OSError as e:
        return f"cannot write {path} ({e.strerror or e})"
    if disk.f_bavail * disk.f_frsize < min_free:
        return f"only {disk.f_bavail * disk.f_frsize >> 20} MB free for {path}, at least {min_free >> 20} MB needed"
    return ""


def read_results(jsonl_path: str | Path) -> list[RunRecord]:
    """Every complete record of results.jsonl ([] if it does not exist); an unreadable line, such as
    a torn last line after a crash, is skipped with a warning."""
    try:
        raw = Path(jsonl_path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(RunRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            warnings.warn(
                f"{jsonl_path}: skipping unreadable line {i} (torn by a crash?)", RuntimeWarning, stacklevel=2
            )
    return records


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
