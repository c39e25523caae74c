"""The scorer: the trusted process that evaluates a trained candidate without ever importing its code.

    python -m autoresearch_bench.scorer SPEC.json

It holds the validation rows, their scored mask and the tokenizer's byte lengths. Candidate code runs
only in two sandboxed model processes (worker.py `model`), each built from the candidate file and
the weights file, which receive input tokens and return logits through memory the scorer shares
(shared.py: on CUDA the logits never leave the GPU). They hold no targets, no mask, no file of the
data cache and no channel to the runner but their error reports.

- The *scoring* process gets the validation rows in order, in batches of eval_batch_size, exactly as
  autoresearch scores them; the scorer computes the metric from the logits:
  val_bpb = sum of the cross-entropy in nats / (ln 2 × sum of the target bytes), special tokens
  (0 bytes) excluded; val_loss = mean cross-entropy per scored target; val_accuracy = fraction of
  scored targets whose argmax logit is right. `[data] score` picks the scored targets (data/packing.py).
- The *probe* process, fresh and told nothing, gets probe batches at the scoring batches' shape,
  sent at random moments among the scoring batches: real validation rows in a random mixture,
  half of them with every token after a secret position t replaced by another real row's tokens
  (the input still looks like data). A row's logits at sampled positions (≤ t for a spliced row)
  must equal its logits in the scoring batch, within the checks' tolerance (checks.base.logit_tolerance):
  a model that sees the future (causality), mixes rows (batch independence), keeps state between calls
  or changes its weights during evaluation gives other logits in a fresh process and a new company,
  and is a violation. The randomness
  comes from the operating system (secrets), not the run seed, so the candidate cannot derive it,
  and since the two processes never share anything, a model cannot remember a row in one to
  answer consistently in the other.
- The weights file is counted here, from the file: every tensor in it (parameters and buffers)
  counts against max_params, and it must be a plain dict of tensors (loaded with weights_only).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import select
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import process, sandbox
from .checks.base import logit_tolerance
from .protocol import DONE, FORWARD, Emitter, ModelSpec, ScorerSpec, read_exact, read_spec, write_all
from .shared import SharedBuffer

PROBE_EVERY = 16  # one probe batch per this many scoring batches (at least one)
PROBE_POSITIONS = 16  # positions compared per probed row, drawn at random (plus the splice point)
READY_TIMEOUT_S = 600  # building the model and loading the weights


class Violation(Exception):
    """The model broke a rule; the message is one line."""


class ModelCrashed(Exception):
    """A model process died; the message is one line, `candidate_traceback` the candidate's frames."""

    def __init__(self, message: str, candidate_traceback: str = ""):
        super().__init__(message)
        self.candidate_traceback = candidate_traceback


@dataclass(frozen=True)
class Targets:
    """What is scored: mask [N, seq_len] over the targets rows[:, 1:]; for val_bpb, the byte length of
    every token id (None for the other metrics)."""

    mask: torch.Tensor
    token_bytes: torch.Tensor | None


def load_eval_data(spec: ScorerSpec) -> tuple[torch.Tensor, Targets]:
    """The scored rows of the spec's split and their Targets: split "val", the score agents see; split
    "test", the league's held-out rows, in a file of their own (data.eval_split)."""
    from .data import token_bytes

    with np.load(spec.rows) as split:
        rows, mask = split["rows"], split["mask"]
    nbytes = (
        torch.from_numpy(token_bytes(Path(spec.tokenizer_dir)).astype(np.int64)) if spec.metric == "val_bpb" else None
    )
    return torch.from_numpy(rows), Targets(torch.from_numpy(mask), nbytes)


