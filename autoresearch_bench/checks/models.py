"""Models as the checks use them: built once per seed (and perturbed), fed random tokens, run in each
mode exactly as evaluation runs them, compared within tolerances.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch

from .base import CheckContext, CheckFailed, logit_tolerance

# ---------------------------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------------------------


def build_checked(ctx: CheckContext, perturbed: bool = False) -> torch.nn.Module:
    """build_model(cfg) under ctx.seed, on ctx.device; perturbed: every parameter gets noise of
    default-init size, so zero-initialised paths (output projections, gates) carry signal. The first
    model built for a seed is kept in ctx.built and each later check gets a copy of it (as the
    scorer's processes, each check sees a first build; building a 50M-parameter model on a CPU costs
    about a second); a model that cannot be copied is built anew."""
    key = (ctx.seed, perturbed)
    if key in ctx.built:
        model, rng = ctx.built[key]
        torch.set_rng_state(rng)  # the random state a fresh build leaves, for what the check draws next
        return copy.deepcopy(model)
    model = _build_new(ctx, perturbed)
    with contextlib.suppress(Exception):
        ctx.built[key] = copy.deepcopy(model), torch.get_rng_state()
    return model


def _build_new(ctx: CheckContext, perturbed: bool) -> torch.nn.Module:
    torch.manual_seed(ctx.seed)
    model = ctx.build_model(dict(ctx.cfg))
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"logits_shape: build_model returned {type(model).__name__}, not a torch.nn.Module")
    model = model.to(ctx.device)
    if perturbed:
        g = torch.Generator().manual_seed(ctx.seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point():
                    scale = 1 / math.sqrt(p[0].numel()) if p.dim() >= 2 else 0.1
                    p.add_(scale * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    return model


def model_variants(ctx: CheckContext):
    yield "as built", build_checked(ctx)
    yield "with perturbed weights", build_checked(ctx, perturbed=True)


def random_tokens(vocab: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed))


def checked_forward(
    model: torch.nn.Module, idx: torch.Tensor, vocab: int, training: bool, noise_seed: int | None = 0
) -> torch.Tensor:
    """Validated logits (shape, plain tensor, finite) in the given mode under no_grad, as evaluation
    computes them. With noise_seed the RNG is reseeded first (and restored after), so dropout draws
    the same masks for the same shapes."""
    device = next(model.parameters(), idx).device
    idx = idx.to(device)
    was = model.training
    model.train(training)
    try:
        with (
            torch.no_grad(),
            torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"),
            torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else [],
                device_type=device.type,
                enabled=noise_seed is not None,
            ),
        ):
            if noise_seed is not None:
                torch.manual_seed(noise_seed)
            logits = model(idx)
    finally:
        model.train(was)
    check_logits(logits, idx, vocab)
    finite = torch.isfinite(logits)
    if not finite.all():
        nan = int(torch.isnan(logits).sum())
        raise CheckFailed(
            f"finite: {mode_name(training)} logits hold {nan} NaN and {int((~finite).sum()) - nan} "
            f"inf values on random tokens"
        )
    return logits


def check_logits(logits, idx: torch.Tensor, vocab: int) -> None:
    want = (*idx.shape, vocab)
    if type(logits) is not torch.Tensor:
        raise CheckFailed(f"logits_shape: forward returned {type(logits).__name__}, not a plain torch.Tensor")
    if tuple(logits.shape) != want:
        raise CheckFailed(
            f"logits_shape: forward(idx{list(idx.shape)}) returned {list(logits.shape)}, expected {list(want)}"
        )
    if not logits.is_floating_point():
        raise CheckFailed(f"logits_shape: logits have dtype {logits.dtype}, expected a floating dtype")


def tolerance_for(ref: torch.Tensor) -> float:
    low = ref.dtype in (torch.float16, torch.bfloat16) or ref.device.type == "cuda"
    return logit_tolerance(low, ref.float().abs().max().item())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def mode_name(training: bool) -> str:
    return "train mode (no_grad)" if training else "eval mode"
