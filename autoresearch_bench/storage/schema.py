"""A run's record and the results files that hold them: results.tsv and results.jsonl.

results.tsv starts with autoresearch's columns (commit, val_bpb, memory_gb, status, description), then
task, profile, seed, tokens, steps, seconds, machine, metric; results.jsonl holds the full RunRecord.
The val_bpb column (autoresearch's name, kept so its tools read the file) holds the value of the task's
metric, named in the last column (val_bpb, val_loss, val_accuracy), for an ok run and 0.000000
otherwise, as autoresearch writes for a crash; a dirty work tree shows as "<commit>+dirty". Rows go out
through appends.append_lines (both files or neither); read_results skips unreadable lines (a torn last
line after a crash) with a warning.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .appends import append_lines

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


def tsv_line(cells) -> str:
    """One TSV row of cells: tabs and line breaks inside a cell become spaces."""
    return "\t".join(re.sub(r"[\t\r\n]+", " ", str(c)) for c in cells) + "\n"


def append_results(record: RunRecord, tsv_path: str | Path, jsonl_path: str | Path) -> None:
    """Append the record to results.tsv and results.jsonl, both or neither."""
    append_lines(
        [
            (Path(tsv_path), record.tsv_row(), "\t".join(TSV_COLUMNS) + "\n"),
            (Path(jsonl_path), json.dumps(record.to_dict()) + "\n", ""),
        ]
    )


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
