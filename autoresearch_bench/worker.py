"""Where candidate code runs: the untrusted side of the protocol (sandboxed, unprivileged).

    python -m autoresearch_bench.worker train   SPEC   train(ctx) on batches from the feeder
    python -m autoresearch_bench.worker model   SPEC   build_model + the weights: inputs in, logits out
    python -m autoresearch_bench.worker checks  SPEC   serve check requests (stdin → result fd)

None of these processes holds a file of the
data cache, a target of the validation rows, the results files or a channel to the runner other
than its report pipe; what they report is checked or ignored, never trusted: tokens and seconds
come from the feeder and the runner, the score from the scorer, the parameter count from the
weights file. The candidate's stdout and stderr go to a log file.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .protocol import DONE, FORWARD, CheckSpec, Emitter, ModelSpec, TrainSpec, read_exact, read_spec, write_all

CANDIDATE_MODULE = "candidate"


def load_candidate(path: str):
    """Import a candidate file by path under a fixed module name; errors say what to fix."""
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location(CANDIDATE_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[CANDIDATE_MODULE] = module
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux → GB


def run_train(spec: TrainSpec, emit: Emitter) -> None:
    import torch

    from . import device as device_info
    from .context import BatchClient, TrainContext

    _seed_everything(spec.seed)
    # chosen here, in the process that trains, so that free memory is what this run will find; the
    # batch sizes are the file's own defaults (its Hyper) where the profile leaves them to it
    settings = device_info.choose_settings(
        {**spec.file_defaults, **spec.cfg},
        device_info.detect() if spec.device == "cuda" else None,
        spec.memory_per_row_gb,
        spec.memory_overhead_gb,
        spec.gpu_sharing,
        spec.scoring_memory_gb,
    )
    module = load_candidate(spec.candidate)
    last, mfus = {"step": -1}, []

    class Progress:
        """Relays ctx.log records to the runner; keeps the last step and the logged MFU values."""

        def write(self, line: str) -> None:
            record = json.loads(line)
            last["step"] = record["step"]
            if isinstance(record.get("mfu"), (int, float)):
                mfus.append(record["mfu"])
            emit("progress", **record)

        def flush(self) -> None:
            pass

    client = BatchClient(spec.request_fd, spec.batch_fd, spec.latest_start)
    ctx = TrainContext(
        device=spec.device,
        seed=spec.seed,
        cfg=spec.cfg,
        budget_s=spec.budget_s,
        max_tokens=spec.max_tokens,
        client=client,
        settings=settings,
        progress_out=Progress(),
    )
    emit("started")  # the process is up (imports, CUDA, the candidate): train()'s own setup follows
    model = module.train(ctx)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train(ctx) returned {type(model).__name__}, not a torch.nn.Module")
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    torch.save(state, "model.pt")
    mfu = sorted(mfus)[len(mfus) // 2] if mfus and settings["peak_flops"] else None
    emit("result", steps=last["step"] + 1, peak_mem_gb=_peak_memory_gb(spec.device), settings=settings, mfu=mfu)


def run_model(spec: ModelSpec, emit: Emitter) -> None:
    """Build the candidate's model (DONE), load the weights at the first FORWARD frame, which has no
    rows (DONE), then answer FORWARD frames until the scorer closes the pipe."""
    import torch

    from .shared import SharedBuffer

    _seed_everything(spec.seed)
    module = load_candidate(spec.candidate)
    model = module.build_model(dict(spec.cfg))
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
    answered = 1
    write_all(spec.done_fd, DONE.pack(answered))  # built: the scorer may send the weights
    if read_exact(spec.command_fd, FORWARD.size) is None:
        return
    state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"the trained weights do not fit build_model(cfg): {str(e).splitlines()[0]}") from None
    model.to(spec.device).eval()
    inputs = SharedBuffer.open(spec.inputs)
    logits_out = SharedBuffer.open(spec.logits)
    answered += 1
    write_all(spec.done_fd, DONE.pack(answered))  # loaded
    cuda = spec.device == "cuda"
    while (frame := read_exact(spec.command_fd, FORWARD.size)) is not None:
        rows, seq_len = FORWARD.unpack(frame)
        x = inputs.view(torch.int64, (rows, seq_len))
        with torch.no_grad(), torch.autocast(spec.device, dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        if type(logits) is not torch.Tensor or tuple(logits.shape) != (rows, seq_len, spec.vocab):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            emit(
                "violation",
                error=f"wrong logits shape: forward({(rows, seq_len)}) returned {got}, "
                f"expected {(rows, seq_len, spec.vocab)}",
            )
            return
        logits_out.view(torch.float32, (rows, seq_len, spec.vocab)).copy_(logits)
        if cuda:
            torch.cuda.synchronize()
        answered += 1
        write_all(spec.done_fd, DONE.pack(answered))


def serve_checks(spec: CheckSpec, emit: Emitter) -> None:
    """Answer check requests, one JSON line each on stdin: {"check": name, **params}."""
    from . import checks

    snapshot = checks.snapshot_critical()
    source = Path(spec.candidate).read_text()
    try:
        module = load_candidate(spec.candidate)
        import_error = None
    except Exception as e:  # reported per request, so each check item says why
        module, import_error = None, f"candidate failed to import: {type(e).__name__}: {e}"
    emit("ready")
    built: dict = {}  # the models the checks built, kept across requests (checks.build_checked)
    for line in sys.stdin:
        request = json.loads(line)
        name = request.pop("check")
        t0 = time.perf_counter()
        try:
            if import_error and name not in checks.STATIC:
                raise ImportError(import_error)
            if name not in checks.CHECKS:
                raise KeyError(f"unknown check {name!r}; known: {', '.join(sorted(checks.CHECKS))}")
            ctx = checks.CheckContext(
                build_model=module.build_model if module else None,
                cfg=spec.cfg,
                source=source,
                allowed_imports=spec.allowed_imports,
                max_params=spec.max_params,
                max_literal_bytes=spec.max_literal_bytes,
                seed=request.pop("seed", spec.seed),
                built=built,
                **request,
            )
            detail = checks.CHECKS[name](ctx)
            checks.verify_untampered(snapshot)
            emit("check", name=name, ok=True, detail=detail, seconds=time.perf_counter() - t0)
        except Exception as e:
            emit("check", name=name, ok=False, error=classify(e)[1], seconds=time.perf_counter() - t0)


def classify(e: BaseException) -> tuple[str, str]:
    """("violation" or "error", one line): rules the candidate broke, or the error it raised."""
    from .checks import CheckFailed

    if isinstance(e, OSError) and e.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return "violation", f"wrote a file larger than the sandbox's limit of {limit >> 20} MiB"
    first = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, CheckFailed):
        return "violation", first or type(e).__name__
    return "error", f"{type(e).__name__}: {first}"


def candidate_traceback(e: BaseException, candidate: str) -> str:
    """The traceback from the first frame of the candidate's file on (the harness's frames trimmed)."""
    frames = traceback.extract_tb(e.__traceback__)
    start = next((i for i, f in enumerate(frames) if f.filename == candidate), 0)
    return "".join(traceback.format_list(frames[start:]) + traceback.format_exception_only(type(e), e)).rstrip()


RUNNERS: dict[str, tuple[type, Callable]] = {
    "train": (TrainSpec, run_train),
    "model": (ModelSpec, run_model),
    "checks": (CheckSpec, serve_checks),
}


def main(argv: list[str] | None = None) -> int:
    mode, spec_path = sys.argv[1:] if argv is None else argv
    spec = read_spec(Path(spec_path))
    emit = Emitter()
    try:
        RUNNERS[mode][1](spec, emit)
    except Exception as e:
        kind, message = classify(e)
        if kind == "error":
            traceback.print_exc()
        emit(kind, error=message, traceback=candidate_traceback(e, spec.candidate))
        return 1 if kind == "error" else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
