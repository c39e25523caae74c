"""Seeds, noise and decisions: is a candidate better than its baseline, beyond the noise?

Distributions, without scipy (tests/test_stats.py checks them against it):
- Student's t: the tail through the regularized incomplete beta function (continued fraction,
  modified Lentz, Numerical Recipes §6.4), the quantile by bisection on it.
- power: the chance that a t-test at a level, together with a minimum effect, calls a true effect;
  the t statistic's spread comes from integrating over the sampling distribution of the std (chi), so
  for normal noise it is exact (with no minimum effect it is the noncentral-t power).
  detectable_effect inverts it: the smallest true effect called with the given power.

Noise and rules:
- Noise: two measured figures per profile, mode and budget: seed_std, the spread of one run's score
  across seeds (unpaired decisions), and pair_std, the std of the difference of two runs of one seed
  (paired decisions). An unknown pair_std is taken as sqrt(2) * seed_std, what two independent runs give.
- Rule: the metric's direction, the noise, the task's practical floor and alpha. threshold(paired),
  the smallest |delta| that counts: the t-based detectable effect of REFERENCE_SEEDS seeds at that
  noise (paired, without a measured pair_std: the unpaired one), or an explicit min_effect; never
  below the floor.

Decisions (decide_by_seed; decide_family for several candidates against one baseline):
- the test: paired t over the seeds both sides ran, where there are two or more; else Welch's test
  (two or more values a side); else one run against two or more (a t test with the other side's
  spread); one run against one is "undecided", and the reason says how many seeds a decision needs.
- "better" / "worse" need p < level and |delta| >= threshold; otherwise "no difference", which says
  the detectable effect of what ran: the smallest true difference that test and threshold would call
  with the rule's power (from the rule's noise where known, else the runs' own spread).
- decide_family: Holm's step-down over the candidates' p values (family-wise error <= level).
- Sequential (--ar-seeds auto): looks at start, start + 1, ..., stop seeds; by n seeds alpha * n / stop
  is spent, so each look tests at alpha / stop (the first at alpha * start / stop) and, by the union
  bound, a no-op gets a verdict at some look with probability <= alpha. A decision is open (more seeds
  could still decide it) while it has no verdict, more seeds may come and its (1 - alpha) interval
  still reaches past the threshold on a side.
- Inputs: NaN or inf is an error (NotFinite, a ValueError) naming the value; each comparison is computed on its values
  scaled by a power of two (exact), so values near the float range do not overflow.
- Verdict words are this module's (NOT_COMPARABLE among them), and so is the agent loop's keep rule
  (KeepRule: screen, then confirm), a pure function of per-seed values like the decisions above.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

NOT_COMPARABLE = "not comparable"  # the verdict where the numbers do not compare (other data, other speed)

REFERENCE_SEEDS = 3  # thresholds are the detectable effect of this many seeds
POWER = 0.8
Runs = Sequence[tuple[int | None, float]]  # (seed, value); a seed of None pairs with nothing


class NotFinite(ValueError):
    """A value that is NaN or infinite where a score must be a finite number."""


def _check_direction(direction: str) -> None:
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")


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
    verdict: str  # better | worse | no difference | undecided (the session adds: not comparable)
    delta: float  # mean(candidate) - mean(baseline), or the mean per-seed difference when paired
    p: float  # two-sided p of the test (Holm-adjusted in a family); NaN when no test could run
    ci: tuple[float, float]  # (1 - level) interval of delta; (-inf, inf) when nothing bounds it
    reason: str
    test: str = ""  # e.g. "paired t, seeds 0, 1, 2"
    threshold: float = 0.0  # the smallest |delta| that counts here
    detectable: float = math.nan  # the smallest true |delta| this test and threshold call with POWER
    open: bool = False  # more seeds could still decide it (--ar-seeds auto)


@dataclass(frozen=True)
class Noise:
    """Measured noise of one profile, mode and budget (None: not measured)."""

    seed_std: float | None = None  # std of a run's score across seeds
    pair_std: float | None = None  # std of the difference between two runs of one seed
    source: str = ""  # where the figures come from

    def std(self, paired: bool) -> float | None:
        """The std of one seed's difference (paired) or of one run across seeds (unpaired)."""
        if not paired:
            return self.seed_std
        if self.pair_std is not None:
            return self.pair_std
        return None if self.seed_std is None else math.sqrt(2) * self.seed_std

    def or_else(self, default: Noise) -> Noise:
        """These figures, each missing one taken from default."""
        taken = (self.seed_std is None and default.seed_std is not None) or (
            self.pair_std is None and default.pair_std is not None
        )
        if not taken:
            return self
        return Noise(
            self.seed_std if self.seed_std is not None else default.seed_std,
            self.pair_std if self.pair_std is not None else default.pair_std,
            " + ".join(s for s in (self.source, default.source) if s),
        )

    def to_dict(self) -> dict:
        return {
            k: v
            for k, v in (("seed_std", self.seed_std), ("pair_std", self.pair_std), ("source", self.source))
            if v not in (None, "")
        }

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Noise:
        """From a table such as {"seed_std": 0.0072, "pair_std": 0.0006, "source": "..."}; ValueError naming where."""
        unknown = sorted(set(d) - {"seed_std", "pair_std", "source"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; allowed: pair_std, seed_std, source")
        figures = {}
        for key in ("seed_std", "pair_std"):
            if key in d:
                value = d[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise ValueError(f"{where}: {key} must be a finite number >= 0, not {value!r}")
                figures[key] = float(value)
        return cls(**figures, source=str(d.get("source", "")))

    @classmethod
    def measure(cls, runs: Runs, source: str) -> Noise:
        """seed_std from the per-seed means of two or more seeds; pair_std from seeds run more than once
        (sqrt(2) times the pooled std of a seed's runs)."""
        by_seed: dict[int | None, list[float]] = {}
        for seed, value in runs:
            by_seed.setdefault(seed, []).append(float(value))
        means = [math.fsum(vs) / len(vs) for seed, vs in by_seed.items() if seed is not None]
        seed_std = summarize(means).std if len(means) > 1 else None
        repeated = [vs for seed, vs in by_seed.items() if seed is not None and len(vs) > 1]
        pair_std = None
        if repeated:
            within = math.fsum(summarize(vs).std ** 2 * (len(vs) - 1) for vs in repeated)
            pair_std = math.sqrt(2 * within / sum(len(vs) - 1 for vs in repeated))
        return cls(seed_std, pair_std, source) if seed_std is not None or pair_std is not None else cls()


@dataclass(frozen=True)
class Rule:
    """How a comparison is decided."""

    direction: str = "lower"
    noise: Noise = field(default_factory=Noise)
    floor: float = 0.0  # the task's practical floor: nothing smaller is better or worse
    min_effect: float | None = None  # replaces the noise-derived threshold (still floored)
    alpha: float = 0.05

    def __post_init__(self):
        _check_direction(self.direction)

    def std(self, paired: bool) -> float | None:
        return self.noise.std(paired)

    def threshold(self, paired: bool) -> float:
        """max(floor, min_effect or the REFERENCE_SEEDS-seed detectable effect at this noise); paired
        without a measured pair noise, the unpaired one (pairing is not assumed to help)."""
        if self.min_effect is not None:
            return max(self.floor, self.min_effect)
        if paired and self.noise.pair_std is None:
            return self.threshold(paired=False)
        std = self.std(paired)
        if not std:
            return self.floor
        se, df = _shape(paired, REFERENCE_SEEDS, REFERENCE_SEEDS)
        return max(self.floor, detectable_effect(std * se, df, self.alpha))


@dataclass(frozen=True)
class Sequential:
    """--ar-seeds auto: start with `start` seeds, add one at a time while the question is open, stop at `stop`."""

    start: int = 3
    stop: int = 8

    def level(self, n: int, alpha: float) -> float:
        """The level of the look at n seeds: alpha * n / stop is spent by then (alpha * start / stop at the first)."""
        spent = lambda k: alpha * min(k, self.stop) / self.stop if k >= self.start else 0.0
        return spent(n) - spent(n - 1)


# ---------------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
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
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=4096)
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
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf_two_sided(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _simpson(f, a: float, b: float, intervals: int = 200) -> float:
    if b <= a:
        return 0.0
    h = (b - a) / intervals
    inner = math.fsum((4 if i % 2 else 2) * f(a + i * h) for i in range(1, intervals))
    return h / 3 * (f(a) + inner + f(b))


def _log_chi(u: float, df: float) -> float:
    """Log density of u = sqrt(V / df), V ~ chi2(df): the estimated std over the true one."""
    if u <= 0:
        return -math.inf if df > 1 else math.log(2.0) + 0.5 * math.log(0.5) - math.lgamma(0.5)
    return math.log(2.0) + (df / 2) * math.log(df / 2) - math.lgamma(df / 2) + (df - 1) * math.log(u) - df * u * u / 2


@functools.lru_cache(maxsize=256)
def _chi_support(df: float) -> tuple[float, float]:
    """(lowest, highest) u outside which the density of u is below e^-40 of its peak."""
    peak = math.sqrt((df - 1) / df) if df > 1 else 0.0
    top = _log_chi(peak, df) - 40

    def edge(inside: float, outside: float) -> float:
        for _ in range(80):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if _log_chi(mid, df) > top else (inside, mid)
        return outside

    high = peak + 1.0
    while _log_chi(high, df) > top:
        high *= 2
    return (edge(peak, 0.0) if peak > 0 else 0.0), edge(peak, high)


def power(effect: float, se: float, df: float, level: float, threshold: float = 0.0) -> float:
    """Chance that a t-test with standard error se (estimated with df degrees of freedom) at this
    two-sided level calls a true difference `effect` significant with |delta| >= threshold."""
    if se <= 0 or df < 1:
        return float(abs(effect) >= threshold and effect != 0)
    crit = t_quantile(1 - level / 2, df) * se  # the estimated se is se * u
    low, high = _chi_support(df)

    def calls(u: float) -> float:
        cut = max(threshold, crit * u)
        return (_phi((effect - cut) / se) + _phi((-effect - cut) / se)) * math.exp(_log_chi(u, df))

    # pieces: where the threshold hands over to the test, and the test's step from missing to calling
    step, width = abs(effect) / crit, 8 * se / crit
    cuts = sorted({low, high, *(min(max(u, low), high) for u in (threshold / crit, step - width, step + width))})
    return min(1.0, math.fsum(_simpson(calls, a, b) for a, b in zip(cuts, cuts[1:])))


@functools.lru_cache(maxsize=4096)
def detectable_effect(se: float, df: float, level: float, power_: float = POWER, threshold: float = 0.0) -> float:
    """The smallest true |difference| that power() calls with probability power_ (bisection)."""
    if se <= 0 or df < 1:
        return threshold
    lo, hi = 0.0, max(threshold, se)
    while power(hi, se, df, level, threshold) < power_:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power(mid, se, df, level, threshold) < power_ else (lo, mid)
        if hi - lo <= 1e-9 * hi:
            break
    return hi


def _shape(paired: bool, n_candidate: int, n_baseline: int) -> tuple[float, float]:
    """(standard error per unit std, degrees of freedom) of a test with these many values a side."""
    if paired:
        return 1 / math.sqrt(n_candidate), n_candidate - 1
    return math.sqrt(1 / n_candidate + 1 / n_baseline), n_candidate + n_baseline - 2


def seeds_needed(
    effect: float, std: float, paired: bool, alpha: float, threshold: float, most: int = 100
) -> int | None:
    """The fewest seeds per side that call a true difference `effect` with POWER; None beyond `most`."""
    enough = lambda n: power(effect, std * _shape(paired, n, n)[0], _shape(paired, n, n)[1], alpha, threshold) >= POWER
    if not enough(most):
        return None
    lo, hi = 1, most  # enough(hi), not enough(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------------------------------------
# Values: checked, summarized, tested
# ---------------------------------------------------------------------------------------------------


def finite(values: Sequence[float], what: str) -> list[float]:
    """The values as floats; NotFinite naming the first one that is NaN or infinite."""
    xs = [float(v) for v in values]
    for i, x in enumerate(xs):
        if not math.isfinite(x):
            raise NotFinite(
                f"{what} value {i + 1} of {len(xs)} is {x}, not a finite number: a score must be "
                f"finite (a run that diverged is a crash, not a score)"
            )
    return xs


def _exponent(xs: Sequence[float]) -> int:
    """e such that every |x| * 2^-e < 1: scaling by 2^-e is exact and keeps squares in range."""
    return max((math.frexp(x)[1] for x in xs if x), default=0)


def _unscale(x: float, e: int) -> float:
    try:
        return math.ldexp(x, e)
    except OverflowError:
        return math.copysign(math.inf, x)


def summarize(values: Sequence[float]) -> Summary:
    """n, mean, sample std and the Student-t 95% interval of the mean."""
    xs = finite(values, "a")
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    if min(xs) == max(xs):  # exact: no rounding noise from the mean of identical values
        return Summary(n, xs[0], 0.0, (xs[0], xs[0]))
    e = _exponent(xs)
    ys = [math.ldexp(x, -e) for x in xs]
    mean = math.fsum(ys) / n
    std = math.sqrt(math.fsum((y - mean) ** 2 for y in ys) / (n - 1))
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return Summary(n, _unscale(mean, e), _unscale(std, e), (_unscale(mean - half, e), _unscale(mean + half, e)))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, df, two-sided p) of Welch's t-test of mean(a) vs mean(b); needs >= 2 values per side."""
    found = _welch(finite(a, "first"), finite(b, "second"))
    return found.t, found.df, found.p


@dataclass(frozen=True)
class _Found:
    """What a test measured, before a rule judges it; in units scaled by 2^-exponent."""

    delta: float
    se: float  # estimated standard error of delta (0: no spread; NaN: nothing to estimate it from)
    df: float
    test: str
    paired: bool
    n_candidate: int
    n_baseline: int
    exponent: int = 0

    @property
    def t(self) -> float:
        if self.se == 0:
            return math.copysign(math.inf, self.delta) if self.delta else 0.0
        return self.delta / self.se

    @property
    def p(self) -> float:
        if math.isnan(self.se):
            return math.nan
        return (0.0 if self.delta else 1.0) if self.se == 0 else t_sf_two_sided(self.t, self.df)

    def std(self) -> float:
        """The std of one value (or one seed's difference) that the data show."""
        return self.se / _shape(self.paired, self.n_candidate, self.n_baseline)[0]


def _welch(c: list[float], b: list[float]) -> _Found:
    if len(c) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got {len(c)} and {len(b)}")
    e = _exponent(c + b)
    sc, sb = (summarize([math.ldexp(x, -e) for x in xs]) for xs in (c, b))
    vc, vb = sc.std**2 / sc.n, sb.std**2 / sb.n
    se2 = vc + vb
    df = float(sc.n + sb.n - 2) if se2 == 0 else se2**2 / (vc**2 / (sc.n - 1) + vb**2 / (sb.n - 1))
    return _Found(sc.mean - sb.mean, math.sqrt(se2), df, "Welch", False, sc.n, sb.n, e)


def _one_against_several(c: list[float], b: list[float]) -> _Found:
    """One value on a side: a t test with the other side's spread (equal variances assumed)."""
    e = _exponent(c + b)
    sc, sb = (summarize([math.ldexp(x, -e) for x in xs]) for xs in (c, b))
    known = sc if sc.n > 1 else sb
    se = known.std * math.sqrt(1 / sc.n + 1 / sb.n)
    return _Found(sc.mean - sb.mean, se, known.n - 1, f"t, one run against {known.n}", False, sc.n, sb.n, e)


def _paired(c: list[float], b: list[float], seeds: list[int]) -> _Found:
    e = _exponent(c + b)
    d = summarize([math.ldexp(x, -e) - math.ldexp(y, -e) for x, y in zip(c, b)])
    return _Found(
        d.mean, d.std / math.sqrt(d.n), d.n - 1, f"paired t, seeds {', '.join(map(str, seeds))}", True, d.n, d.n, e
    )


def seed_means(runs: Runs) -> dict[int, float]:
    by_seed: dict[int, list[float]] = {}
    for seed, value in runs:
        if seed is not None:
            by_seed.setdefault(seed, []).append(value)
    return {seed: math.fsum(vs) / len(vs) for seed, vs in by_seed.items()}


def _measure(candidate: Runs, baseline: Runs) -> _Found:
    """The test that fits the runs: paired by seed, Welch, one against several, or none (one a side)."""
    cv, bv = finite([v for _, v in candidate], "candidate"), finite([v for _, v in baseline], "baseline")
    if not cv or not bv:
        raise ValueError(f"a decision needs at least one value per side, got {len(cv)} and {len(bv)}")
    c, b = seed_means(candidate), seed_means(baseline)
    shared = sorted(c.keys() & b.keys())
    if len(shared) >= 2:
        return _paired([c[s] for s in shared], [b[s] for s in shared], shared)
    if len(cv) > 1 and len(bv) > 1:
        return _welch(cv, bv)
    if len(cv) > 1 or len(bv) > 1:
        return _one_against_several(cv, bv)
    e = _exponent(cv + bv)
    return _Found(math.ldexp(cv[0], -e) - math.ldexp(bv[0], -e), math.nan, 0, "one run a side", bool(shared), 1, 1, e)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (NaN stays NaN and does not count in the family)."""
    order = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    adjusted, running = list(ps), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def decide_by_seed(
    candidate: Runs, baseline: Runs, rule: Rule = Rule(), level: float | None = None, last: bool = True
) -> Decision:
    """better / worse / no difference / undecided of candidate vs baseline runs, given as (seed, value).
    level: the test's level (default rule.alpha; a look's under Sequential); last: no more seeds will come."""
    return decide_family([candidate], baseline, rule, level, last)[0]


def decide_family(
    candidates: Sequence[Runs], baseline: Runs, rule: Rule = Rule(), level: float | None = None, last: bool = True
) -> list[Decision]:
    """decide_by_seed for each candidate against one baseline, Holm-adjusted over the family."""
    found = [_measure(c, baseline) for c in candidates]
    ps = holm([f.p for f in found])
    level = rule.alpha if level is None else level
    return [_judge(f, p, len(found), rule, level, last) for f, p in zip(found, ps)]


def decide(candidate: Sequence[float], baseline: Sequence[float], rule: Rule = Rule()) -> Decision:
    """decide_by_seed for values without seeds: never paired."""
    return decide_by_seed([(None, v) for v in candidate], [(None, v) for v in baseline], rule)


def _word(delta: float, direction: str) -> str:
    """What a difference candidate - baseline would be called if it counts."""
    return "better" if (delta < 0) == (direction == "lower") else "worse"


def _judge(f: _Found, p: float, family: int, rule: Rule, level: float, last: bool) -> Decision:
    """The rule's verdict on what a test found: p (Holm-adjusted in a family of `family`) against
    the level, |delta| against the threshold; with the interval, the detectable effect, and whether
    more seeds could still decide it."""
    delta, se = _unscale(f.delta, f.exponent), _unscale(f.se, f.exponent)
    threshold = rule.threshold(f.paired)
    std = rule.std(f.paired)
    if std is None and not math.isnan(f.se):
        std = _unscale(f.std(), f.exponent)
    unit, df = _shape(f.paired, f.n_candidate, f.n_baseline)
    if math.isnan(p):
        detectable = math.inf  # one run a side: no test, nothing detectable
    elif std is None or std == 0:
        detectable = threshold if std == 0 else math.nan
    else:
        detectable = detectable_effect(std * unit, df, level, POWER, threshold)
    common = dict(test=f.test, threshold=threshold, detectable=detectable)
    if math.isnan(p):
        return Decision(
            "undecided",
            delta,
            math.nan,
            (-math.inf, math.inf),
            _undecided_reason(delta, f.paired, rule, threshold),
            open=not last,
            **common,
        )
    half = t_quantile(1 - level / 2, f.df) * se if se else 0.0
    ci = (delta - half, delta + half)
    holm_note = f" (Holm over {family})" if family > 1 else ""
    seen = (
        f"it could see a true difference of {detectable:.4f} (power {POWER:.0%})"
        if math.isfinite(detectable)
        else "the noise of what ran is unknown"
    )
    if p >= level:
        verdict, why = (
            "no difference",
            (f"Δ {delta:+.4f} is within the noise ({f.test}: p = {p:.3g}{holm_note} ≥ {level:.3g}); {seen}"),
        )
    elif abs(delta) < threshold:
        verdict, why = (
            "no difference",
            (f"Δ {delta:+.4f} is significant (p = {p:.3g}{holm_note}) but below the threshold {threshold:.4f}"),
        )
    else:
        return Decision(
            _word(delta, rule.direction),
            delta,
            p,
            ci,
            f"Δ {delta:+.4f}, {f.test}: p = {p:.3g}{holm_note} < {level:.3g}, |Δ| ≥ threshold {threshold:.4f}",
            **common,
        )
    sure = t_quantile(1 - rule.alpha / 2, f.df) * se if se else 0.0  # at 1 - alpha: Δ inside ±threshold
    settled = threshold > 0 and -threshold < delta - sure and delta + sure < threshold
    return Decision(verdict, delta, p, ci, why, open=not last and not settled, **common)


def _undecided_reason(delta: float, paired: bool, rule: Rule, threshold: float) -> str:
    """Why one run a side decides nothing, and how many seeds a decision needs."""
    head = f"Δ {delta:+.4f} from one run a side: no test can tell it from noise"
    std = rule.std(paired=True)  # seeds needed, run side by side, pair by seed
    if std is None:
        return f"{head}; run at least 2 seeds a side, paired by seed (--ar-seeds 3 or auto)"
    if abs(delta) < threshold:
        return f"{head}, and it is below the threshold {threshold:.4f}: more seeds would not make it a verdict"
    return f"{head}; a true difference of {abs(delta):.4f} needs {_seeds_text(abs(delta), std, rule, threshold)}"


def _seeds_text(effect: float, std: float, rule: Rule, threshold: float) -> str:
    n = seeds_needed(effect, std, True, rule.alpha, threshold)
    if n is None:
        return "more than 100 seeds a side at this noise"
    return f"{n} seeds a side, paired by seed, for power {POWER:.0%} at the measured noise (--ar-seeds {n})"


@dataclass(frozen=True)
class KeepRule:
    """Screen, then confirm: the agent's keep rule, a pure function of per-seed values ({seed: value}).

    screen: the candidate on the screening seeds against the best's runs on the same seeds; it passes
    when the mean difference is better by at least the screen threshold: the task's floor, and where
    the pair noise is known the difference that a no-op beats with probability `screen_rate` (so a
    no-op costs 1 + screen_rate * confirmation runs on average).
    confirm: the candidate on fresh seeds, paired with the best on them: decide_by_seed under the
    rule (paired t at alpha, |Δ| >= the paired threshold); kept only when that says better."""

    rule: Rule
    screen_seeds: tuple[int, ...] = (0,)
    confirm_seeds: tuple[int, ...] = (1, 2, 3)
    screen_rate: float = 0.1

    @property
    def screen_threshold(self) -> float:
        std = self.rule.std(paired=True)
        z = NormalDist().inv_cdf(1 - self.screen_rate)
        return max(self.rule.floor, z * std / math.sqrt(len(self.screen_seeds)) if std else 0.0)

    def screen(self, candidate: dict[int, float], best: dict[int, float]) -> tuple[bool, str]:
        """(passes, why) of the screening seeds."""
        d = math.fsum(candidate[s] - best[s] for s in self.screen_seeds) / len(self.screen_seeds)
        gain, bar = (-d if self.rule.direction == "lower" else d), self.screen_threshold
        seeds = ", ".join(map(str, self.screen_seeds))
        if gain > 0 and gain >= bar:
            return True, f"screen: Δ {d:+.4f} on seed {seeds} clears {bar:.4f}"
        return False, f"screen: Δ {d:+.4f} on seed {seeds} against the best: not better by {bar:.4f}"

    def confirm(self, candidate: dict[int, float], best: dict[int, float]) -> Decision:
        """The paired decision on the confirmation seeds."""
        return decide_by_seed(
            [(s, candidate[s]) for s in self.confirm_seeds], [(s, best[s]) for s in self.confirm_seeds], self.rule
        )
