"""Child-process entry points: the only places where candidate code runs.

    python -m autoresearch_bench.worker train    SPEC.json   train(ctx) under the parent's clock
    python -m autoresearch_bench.worker evaluate SPEC.json   fresh process: metric from the logits
    python -m autoresearch_bench.worker checks   SPEC.json   serve check requests (stdin → result fd)

The parent (runner.py) writes SPEC.json and passes a pipe as `result_fd`; this process writes JSON
lines to it: progress records, then one {"kind": "result"} or {"kind": "error"}. The candidate's
stdout and stderr go to log files and are never parsed for a score.

Guards installed before candidate code is imported:
- an audit hook refuses to open any path under `forbidden` (the validation split, the raw shards,
  the results files): the training process cannot read validation data by path, cache dir or
  environment variable, nor write results;
- the evaluation and check processes snapshot the harness's and torch's critical functions and
  verify them afterwards (a candidate that monkeypatches the evaluator is reported as tampering).
"""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import checks
from .evaluate import EvalViolation

RESULT_FD_ENV = "AR_RESULT_FD"


def _emit(out, kind: str, **fields: Any) -> None:
    out.write(json.dumps({"kind": kind, **fields}) + "\n")
    out.flush()


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_path_guard(forbidden: list[str], readonly: list[str], report: Callable[[str], None]) -> None:
    """Refuse to open anything under `forbidden`, and to open for writing anything under `readonly`;
    report each attempt to the parent, so a candidate that swallows the PermissionError is still
    caught. Audit hooks cannot be removed."""
    closed = tuple(os.path.realpath(p) for p in forbidden)
    frozen = tuple(os.path.realpath(p) for p in readonly)
    realpath = os.path.realpath

    def under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == root or path.startswith(root + os.sep) for root in roots)

    def hook(event: str, args: tuple) -> None:
        if event != "open" or isinstance(args[0], int):
            return
        path = os.fsdecode(args[0])
        mode, flags = args[1], args[2] or 0
        writes = bool(mode and set(mode) & set("wax+")) or bool(flags & WRITE_FLAGS)
        real = realpath(path)
        if under(real, closed) or (writes and under(real, frozen)):
            message = (f"candidate code tried to {'write' if writes else 'open'} {path}, which is forbidden "
                       f"(validation data, tokenizer, cached data or results)")
            report(message)
            raise PermissionError(f"autoresearch-bench: {message}")

    sys.addaudithook(hook)


def _guard(spec: dict, out) -> None:
    install_path_guard(spec["forbidden"], spec.get("readonly", []), lambda m: _emit(out, "violation", error=m))