def count_weights(path: str, max_params: int | None) -> tuple[int, str]:
    """(numbers in the weights file, its sha256); Violation if it is not a plain dict of tensors or
    holds more numbers than max_params. The scorer is root: a link left by the trainer is not followed."""
    if os.path.islink(path):
        raise Violation("weights: model.pt is a symbolic link, not the weights file the trainer wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise Violation(
            f"weights: model.pt is not a weights file that loads with weights_only "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and type(v) is torch.Tensor for k, v in state.items()):
        raise Violation("weights: model.pt must hold a plain dict of tensors (a state_dict)")
    params = sum(v.numel() for v in state.values())
    if max_params and params > max_params:
        raise Violation(
            f"parameter limit: the trained weights hold {params:,} numbers (parameters and "
            f"buffers) > limit {max_params:,}"
        )
    return params, hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ModelProcess:
    """One sandboxed model process and the memory it shares with the scorer."""

    def __init__(self, name: str, spec: ScorerSpec, max_rows: int, seq_len: int, vocab: int):
        self.name, self.device = name, spec.device
        tmp = Path(spec.tmp) / name
        tmp.mkdir()
        plan = sandbox.Plan(spec.sandbox_level, tuple(spec.sandbox_prefix), spec.sandbox_uid)
        scratch = sandbox.prepare_scratch(tmp, plan)
        self.scratch, self.plan = scratch, plan
        inner = Path(sandbox.place(spec.candidate, scratch, "candidate.py", plan)).parent
        self.inputs = SharedBuffer.create(max_rows * seq_len * 8, spec.device)
        self.logits = SharedBuffer.create(max_rows * seq_len * vocab * 4, spec.device)
        command_r, self.command_w = os.pipe()
        self.done_r, done_w = os.pipe()
        model_spec = ModelSpec(
            candidate=str(inner / "candidate.py"),
            weights=str(inner / "model.pt"),
            cfg=spec.cfg,
            device=spec.device,
            seed=spec.seed,
            max_rows=max_rows,
            seq_len=seq_len,
            vocab=vocab,
            inputs=self.inputs.spec,
            logits=self.logits.spec,
            command_fd=command_r,
            done_fd=done_w,
        )
        self.child = process.start(
            ("worker", "model"),
            model_spec,
            tmp,
            plan,
            device=spec.device,
            threads=spec.threads,
            pass_fds=(command_r, done_w, self.inputs.spec.fd, self.logits.spec.fd),
        )
        os.close(command_r)
        os.close(done_w)
        self.pending: int | None = None
        self.answered = 0

    def load(self, weights: str) -> None:
        """Hand the process the trained weights (a copy in its own folder)."""
        sandbox.place(weights, self.scratch, "model.pt", self.plan)
        try:
            write_all(self.command_w, FORWARD.pack(0, 0))
        except BrokenPipeError:
            self._died()

    def _died(self) -> None:
        """Raise what the process said before it went (its own report), or how it ended."""
        list(self.child.reports(time.perf_counter() + 2, watch_processes=False))
        status, error = process.failure(self.child, f"the {self.name} model")
        if status == "violation":
            raise Violation(error)
        raise ModelCrashed(error, (self.child.last("error") or {}).get("traceback", ""))

    def _wait_done(self, deadline: float) -> None:
        ready, _, _ = select.select([self.done_r], [], [], max(0.0, deadline - time.perf_counter()))
        frame = read_exact(self.done_r, DONE.size) if ready else b""
        if frame is None:
            self._died()
        if not frame:
            raise TimeoutError(f"the {self.name} model process did not answer in time")
        self.answered += 1
        if DONE.unpack(frame)[0] != self.answered:
            raise Violation(
                f"the {self.name} model process broke the protocol (answer {DONE.unpack(frame)[0]}, "
                f"expected {self.answered}): candidate code wrote to the harness's pipes"
            )

    def ready(self) -> None:
        self._wait_done(time.perf_counter() + READY_TIMEOUT_S)

    def send(self, x: torch.Tensor) -> None:
        rows, seq_len = x.shape
        self.inputs.view(torch.int64, (rows, seq_len)).copy_(x)
        if self.device == "cuda":
            torch.cuda.synchronize()
        try:
            write_all(self.command_w, FORWARD.pack(rows, seq_len))
        except BrokenPipeError:
            self._died()
        self.pending = rows

    def receive(self, seq_len: int, vocab: int, deadline: float) -> torch.Tensor:
        self._wait_done(deadline)
        rows, self.pending = self.pending, None
        return self.logits.view(torch.float32, (rows, seq_len, vocab)).clone()

    def close(self) -> None:
        self.child.kill()
        for fd in (self.command_w, self.done_r):
            os.close(fd)


