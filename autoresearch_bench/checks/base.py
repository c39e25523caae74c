"""What every check shares: CheckContext, CheckFailed and the checks' tolerances and sizes (the scorer's
probes compare logits within the same tolerance, logit_tolerance)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MAX_T = 64  # longest sequence the checks use (they must be fast on CPU)
PERTURBATIONS = ("all", "some", "next")  # which tokens after t causality replaces
# |Δlogits| allowed: atol + rtol·max|logits|. fp32 on CPU gives exact zeros for masked positions
# and ~1e-6 for a row computed in a different batch; bf16 / CUDA autocast rounds far more coarsely.
TOL_FP32, TOL_LOW = (1e-4, 1e-5), (3e-2, 1e-2)
# Initial loss: on uniformly random targets no model that cannot see the target beats ln(vocab) in
# expectation (Jensen), so a loss well below it means the target leaks into the logits; a loss
# more than a nat above it means large logits at init, which cost training steps but cheat nobody
# (a warning). 1 nat is far outside the sampling noise of 4×64 tokens near uniform.
INITIAL_LOSS_TOL = 1.0
# Overfit: 4 rows walk one random cycle of 16 tokens from different offsets, so at every position
# the 4 targets differ and a model that ignores the token values cannot beat ln 4 nats; the next
# token is a function of the current one, which any model that reads its input learns in a few
# steps (honest toy GPTs reach < 0.05 nats in 30 steps at this learning rate).
OVERFIT_STEPS, OVERFIT_LR, OVERFIT_ROWS, OVERFIT_CYCLE = 30, 3e-3, 4, 16
OVERFIT_TARGET = 0.5 * math.log(OVERFIT_ROWS)


def logit_tolerance(low_precision: bool, magnitude: float) -> float:
    """The |Δlogits| allowed between two computations of the same logits whose largest |logit| is
    magnitude: atol + rtol·magnitude, at TOL_LOW for bf16 or CUDA (autocast), else at TOL_FP32."""
    atol, rtol = TOL_LOW if low_precision else TOL_FP32
    return atol + rtol * magnitude


class CheckFailed(AssertionError):
    """A rule was broken; the message is one line: '<check name>: <what happened> — <what it means>'."""


@dataclass
class CheckContext:
    build_model: Callable[[dict], torch.nn.Module] | None
    cfg: dict
    source: str
    allowed_imports: tuple[str, ...]
    max_params: int | None
    seed: int = 0
    max_literal_bytes: int = 16384
    examples: int = 20  # hypothesis examples per model and mode (causality)
    device: str = "cpu"
    built: dict = field(
        default_factory=dict, repr=False
    )  # (seed, perturbed) → the model first built: see build_checked

    @property
    def vocab(self) -> int:
        return int(self.cfg["vocab_size"])

    @property
    def T(self) -> int:
        return min(int(self.cfg["seq_len"]), MAX_T)