def load_candidate(path: str):
    """Import a candidate file by path under a fixed module name; errors say what to fix."""
    sys.dont_write_bytecode = True  # no __pycache__ beside the candidate: its folder stays as the patch left it
    spec = importlib.util.spec_from_file_location("candidate", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    spec.loader.exec_module(module)
    for name in ("build_model", "train"):
        if not callable(getattr(module, name, None)):
            raise ImportError(f"{path} defines no {name}(); the contract needs build_model(cfg) and train(ctx)")
    return module


def _seed_everything(seed: int) -> None:
    import random

    import torch
    random.seed(seed)
    torch.manual_seed(seed)


def _peak_memory_gb(device: str) -> float:
    import torch
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux → GB


def run_train(spec: dict, out) -> None:
    import torch

    from . import device as device_info
    from .context import TrainContext
    from .data import Loader

    _guard(spec, out)
    _seed_everything(spec["seed"])
    device = spec["device"]
    # chosen here, in the process that trains, so that free memory is what this run will find
    settings = device_info.choose_settings(spec["cfg"], device_info.detect() if device == "cuda" else None,
                                           spec.get("memory_per_row_gb"), spec.get("memory_overhead_gb", 0.0))
    module = load_candidate(spec["candidate"])

    def make_loader(batch_size: int, seq_len: int):
        return iter(Loader(Path(spec["train_tokens"]), batch_size, seq_len, device=device, seed=spec["seed"],
                           crop=spec["crop"]))

    last, mfus = {"step": -1}, []  # no step logged: 0 steps

    class Progress:
        """Relays ctx.log records to the parent; keeps the last step and the logged MFU values."""
        def write(self, line: str) -> None:
            record = json.loads(line)
            last["step"] = record["step"]
            if isinstance(record.get("mfu"), (int, float)):
                mfus.append(record["mfu"])
            out.write(json.dumps({"kind": "progress", **record}) + "\n")

        def flush(self) -> None:
            out.flush()

    ctx = TrainContext(device=device, seed=spec["seed"], cfg=spec["cfg"], budget_s=spec["budget_s"],
                       max_tokens=spec.get("max_tokens"), make_loader=make_loader,
                       startup_allowance_s=spec["startup_allowance_s"], progress_out=Progress(),
                       settings=settings)
    t0 = time.perf_counter()
    model = module.train(ctx)
    seconds = time.perf_counter() - t0
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train(ctx) returned {type(model).__name__}, not a torch.nn.Module")
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    torch.save(state, Path(spec["scratch"]) / "model.pt")
    # MFU: the median of the steps' logged values (the candidate counts its model's FLOPs, as upstream)
    # against the harness's peak for this device; None ("unknown") for a device not in the table
    mfu = sorted(mfus)[len(mfus) // 2] if mfus and settings["peak_flops"] else None
    _emit(out, "result", seconds=seconds, tokens=ctx.tokens, steps=last["step"] + 1,
          peak_mem_gb=_peak_memory_gb(device), settings=settings, mfu=mfu)


def run_evaluate(spec: dict, out) -> None:
    from .evaluate import evaluate_model, load_eval_data

    eval_data = load_eval_data(spec)  # read before any candidate code runs; then the folder is closed
    snapshot = checks.snapshot_critical()
    _guard(spec, out)
    _seed_everything(spec["seed"])
    module = load_candidate(spec["candidate"])
    result = evaluate_model(module.build_model, spec, eval_data)
    checks.verify_untampered(snapshot)
    _emit(out, "result", **result)


def serve_checks(spec: dict, out) -> None:
    """Answer check requests, one JSON line each on stdin: {"check": name, **params}."""

    snapshot = checks.snapshot_critical()
    _guard(spec, out)
    source = Path(spec["candidate"]).read_text()
    try:
        module = load_candidate(spec["candidate"])
        import_error = None
    except Exception as e:  # reported per request, so each check item says why
        module, import_error = None, f"candidate failed to import: {type(e).__name__}: {e}"
    _emit(out, "ready")
    for line in sys.stdin:
        request = json.loads(line)
        name = request.pop("check")
        t0 = time.perf_counter()
        try:
            if import_error and name != "source_policy":
                raise ImportError(import_error)
            if name not in checks.CHECKS:
                raise KeyError(f"unknown check {name!r}; known: {', '.join(sorted(checks.CHECKS))}")
            ctx = checks.CheckContext(
                build_model=module.build_model if module else None, cfg=spec["cfg"], source=source,
                allowed_imports=tuple(spec["allowed_imports"]), max_params=spec["max_params"],
                seed=request.pop("seed", spec["seed"]), **request)
            detail = checks.CHECKS[name](ctx)
            checks.verify_untampered(snapshot)
            _emit(out, "check", name=name, ok=True, detail=detail, seconds=time.perf_counter() - t0)
        except Exception as e:
            _emit(out, "check", name=name, ok=False, error=classify(e)[1], seconds=time.perf_counter() - t0)


def classify(e: BaseException) -> tuple[str, str]:
    """("violation" or "error", one line): rules the candidate broke, or the error it raised."""
    if isinstance(e, OSError) and e.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return "violation", f"wrote a file larger than the sandbox's limit of {limit >> 20} MiB"
    first = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, (checks.CheckFailed, EvalViolation)):
        return "violation", first or type(e).__name__
    return "error", f"{type(e).__name__}: {first}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    Path(spec_path).unlink()  # it names data paths; candidate code must not find it in its cwd
    out = os.fdopen(int(os.environ.pop(RESULT_FD_ENV)), "w", buffering=1)
    try:
        {"train": run_train, "evaluate": run_evaluate, "checks": serve_checks}[mode](spec, out)
    except Exception as e:
        kind, message = classify(e)
        if kind == "error":
            traceback.print_exc()
        _emit(out, kind, error=message)
        return 1 if kind == "error" else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
