"""Seeds, noise and decisions: is a candidate better than its baseline, beyond the noise?

- summarize: mean, sample std and a Student-t 95% interval of the mean.
- welch: Welch's t-test (unequal variances); p from the Student t CDF through the regularized
  incomplete beta function (continued fraction, Numerical Recipes §6.4), so scipy is not needed.
- decide: "better" / "worse" only when the difference is significant (Welch p < alpha) AND at
  least `min_effect`; otherwise "no difference". With one value on a side there is no variance to
  test: the verdict then needs |delta| ≥ 2·min_effect, and says that more seeds would be needed.
- min_detectable_effect: the smallest true difference that n seeds per side detect with the given
  power at level alpha: (z_{1-α/2} + z_{power}) · std · sqrt(2/n) (normal approximation).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci95: tuple[float, float]

    def fmt(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f}" if self.n == 1 else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Decision:
    verdict: str  # better | worse | no difference
    delta: float  # mean(candidate) - mean(baseline)
    p: float
    reason: str


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 3e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with df degrees of freedom."""
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t (bisection on the CDF; q in (0.5, 1))."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1 - t_sf_two_sided(mid, df) / 2 < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def summarize(values: Sequence[float]) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return Summary(n, mean, std, (mean - half, mean + half))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, df, two-sided p) of Welch's t-test of mean(a) vs mean(b); needs ≥ 2 values per side."""
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    diff = sa.mean - sb.mean
    if va + vb == 0:  # no spread on either side: any difference is exact
        return (math.copysign(math.inf, diff) if diff else 0.0), float(sa.n + sb.n - 2), (0.0 if diff else 1.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (sa.n - 1) if va else 0.0) + (vb ** 2 / (sb.n - 1) if vb else 0.0))
    return t, df, t_sf_two_sided(t, df)


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b)."""
    rng = random.Random(seed)
    diffs = sorted(sum(rng.choices(a, k=len(a))) / len(a) - sum(rng.choices(b, k=len(b))) / len(b)
                   for _ in range(n_boot))
    tail = (1 - level) / 2
    return diffs[int(tail * (n_boot - 1))], diffs[int((1 - tail) * (n_boot - 1))]


def decide(candidate: Sequence[float], baseline: Sequence[float], direction: str = "lower",
           min_effect: float = 0.0, alpha: float = 0.05) -> Decision:
    """better / worse / no difference of candidate vs baseline for a metric with this direction."""
    delta = summarize(candidate).mean - summarize(baseline).mean
    improvement = -delta if direction == "lower" else delta
    word = "better" if improvement > 0 else "worse"
    if len(candidate) < 2 or len(baseline) < 2:
        if abs(delta) >= 2 * min_effect and min_effect > 0:
            return Decision(word, delta, math.nan, f"|Δ| {abs(delta):.4f} ≥ 2 × min effect {min_effect:.4f} "
                                                   f"(one seed on a side: no variance to test)")
        return Decision("no difference", delta, math.nan,
                        f"Δ {delta:+.4f} with one seed on a side; run --ar-seeds 3 or more to test it")
    _, _, p = welch(candidate, baseline)
    if p >= alpha:
        return Decision("no difference", delta, p, f"Δ {delta:+.4f} not significant (Welch p = {p:.3f})")
    if abs(delta) < min_effect:
        return Decision("no difference", delta, p,
                        f"Δ {delta:+.4f} significant (p = {p:.3f}) but below the minimum effect {min_effect:.4f}")
    return Decision(word, delta, p, f"Δ {delta:+.4f}, Welch p = {p:.3g}, min effect {min_effect:.4f}")


def min_detectable_effect(std: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference of means that n seeds per side detect (two-sided, normal approximation)."""
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * std * math.sqrt(2 / n)
