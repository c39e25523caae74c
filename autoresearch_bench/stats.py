"""Seeds, noise and decisions: is a candidate better than its baseline, beyond the noise?

- Student's t distribution without scipy: the CDF through the regularized incomplete beta function
  (continued fraction, modified Lentz, as in Numerical Recipes §6.4), the quantile by bisection on
  that CDF. Both agree with scipy to better than 1e-6 on the values the tests pin.
- summarize: mean, sample std (ddof=1) and a Student-t 95% interval of the mean; one value has
  std 0 and a degenerate interval.
- welch: Welch's t-test (unequal variances, Welch–Satterthwaite df). Two groups without spread give
  t = ±inf, p = 0 when their means differ and t = 0, p = 1 when they do not (never NaN).
- bootstrap_diff_ci: percentile bootstrap of mean(a) - mean(b), seeded so that reruns agree.
- decide: "better" / "worse" only when the difference is significant (Welch p < alpha) AND
  |delta| >= min_effect; otherwise "no difference". With one value on a side Welch has no variance
  to test, so the fallback is a rule of thumb: |delta| must exceed min_effect and twice the seed std
  known from the other side, if it has one; with neither yardstick (one seed per side and
  min_effect 0) nothing can be told apart from noise. The reason then asks for more seeds.
- min_detectable_effect: the smallest true difference that n seeds per side detect with the given
  power at level alpha, (z_{1-alpha/2} + z_power) * std * sqrt(2/n). This normal approximation
  ignores that std is itself estimated, so for n < 5 the true requirement is somewhat larger.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci95: tuple[float, float]

    def fmt(self, digits: int = 4) -> str:
        """'0.8123 ± 0.0041'; a single value has no spread to show, so just '0.8123'."""
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Decision:
    verdict: str  # better | worse | no difference
    delta: float  # mean(candidate) - mean(baseline)
    p: float  # Welch two-sided p; NaN when a side has a single value
    ci: tuple[float, float]  # (1 - alpha) interval of delta; (-inf, inf) when nothing bounds it
    reason: str


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                   -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = t_sf_two_sided(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t, q in (0, 1): bisection on the upper tail."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), not {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    tail = 2.0 * (1.0 - q)  # two-sided tail mass beyond the quantile
    lo, hi = 0.0, 1.0
    while t_sf_two_sided(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if t_sf_two_sided(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def summarize(values: Sequence[float]) -> Summary:
    """n, mean, sample std and the Student-t 95% interval of the mean."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    if min(xs) == max(xs):  # exact: no rounding noise from the mean of identical values
        return Summary(n, xs[0], 0.0, (xs[0], xs[0]))
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, (mean - half, mean + half))


def _welch_parts(a: Summary, b: Summary) -> tuple[float, float]:
    """(squared standard error of the difference, Welch–Satterthwaite df)."""
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se2 = va + vb
    if se2 == 0.0:
        return 0.0, float(a.n + b.n - 2)
    return se2, se2 ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, df, two-sided p) of Welch's t-test of mean(a) vs mean(b); needs >= 2 values per side."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got {sa.n} and {sb.n}")
    diff = sa.mean - sb.mean
    se2, df = _welch_parts(sa, sb)
    if se2 == 0.0:  # no spread on either side: any difference is exact
        return (math.copysign(math.inf, diff), df, 0.0) if diff else (0.0, df, 1.0)
    t = diff / math.sqrt(se2)
    return t, df, t_sf_two_sided(t, df)


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) at the given level."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("bootstrap_diff_ci needs at least one value per side")
    rng = np.random.default_rng(seed)
    diffs = (xa[rng.integers(0, xa.size, (n_boot, xa.size))].mean(axis=1)
             - xb[rng.integers(0, xb.size, (n_boot, xb.size))].mean(axis=1))
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def decide(candidate: Sequence[float], baseline: Sequence[float], direction: str = "lower",
           min_effect: float = 0.0, alpha: float = 0.05) -> Decision:
    """better / worse / no difference of candidate vs baseline for a metric with this direction."""
    _check_direction(direction)
    sc, sb = summarize(candidate), summarize(baseline)
    delta = sc.mean - sb.mean
    word = _word(delta, direction)
    if sc.n < 2 or sb.n < 2:
        return _decide_single(sc, sb, delta, word, min_effect, alpha)
    se2, df = _welch_parts(sc, sb)
    half = t_quantile(1 - alpha / 2, df) * math.sqrt(se2) if se2 else 0.0
    _, _, p = welch(candidate, baseline)
    return _verdict(word, delta, p, (delta - half, delta + half), "Welch", min_effect, alpha)


