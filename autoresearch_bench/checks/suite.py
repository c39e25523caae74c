"""The named checks of task.toml's `checks` list, each `check(ctx) -> detail`, and CHECKS, their registry."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .base import (
    INITIAL_LOSS_TOL,
    OVERFIT_CYCLE,
    OVERFIT_LR,
    OVERFIT_ROWS,
    OVERFIT_STEPS,
    OVERFIT_TARGET,
    CheckContext,
    CheckFailed,
)
from .models import build_checked, check_logits, checked_forward, max_diff, model_variants, random_tokens, tolerance_for
from .source import check_literal_data, check_source_policy
from .structural import batch_independence_on, causality_on

# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def check_logits_shape(ctx: CheckContext) -> str:
    model = build_checked(ctx)
    for T in (ctx.T, ctx.T // 2 + 1):
        checked_forward(model, random_tokens(ctx.vocab, (2, T), ctx.seed), ctx.vocab, training=False)
    return f"[2, T, {ctx.vocab}] floating logits for T = {ctx.T} and {ctx.T // 2 + 1}"


def check_finite(ctx: CheckContext) -> str:
    model = build_checked(ctx)
    x = random_tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    for training in (True, False):
        checked_forward(model, x, ctx.vocab, training)  # raises on NaN or inf
    return "finite logits in train and eval mode"


def check_initial_loss(ctx: CheckContext) -> str:
    model = build_checked(ctx)
    x = random_tokens(ctx.vocab, (4, ctx.T), ctx.seed)
    logits = checked_forward(model, x, ctx.vocab, training=False)
    targets = x[:, 1:].reshape(-1).to(logits.device)
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, ctx.vocab), targets).item()
    uniform = math.log(ctx.vocab)
    if loss < uniform - INITIAL_LOSS_TOL:
        raise CheckFailed(
            f"initial_loss: {loss:.2f} nats on uniformly random tokens < ln(vocab) {uniform:.2f} "
            f"− {INITIAL_LOSS_TOL}, which no model that cannot see the target can reach — "
            f"the next token leaks into the logits"
        )
    if loss > uniform + INITIAL_LOSS_TOL:
        return (
            f"warning: {loss:.1f} nats at init on random tokens, far above ln(vocab) {uniform:.2f} — large "
            f"initial logits waste training steps; scale the output layer down"
        )
    return f"{loss:.3f} nats at init vs ln(vocab) {uniform:.3f}"


def check_causality(ctx: CheckContext) -> str:
    details = [
        causality_on(model, ctx.vocab, ctx.T, ctx.examples, ctx.seed, label) for label, model in model_variants(ctx)
    ]
    return f"{details[0]} (as built and with perturbed weights)"


def check_batch_independence(ctx: CheckContext) -> str:
    details = [batch_independence_on(model, ctx.vocab, ctx.T, ctx.seed, label) for label, model in model_variants(ctx)]
    return f"{details[0]} (as built and with perturbed weights)"


def check_eval_train_consistency(ctx: CheckContext) -> str:
    """Eval mode must compute the function train mode trains, up to training noise. Train-mode
    logits (no_grad) are compared with eval-mode logits; if they differ while two train-mode
    forwards with different RNG seeds agree, the model branches on self.training deterministically
    (the scored model is not the trained one) and fails. Differing train-mode forwards mean
    dropout-like noise, which passes: causality then holds in both modes by the causality check.
    Models with mode-dependent layers besides dropout (BatchNorm) fail this check by design; tasks
    that allow them leave it out of their list."""
    x = random_tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    noisy = []
    for label, model in model_variants(ctx):
        evaluated = checked_forward(model, x, ctx.vocab, training=False)
        trained = checked_forward(model, x, ctx.vocab, training=True, noise_seed=1)
        tol = tolerance_for(trained)
        diff = max_diff(evaluated, trained)
        if diff <= tol:
            continue
        if max_diff(trained, checked_forward(model, x, ctx.vocab, training=True, noise_seed=2)) <= tol:
            raise CheckFailed(
                f"eval_train_consistency: eval-mode logits differ from train-mode logits "
                f"(max |Δ| {diff:.1e} > {tol:.1e}, model {label}) although train mode is "
                f"deterministic — the model branches on self.training, so the scored "
                f"function is not the trained one"
            )
        noisy.append(label)
    return (
        "train mode is random (dropout); eval mode is its noise-free version" if noisy else "eval and train mode agree"
    )


def check_overfit_batch(ctx: CheckContext) -> str:
    model = build_checked(ctx)
    n = min(int(ctx.cfg["seq_len"]), 32)
    g = torch.Generator().manual_seed(ctx.seed)
    cycle = torch.randperm(ctx.vocab, generator=g)[:OVERFIT_CYCLE]
    starts = torch.arange(OVERFIT_ROWS) * (OVERFIT_CYCLE // OVERFIT_ROWS)
    rows = cycle[(starts[:, None] + torch.arange(n + 1)) % OVERFIT_CYCLE]
    x, y = rows[:, :-1], rows[:, 1:]

    def loss_of(logits):
        return F.cross_entropy(logits.float().reshape(-1, ctx.vocab), y.reshape(-1).to(logits.device))

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CheckFailed("overfit_batch: the model has no trainable parameters — it cannot learn")
    initial = loss_of(checked_forward(model, x, ctx.vocab, training=False)).item()
    opt = torch.optim.AdamW(params, lr=OVERFIT_LR, weight_decay=0.0)
    model.train()
    for _ in range(OVERFIT_STEPS):
        logits = model(x.to(params[0].device))
        check_logits(logits, x, ctx.vocab)
        opt.zero_grad(set_to_none=True)
        loss_of(logits).backward()
        opt.step()
    final = loss_of(checked_forward(model, x, ctx.vocab, training=False)).item()
    if not (final < OVERFIT_TARGET and final < 0.7 * initial):
        raise CheckFailed(
            f"overfit_batch: loss {initial:.2f} → {final:.2f} nats after {OVERFIT_STEPS} AdamW steps on one "
            f"repeated batch; needs < {OVERFIT_TARGET:.2f} (half of what a model ignoring its input tokens "
            f"can reach) — the model does not learn from its input"
        )
    return f"loss {initial:.2f} → {final:.3f} nats in {OVERFIT_STEPS} steps"


def check_param_limit(ctx: CheckContext) -> str:
    if ctx.max_params is None:
        return "no limit"
    params = sum(p.numel() for p in build_checked(ctx).parameters())
    if params > ctx.max_params:
        raise CheckFailed(f"param_limit: {params:,} parameters > limit {ctx.max_params:,}")
    return f"{params:,} ≤ {ctx.max_params:,} parameters"


def check_deterministic_eval(ctx: CheckContext) -> str:
    model = build_checked(ctx)
    x = random_tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    first = checked_forward(model, x, ctx.vocab, training=False, noise_seed=None)
    checked_forward(
        model, random_tokens(ctx.vocab, (2, ctx.T), ctx.seed + 1), ctx.vocab, training=False, noise_seed=None
    )
    again = checked_forward(model, x, ctx.vocab, training=False, noise_seed=None)
    diff, tol = max_diff(first, again), tolerance_for(first)
    if not diff <= tol:
        raise CheckFailed(
            f"deterministic_eval: the same batch gave different eval-mode logits after another "
            f"batch (max |Δ| {diff:.1e} > {tol:.1e}) — the model keeps state between calls or "
            f"is random in eval mode"
        )
    return f"same logits on repeat (max |Δ| {diff:.1e})"


CHECKS: dict[str, Callable[[CheckContext], str]] = {
    "source_policy": check_source_policy,
    "literal_data": check_literal_data,
    "logits_shape": check_logits_shape,
    "finite": check_finite,
    "initial_loss": check_initial_loss,
    "causality": check_causality,
    "batch_independence": check_batch_independence,
    "eval_train_consistency": check_eval_train_consistency,
    "overfit_batch": check_overfit_batch,
    "param_limit": check_param_limit,
    "deterministic_eval": check_deterministic_eval,
}