@dataclass
class ProbeRow:
    row: int  # index into the scored rows
    positions: torch.Tensor
    splice_at: int | None  # t: tokens after it replaced by another row's; None: the row as it is


class Probes:
    """Probe batches and the references they are checked against."""

    def __init__(self, rows: torch.Tensor, batch: int, device: str):
        n, seq_len = rows.shape[0], rows.shape[1] - 1
        rng = np.random.default_rng(secrets.randbits(128))
        n_batches = math.ceil(n / batch)
        self.batches: list[list[ProbeRow]] = []
        self.inputs: list[torch.Tensor] = []
        for _ in range(max(1, math.ceil(n_batches / PROBE_EVERY))):
            chosen = rng.choice(n, size=min(batch, n), replace=False)
            x = rows[torch.from_numpy(chosen), :-1].clone()
            entries = []
            for slot, row in enumerate(chosen.tolist()):
                splice = bool(rng.random() < 0.5) and seq_len >= 2 and n >= 2
                t = int(rng.integers(0, seq_len - 1)) if splice else None
                if splice:
                    donor = int((row + rng.integers(1, n)) % n)
                    x[slot, t + 1 :] = rows[donor, t + 1 : seq_len]
                span = t + 1 if splice else seq_len
                picked = rng.choice(span, size=min(PROBE_POSITIONS, span), replace=False)
                positions = np.unique(np.append(picked, t) if splice else picked)
                entries.append(ProbeRow(row, torch.from_numpy(positions).to(device), t))
            self.batches.append(entries)
            self.inputs.append(x.to(device))
        # probe batch j is sent while scoring batch at[j] is computed
        self.at = sorted(rng.integers(0, n_batches, size=len(self.batches)).tolist())
        self.of_row: dict[int, list[tuple[int, int]]] = {}
        for j, entries in enumerate(self.batches):
            for slot, entry in enumerate(entries):
                self.of_row.setdefault(entry.row, []).append((j, slot))
        self.reference: dict[tuple[int, int], torch.Tensor] = {}
        self.low_precision = device == "cuda"  # bf16 autocast: a row in another batch may differ by its rounding
        self.worst = {"causality": 0.0, "batch independence": 0.0}

    def seen(self, key: tuple[int, int], logits: torch.Tensor) -> None:
        """Logits of a probed row at its positions, from the scoring or the probe process, whichever
        came first is the reference of the other."""
        other = self.reference.pop(key, None)
        if other is None:
            self.reference[key] = logits
            return
        entry = self.batches[key[0]][key[1]]
        what = "causality" if entry.splice_at is not None else "batch independence"
        diff = (logits - other).abs().max().item()
        tol = logit_tolerance(self.low_precision, max(logits.abs().max().item(), other.abs().max().item()))
        if not diff <= tol:
            detail = (
                f"logits at positions ≤ {entry.splice_at} changed when the tokens after it were replaced "
                f"— the model sees the future"
                if entry.splice_at is not None
                else "a row's logits changed in another batch, in a fresh process — rows leak into each other, "
                "or the model keeps state between calls or changes its weights"
            )
            raise Violation(
                f"{what}: validation row {entry.row}: {detail} (max |Δlogits| {diff:.3g} > "
                f"tolerance {tol:.3g}, eval mode)"
            )
        self.worst[what] = max(self.worst[what], diff)

    def from_scoring(self, start: int, logits: torch.Tensor) -> None:
        for local in range(logits.shape[0]):
            for key in self.of_row.get(start + local, ()):
                self.seen(key, logits[local, self.batches[key[0]][key[1]].positions])

    def from_probe(self, j: int, logits: torch.Tensor) -> None:
        for slot, entry in enumerate(self.batches[j]):
            self.seen((j, slot), logits[slot, entry.positions])

    def summary(self) -> dict:
        rows = [e for entries in self.batches for e in entries]
        return {
            "probe_batches": len(self.batches),
            "probe_rows": len(rows),
            "probe_spliced": sum(e.splice_at is not None for e in rows),
            "causality_diff": self.worst["causality"],
            "batch_diff": self.worst["batch independence"],
        }