def decide_paired(candidate: Sequence[float], baseline: Sequence[float], direction: str = "lower",
                  min_effect: float = 0.0, alpha: float = 0.05) -> Decision:
    """decide for runs paired by seed (candidate[i] and baseline[i] ran seed i): a t-test of the
    differences, which cancels what a seed does to both sides; decide's rules with one pair."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired runs need as many values per side, got {len(candidate)} and {len(baseline)}")
    if len(candidate) < 2:
        return decide(candidate, baseline, direction, min_effect, alpha)
    _check_direction(direction)
    d = summarize([c - b for c, b in zip(candidate, baseline)])
    if d.std == 0.0:
        p = 0.0 if d.mean else 1.0
        ci = (d.mean, d.mean)
    else:
        p = t_sf_two_sided(d.mean / (d.std / math.sqrt(d.n)), d.n - 1)
        half = t_quantile(1 - alpha / 2, d.n - 1) * d.std / math.sqrt(d.n)
        ci = (d.mean - half, d.mean + half)
    return _verdict(_word(d.mean, direction), d.mean, p, ci, "paired t", min_effect, alpha)


def decide_by_seed(candidate: Sequence[tuple[int | None, float]], baseline: Sequence[tuple[int | None, float]],
                   direction: str = "lower", min_effect: float = 0.0, alpha: float = 0.05) -> tuple[Decision, str]:
    """decide for runs given as (seed, value): paired by seed (decide_paired over each seed's mean)
    where two or more seeds ran on both sides, leaving out seeds that ran on one side only; else
    decide over all values (a seed of None pairs with nothing). Also returns the name of the test."""
    def means(runs: Sequence[tuple[int | None, float]]) -> dict[int, float]:
        by_seed: dict[int, list[float]] = {}
        for seed, value in runs:
            if seed is not None:
                by_seed.setdefault(seed, []).append(value)
        return {seed: math.fsum(vs) / len(vs) for seed, vs in by_seed.items()}

    c, b = means(candidate), means(baseline)
    shared = sorted(c.keys() & b.keys())
    if len(shared) >= 2:
        return (decide_paired([c[s] for s in shared], [b[s] for s in shared], direction, min_effect, alpha),
                f"paired t, seeds {', '.join(map(str, shared))}")
    cv, bv = [v for _, v in candidate], [v for _, v in baseline]
    test = "Welch" if min(len(cv), len(bv)) > 1 else "threshold (one run on a side)"
    return decide(cv, bv, direction, min_effect, alpha), test


def _check_direction(direction: str) -> None:
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")


def _word(delta: float, direction: str) -> str:
    """What a difference candidate - baseline would be called if it counts."""
    return "better" if (delta < 0) == (direction == "lower") else "worse"


def _verdict(word: str, delta: float, p: float, ci: tuple[float, float], test: str, min_effect: float,
             alpha: float) -> Decision:
    """The verdict of a test's p value and the minimum effect."""
    if p >= alpha:
        return Decision("no difference", delta, p, ci,
                        f"Δ {delta:+.4f} is within the noise ({test} p = {p:.3f} ≥ {alpha}); "
                        f"more seeds narrow it")
    if abs(delta) < min_effect:
        return Decision("no difference", delta, p, ci,
                        f"Δ {delta:+.4f} is significant (p = {p:.3g}) but below the minimum effect "
                        f"{min_effect:.4f}")
    return Decision(word, delta, p, ci, f"Δ {delta:+.4f}, {test} p = {p:.3g} < {alpha}, "
                                        f"|Δ| ≥ min effect {min_effect:.4f}")


def _decide_single(sc: Summary, sb: Summary, delta: float, word: str, min_effect: float,
                   alpha: float) -> Decision:
    """The fallback of decide when a side has one value: thresholds instead of a test."""
    known = sc if sc.n > 1 else sb if sb.n > 1 else None
    if known is None:
        ci, noise = (-math.inf, math.inf), None
    else:  # pooled-variance t interval whose only variance estimate is the known side's
        half = t_quantile(1 - alpha / 2, known.n - 1) * known.std * math.sqrt(1 / sc.n + 1 / sb.n)
        ci, noise = (delta - half, delta + half), known.std
    more = "run more seeds (--ar-seeds 3 or more) to test it"
    if noise is None and min_effect <= 0:
        return Decision("no difference", delta, math.nan, ci,
                        f"Δ {delta:+.4f} from one seed per side and no minimum effect: "
                        f"no yardstick for the noise; {more}")
    clears = abs(delta) > min_effect and (noise is None or abs(delta) > 2 * noise)
    bar = f"min effect {min_effect:.4f}" + (f" and 2 × seed std {2 * noise:.4f}" if noise is not None else "")
    if clears:
        return Decision(word, delta, math.nan, ci,
                        f"|Δ| {abs(delta):.4f} > {bar} (one seed on a side: a threshold, not a test)")
    return Decision("no difference", delta, math.nan, ci,
                    f"Δ {delta:+.4f} does not exceed {bar} with one seed on a side; {more}")


def min_detectable_effect(std: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference of means that n seeds per side detect (two-sided, normal approx.)."""
    if n < 1:
        raise ValueError(f"need at least one seed per side, got {n}")
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * std * math.sqrt(2 / n)
