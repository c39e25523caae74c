"""The protocol where the harness's processes meet: specs, frames and shared buffers (standard library only).

Processes of one run (runner.py starts them; arrows are pipes the runner creates):

    feeder  (trusted: numpy, the train token file)  --batches-->  trainer (candidate code, sandboxed)
            <--requests--
    scorer  (trusted: the validation rows, never imports candidate code)  --inputs-->  model (candidate
            <--"done"-- (logits in a buffer the scorer shares)                         code, sandboxed)

- Every process gets one frozen spec as JSON (`write_spec` / `read_spec`) and reports to the runner
  as JSON lines on the fd named by RESULT_FD_ENV: {"kind": Kind, ...} (KINDS: started, progress,
  result, error, violation, ready, check, served). Nothing a process prints is parsed.
- Trainer → feeder: BATCH_REQUEST frames (stream id, rows, seq_len), one per batch wanted.
  Feeder → trainer: BATCH_HEADER (payload bytes, clock start, tokens served so far) and the rows,
  int32 [rows, seq_len + 1]; 0 payload bytes means no more batches (budget spent). The feeder's own
  reports (tokens served, clock start) are the record's, whatever the trainer says.
- Model → scorer: DONE(1) once built; scorer → model: FORWARD (0, 0) once the weights are in its
  folder; model → scorer: DONE(2) once loaded. Then FORWARD frames (rows, seq_len) once the inputs
  are in the shared input buffer, each answered by DONE(n + 1) once the logits are in the shared
  logits buffer; any other number breaks the protocol (a violation). A model process that fails
  says why in its own report (to the scorer) and closes its pipes.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

RESULT_FD_ENV = "AR_RESULT_FD"
# What a report is: the trainer's start and progress, a child's result, error or rule violation,
# the check server's readiness and each check's outcome, the feeder's count of tokens served.
Kind = Literal["started", "progress", "result", "error", "violation", "ready", "check", "served"]
KINDS: tuple[str, ...] = get_args(Kind)
BATCH_REQUEST = struct.Struct("<iii")  # stream, rows, seq_len
BATCH_HEADER = struct.Struct("<qdq")  # payload bytes, clock start (perf_counter), tokens served
FORWARD = struct.Struct("<ii")  # rows, seq_len
DONE = struct.Struct("<i")  # how many frames the model has answered (1: built, 2: loaded)


@dataclass(frozen=True)
class TrainSpec:
    """What the training process gets: no path but its own scratch folder and the candidate copy."""

    candidate: str
    cfg: dict[str, Any]
    device: str
    seed: int
    budget_s: float
    max_tokens: int | None
    latest_start: float  # perf_counter time at which the clock starts if no batch was taken
    memory_per_row_gb: float | None = None
    memory_overhead_gb: float = 0.0
    gpu_sharing: int = 1  # runs on this GPU at once: each plans for its share of the memory
    scoring_memory_gb: float = 0.0  # what a run's scoring needs beside the others' training
    request_fd: int = -1
    batch_fd: int = -1
    file_defaults: dict[str, Any] = field(default_factory=dict)  # the file's own Hyper constants (task.source_defaults)


@dataclass(frozen=True)
class FeederSpec:
    train_tokens: str
    seed: int
    crop: bool
    budget_s: float
    max_tokens: int | None
    latest_start: float
    request_fd: int = -1
    batch_fd: int = -1


@dataclass(frozen=True)
class ModelSpec:
    """What a model process gets: the candidate copy, the weights, and the shared buffers' geometry."""

    candidate: str
    weights: str
    cfg: dict[str, Any]
    device: str
    seed: int
    max_rows: int
    seq_len: int
    vocab: int
    inputs: SharedSpec
    logits: SharedSpec
    command_fd: int = -1
    done_fd: int = -1


@dataclass(frozen=True)
class SharedSpec:
    """A buffer shared by fd: a memfd (device "cpu") or CUDA memory exported as a POSIX fd."""

    fd: int
    nbytes: int
    device: str


@dataclass(frozen=True)
class ScorerSpec:
    """What the scorer gets (it runs outside the sandbox and imports no candidate code); the weights'
    path comes on its stdin once training is done."""

    candidate: str
    cfg: dict[str, Any]
    device: str
    seed: int
    rows: str  # the scored rows of its split (data.eval_split): never the other split's
    tokenizer_dir: str
    eval_batch_size: int
    eval_split: str
    metric: str
    max_params: int | None
    sandbox_level: str
    sandbox_prefix: tuple[str, ...]
    sandbox_uid: int | None  # the run's uid (sandbox.Plan.uid): its model processes run as it
    tmp: str  # where the model processes' folders go
    threads: int | None = None


@dataclass(frozen=True)
class CheckSpec:
    candidate: str
    cfg: dict[str, Any]
    seed: int
    allowed_imports: tuple[str, ...]
    max_params: int | None
    max_literal_bytes: int = 16384


Spec = TrainSpec | FeederSpec | ModelSpec | ScorerSpec | CheckSpec
SPECS: tuple[type[Spec], ...] = (TrainSpec, FeederSpec, ModelSpec, ScorerSpec, CheckSpec)


def write_spec(path: Path, spec: Spec) -> None:
    path.write_text(json.dumps({"type": type(spec).__name__, **asdict(spec)}))


def read_spec(path: Path) -> Spec:
    """The spec written by write_spec; the file is removed once read."""
    raw = json.loads(Path(path).read_text())
    Path(path).unlink(missing_ok=True)
    kind = raw.pop("type")
    cls = next(c for c in SPECS if c.__name__ == kind)
    if cls is ModelSpec:
        raw["inputs"], raw["logits"] = SharedSpec(**raw["inputs"]), SharedSpec(**raw["logits"])
    for key in ("allowed_imports", "sandbox_prefix"):
        if key in raw:
            raw[key] = tuple(raw[key])
    return cls(**raw)


def read_exact(fd: int, n: int) -> bytes | None:
    """n bytes from fd, or None at end of file (the other side is gone)."""
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_into(fd: int, view: memoryview) -> bool:
    """Fill view from fd; False at end of file."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return False
        got += n
    return True


def write_all(fd: int, *parts: bytes | memoryview) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view) :]


@dataclass
class Emitter:
    """JSON-line reports to the runner on the result fd."""

    fd: int = field(default_factory=lambda: int(os.environ.pop(RESULT_FD_ENV)))

    def __call__(self, kind: Kind, **fields: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"report kind {kind!r} is not one of the protocol's: {', '.join(KINDS)}")
        write_all(self.fd, (json.dumps({"kind": kind, **fields}) + "\n").encode())