def score(spec: ScorerSpec, weights_ready) -> dict:
    """Load the rows and start both model processes, then wait for weights_ready() (the runner's word
    that training is done: the weights file's path) and score."""
    device, vocab, seq_len = spec.device, int(spec.cfg["vocab_size"]), int(spec.cfg["seq_len"])
    rows, targets = load_eval_data(spec)
    batch = min(spec.eval_batch_size, len(rows))
    models = [ModelProcess(name, spec, batch, seq_len, vocab) for name in ("scoring", "probe")]
    scoring, prober = models
    try:
        for model in models:
            model.ready()
        weights = weights_ready()
        t0 = time.perf_counter()
        params, digest = count_weights(weights, spec.max_params)
        for model in models:
            model.load(weights)
        for model in models:
            model.ready()
        started = time.perf_counter()
        rows_dev, mask_dev = rows.to(device), targets.mask.to(device)
        nbytes = targets.token_bytes.to(device) if targets.token_bytes is not None else None
        probes = Probes(rows, batch, device)
        deadline = time.perf_counter() + READY_TIMEOUT_S
        nats = correct = scored = byte_nats = total_bytes = 0.0
        queue = list(range(len(probes.batches)))
        for k, i in enumerate(range(0, len(rows), batch)):
            chunk, mask = rows_dev[i : i + batch], mask_dev[i : i + batch]
            x, y = chunk[:, :-1], chunk[:, 1:]
            scoring.send(x)
            probing = queue.pop(0) if queue and probes.at[queue[0]] <= k else None
            if probing is not None:
                prober.send(probes.inputs[probing])
            logits = scoring.receive(seq_len, vocab, deadline)
            if not torch.isfinite(logits).all():
                raise Violation(f"finite: the model produced NaN or inf logits on validation batch {k}")
            probes.from_scoring(i, logits)
            nll = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1), reduction="none").view_as(y)
            nats += nll[mask].sum().item()
            correct += (logits.argmax(-1) == y)[mask].sum().item()
            scored += mask.sum().item()
            if nbytes is not None:
                weights = nbytes[y] * mask
                byte_nats += (nll * (weights > 0)).sum().item()
                total_bytes += weights.sum().item()
            if probing is not None:
                probes.from_probe(probing, prober.receive(seq_len, vocab, deadline))
        for j in queue:
            prober.send(probes.inputs[j])
            probes.from_probe(j, prober.receive(seq_len, vocab, deadline))
    finally:
        for model in models:
            model.close()
    if scored == 0 or (nbytes is not None and total_bytes == 0):
        raise Violation("the validation rows hold no scored positions; check the task's data and score")
    metrics = {"val_loss": nats / scored, "val_accuracy": correct / scored}
    if nbytes is not None:
        metrics.update(val_bpb=byte_nats / (math.log(2) * total_bytes), val_loss_nats_per_byte=byte_nats / total_bytes)
    return {
        "value": metrics[spec.metric],
        **metrics,
        "eval_tokens": int(rows[:, 1:].numel()),
        "scored_tokens": int(scored),
        "params": params,
        "weights_sha256": digest,
        "eval_start_seconds": started - t0,
        "eval_seconds": time.perf_counter() - started,
        **probes.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    spec = read_spec(Path((sys.argv[1:] if argv is None else argv)[0]))
    emit = Emitter()
    try:
        emit("result", **score(spec, lambda: sys.stdin.readline().strip()))
    except Violation as e:
        emit("violation", error=str(e))
        return 3
    except ModelCrashed as e:
        emit("error", error=str(e), traceback=e.candidate_traceback)
        return 1
    except Exception as e:
        emit("error", error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
