"""Structural properties of any model, built or trained: causality (a hypothesis search) and batch
independence.
"""

from __future__ import annotations

import torch

from .base import PERTURBATIONS, CheckFailed
from .models import checked_forward, max_diff, mode_name, random_tokens, tolerance_for

# ---------------------------------------------------------------------------------------------
# Structural checks, on any model (built or trained)
# ---------------------------------------------------------------------------------------------


def _causality_search(model, vocab: int, T: int, examples: int, seed: int, training: bool, label: str) -> float:
    # imported here: the training and evaluation processes import this module but never search
    from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
    from hypothesis import strategies as st

    worst = 0.0
    cases = st.integers(2, T).flatmap(
        lambda n: st.tuples(
            st.integers(1, 3), st.just(n), st.integers(0, n - 2), st.sampled_from(PERTURBATIONS), st.integers(0, 2**16)
        )
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.explicit, Phase.generate),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(cases)
    @example((2, T, (T - 1) // 2, "all", 0))
    @example((3, T, 0, "next", 1))
    def probe(case):
        nonlocal worst
        B, n, t, how, s = case
        g = torch.Generator().manual_seed(seed * 1_000_003 + s)
        x = torch.randint(vocab, (B, n), generator=g)
        later = x[:, t + 1 :]
        replaced = (later + torch.randint(1, vocab, later.shape, generator=g)) % vocab  # always differs
        if how == "all":
            mask = torch.ones_like(later, dtype=torch.bool)
        elif how == "next":
            mask = torch.zeros_like(later, dtype=torch.bool)
            mask[:, 0] = True
        else:
            mask = torch.rand(later.shape, generator=g) < 0.5
            mask[:, -1] = True
        y = x.clone()
        y[:, t + 1 :] = torch.where(mask, replaced, later)
        a = checked_forward(model, x, vocab, training)[:, : t + 1]
        b = checked_forward(model, y, vocab, training)[:, : t + 1]
        per_pos = (a.float() - b.float()).abs().amax(dim=(0, 2))
        tol = tolerance_for(a)
        bad = (per_pos > tol).nonzero()
        if len(bad):
            p = int(bad[0])
            raise CheckFailed(
                f"causality: logits at position {p} changed when tokens after position {t} changed "
                f"(max |Δ| {per_pos[p].item():.1e} > {tol:.1e}; {how} later tokens replaced, B={B}, T={n}, "
                f"{mode_name(training)}, model {label}) — the model sees the future"
            )
        worst = max(worst, per_pos.max().item())

    probe()
    return worst


def causality_on(
    model: torch.nn.Module, vocab: int, T: int, examples: int = 20, seed: int = 0, label: str = "trained"
) -> str:
    """Hypothesis search (B ≤ 3, 2 ≤ T' ≤ T, position t, which later tokens change) in train mode
    under no_grad with equal dropout masks, then in eval mode; raises CheckFailed on a leak."""
    worst = max(_causality_search(model, vocab, T, examples, seed, training, label) for training in (True, False))
    return f"{examples} examples × train/eval mode, T ≤ {T}: max |Δ| {worst:.1e}"


def batch_independence_on(model: torch.nn.Module, vocab: int, T: int, seed: int = 0, label: str = "trained") -> str:
    """Row logits in eval mode are the same alone (B=1), among other random rows (B=6) and with
    the batch permuted, as in a batch of 4; raises CheckFailed when rows leak into each other."""
    x = random_tokens(vocab, (4, T), seed)
    full = checked_forward(model, x, vocab, training=False)
    tol = tolerance_for(full)
    others = torch.cat([x[:1], random_tokens(vocab, (5, T), seed + 1)])
    perm = torch.tensor([3, 0, 2, 1])
    trials = [
        ("row 0 computed alone", checked_forward(model, x[:1], vocab, False), full[:1]),
        ("row 3 computed alone", checked_forward(model, x[3:], vocab, False), full[3:]),
        ("row 0 among 5 other random rows", checked_forward(model, others, vocab, False)[:1], full[:1]),
        ("the batch permuted", checked_forward(model, x[perm], vocab, False), full[perm]),
    ]
    worst = 0.0
    for what, got, want in trials:
        diff = max_diff(got, want)
        if not diff <= tol:
            raise CheckFailed(
                f"batch_independence: logits changed with {what} instead of in a batch of 4 "
                f"(max |Δ| {diff:.1e} > {tol:.1e}, eval mode, model {label}) — rows of a batch "
                f"leak into each other"
            )
        worst = max(worst, diff)
    return f"alone, among other rows, permuted: max |Δ| {worst:.1e}"
