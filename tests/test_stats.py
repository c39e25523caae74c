"""Noise-aware decisions: the statistics behind better / worse / no difference / undecided.

The distributions and tests are checked against scipy (a test-only dependency: the harness needs
none), the power with a threshold against a Monte Carlo count.
"""

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch_bench import stats
from autoresearch_bench.stats import Noise, Rule, Sequential

values = st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=1, max_size=8)
many = st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=2, max_size=8)
MIRROR = {"better": "worse", "worse": "better", "no difference": "no difference", "undecided": "undecided"}
H100_200_STEPS = Noise(seed_std=0.0072, pair_std=0.0006)  # BENCHMARKS.md, gpt_pretrain, fixed tokens


def seeded(values, first=0):
    return list(enumerate(values, first))


# --- distributions, against scipy ------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 7.85, 10, 30, 1000])
@pytest.mark.parametrize("q", [0.6, 0.8, 0.9, 0.95, 0.975, 0.995, 0.9995])
def test_t_quantile_and_tail_agree_with_scipy(q, df):
    expected = scipy.stats.t.ppf(q, df)
    assert stats.t_quantile(q, df) == pytest.approx(expected, rel=1e-9)
    assert stats.t_quantile(1 - q, df) == pytest.approx(-expected, rel=1e-9)
    assert stats.t_sf_two_sided(expected, df) == pytest.approx(2 * (1 - q), abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 10, 30, 100])
@pytest.mark.parametrize("level", [0.05, 0.01, 0.00625])
def test_power_without_threshold_is_the_noncentral_t_power_of_scipy(df, level):
    crit = scipy.stats.t.ppf(1 - level / 2, df)
    for ncp in (0.5, 2.0, 5.0, 8.0):
        expected = scipy.stats.nct.sf(crit, df, ncp) + scipy.stats.nct.sf(crit, df, -ncp)  # both tails
        assert stats.power(ncp * 0.003, 0.003, df, level) == pytest.approx(expected, abs=1e-6)


def test_power_with_a_threshold_matches_a_monte_carlo_count():
    rng = np.random.default_rng(0)
    n, effect, threshold = 3, 2.0, 1.5  # a std of 1 per seed's difference
    d = rng.normal(effect, 1.0, (400_000, n))
    mean, s = d.mean(axis=1), d.std(axis=1, ddof=1)
    crit = scipy.stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    counted = np.mean(np.abs(mean) >= np.maximum(threshold, crit))
    assert stats.power(effect, 1 / math.sqrt(n), n - 1, 0.05, threshold) == pytest.approx(counted, abs=0.003)


def test_the_detectable_effect_is_t_based():
    # The figure: std 0.0024, 3 seeds a side, alpha 0.05, power 0.8: 0.0074 (normal approximation: 0.0055).
    se, df = 0.0024 * math.sqrt(2 / 3), 4
    mde = stats.detectable_effect(se, df, 0.05)
    assert mde == pytest.approx(0.00737, abs=5e-6)
    crit = scipy.stats.t.ppf(0.975, df)
    assert scipy.stats.nct.sf(crit, df, mde / se) + scipy.stats.nct.sf(crit, df, -mde / se) == pytest.approx(0.8)
    assert stats.detectable_effect(se, df, 0.05, threshold=0.01) > 0.01  # a threshold is never detectable below itself


# --- summaries and tests, against scipy ------------------------------------------------------------


def test_summary_of_a_few_seeds():
    s = stats.summarize([0.81, 0.815, 0.812, 0.809])
    assert s.n == 4 and s.mean == pytest.approx(0.8115)
    assert s.std == pytest.approx(0.0026457513, abs=1e-9)
    half = 3.18244630528 * 0.0026457513 / 2
    assert s.ci95 == pytest.approx((0.8115 - half, 0.8115 + half), abs=1e-7)
    assert s.fmt() == "0.8115 ± 0.0026"


def test_summary_of_one_seed_has_no_spread():
    s = stats.summarize([0.8123])
    assert (s.n, s.std, s.ci95) == (1, 0.0, (0.8123, 0.8123)) and s.fmt() == "0.8123"
    with pytest.raises(ValueError):
        stats.summarize([])


@pytest.mark.parametrize(
    "a, b",
    [
        ([27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1], [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8]),
        ([19.1, 20.2, 21.0, 19.8, 20.5], [21.6, 22.4, 20.9, 23.1, 22.0]),
        ([0.812, 0.815, 0.809], [0.80, 0.83, 0.79, 0.81]),
    ],
)
def test_welch_and_its_decision_agree_with_scipy(a, b):
    expected = scipy.stats.ttest_ind(a, b, equal_var=False)
    t, df, p = stats.welch(a, b)
    assert (t, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-8)
    assert df == pytest.approx(expected.df, rel=1e-8)
    d = stats.decide(a, b)
    low, high = expected.confidence_interval(0.95)
    assert d.p == pytest.approx(expected.pvalue, rel=1e-8) and d.ci == pytest.approx((low, high), rel=1e-8)
    assert d.test == "Welch"


def test_the_paired_decision_agrees_with_scipys_related_t_test():
    base = [0.6431, 0.6367, 0.6510, 0.6424]
    cand = [0.6380, 0.6322, 0.6449, 0.6371]
    expected = scipy.stats.ttest_rel(cand, base)
    d = stats.decide_by_seed(seeded(cand), seeded(base))
    assert d.p == pytest.approx(expected.pvalue, rel=1e-8) and d.test == "paired t, seeds 0, 1, 2, 3"
    assert d.ci == pytest.approx(tuple(expected.confidence_interval(0.95)), rel=1e-8)


def test_holm_adjusts_as_the_step_down_definition_says():
    ps = [0.01, 0.04, 0.03, 0.005, math.nan]
    adjusted = stats.holm(ps)
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])
    for alpha in (0.02, 0.03, 0.05, 0.07):  # reject the k smallest while p_(i) <= alpha / (m - i)
        ordered, rejected = sorted(ps[:4]), set()
        for i, p in enumerate(ordered):
            if p > alpha / (4 - i):
                break
            rejected.add(p)
        assert {p for p, a in zip(ps, adjusted) if a <= alpha} == rejected


# --- thresholds from the right noise ---------------------------------------------------------------


def test_the_paired_threshold_comes_from_the_paired_noise_and_the_unpaired_one_from_the_seeds():
    rule = Rule(noise=H100_200_STEPS)
    assert rule.threshold(paired=True) == pytest.approx(stats.detectable_effect(0.0006 / math.sqrt(3), 2, 0.05))
    assert rule.threshold(paired=False) == pytest.approx(stats.detectable_effect(0.0072 * math.sqrt(2 / 3), 4, 0.05))
    assert rule.threshold(True) == pytest.approx(0.00196, abs=1e-5) and rule.threshold(False) == pytest.approx(
        0.0221, abs=1e-4
    )
    # no paired figure: a pair differs as two independent runs, sqrt(2) * seed std, and the threshold
    # is the unpaired one (pairing is not assumed to help): the t-based 0.0074 at 300 s
    unpaired_only = Rule(noise=Noise(seed_std=0.0024))
    assert unpaired_only.std(paired=True) == pytest.approx(0.0024 * math.sqrt(2))
    assert unpaired_only.threshold(paired=True) == unpaired_only.threshold(paired=False)
    assert unpaired_only.threshold(paired=False) == pytest.approx(0.00737, abs=1e-5)


def test_the_floor_holds_however_small_the_noise_and_an_explicit_min_effect_overrides_the_noise():
    bit_identical = Rule(noise=Noise(seed_std=0.01, pair_std=0.0), floor=0.001)
    assert bit_identical.threshold(paired=True) == 0.001
    assert Rule(floor=0.001, min_effect=0.0).threshold(True) == 0.001
    assert Rule(noise=H100_200_STEPS, min_effect=0.004).threshold(True) == 0.004
    runs = seeded([1.0, 1.1, 1.2])
    tiny = stats.decide_by_seed([(s, v - 0.0005) for s, v in runs], runs, bit_identical)
    assert tiny.verdict == "no difference" and tiny.p == 0.0 and "below the threshold 0.0010" in tiny.reason
    assert stats.decide_by_seed([(s, v - 0.002) for s, v in runs], runs, bit_identical).verdict == "better"


def test_noise_is_measured_from_runs_and_read_with_checks():
    measured = Noise.measure([(0, 1.0), (1, 1.2), (0, 1.02), (1, 1.18), (2, 1.1)], "five runs")
    assert measured.seed_std == pytest.approx(stats.summarize([1.01, 1.19, 1.1]).std)
    assert measured.pair_std == pytest.approx(math.sqrt(2 * (0.02**2 / 2 + 0.02**2 / 2) / 2))
    assert Noise.measure([(0, 1.0)], "one") == Noise()
    assert Noise.from_dict(measured.to_dict(), "x") == measured
    assert Noise(pair_std=0.001).or_else(Noise(0.01, 0.002, "toml")) == Noise(0.01, 0.001, "toml")
    with pytest.raises(ValueError, match="x: seed_std must be a finite number >= 0, not nan"):
        Noise.from_dict({"seed_std": math.nan}, "x")
    with pytest.raises(ValueError, match=r"x: unknown keys \['std'\]"):
        Noise.from_dict({"std": 0.1}, "x")


# --- verdicts --------------------------------------------------------------------------------------


def test_clearly_lower_bpb_is_better_and_higher_is_worse():
    base = [1.000, 1.002, 0.998, 1.001]
    better = stats.decide([0.950, 0.951, 0.949, 0.952], base, Rule(min_effect=0.01))
    assert better.verdict == "better" and better.delta == pytest.approx(-0.04975) and better.p < 1e-5
    assert better.ci[0] < better.delta < better.ci[1] < 0
    assert stats.decide([1.050, 1.051, 1.049, 1.052], base, Rule(min_effect=0.01)).verdict == "worse"


def test_identical_groups_are_no_difference():
    d = stats.decide_by_seed(seeded([0.9, 0.9, 0.9]), seeded([0.9, 0.9, 0.9]))
    assert (d.verdict, d.delta, d.p, d.ci) == ("no difference", 0.0, 1.0, (0.0, 0.0))
    d = stats.decide([0.8, 0.81, 0.82], [0.8, 0.81, 0.82])
    assert d.verdict == "no difference" and d.p == pytest.approx(1.0) and d.ci[0] < 0 < d.ci[1]


def test_no_difference_says_how_small_a_difference_it_could_have_seen():
    base = seeded([0.6431, 0.6367, 0.6510])
    d = stats.decide_by_seed(
        [(s, v + e) for (s, v), e in zip(base, (0.0004, -0.0005, 0.0002))],
        base,
        Rule(noise=H100_200_STEPS, floor=0.001),
    )
    assert d.verdict == "no difference" and "within the noise" in d.reason
    assert (
        d.detectable == pytest.approx(stats.detectable_effect(0.0006 / math.sqrt(3), 2, 0.05, threshold=d.threshold))
        and d.detectable > d.threshold
    )
    assert f"a true difference of {d.detectable:.4f}" in d.reason


def test_one_run_against_one_is_never_a_verdict_and_says_how_many_seeds_a_decision_needs():
    rule = Rule(noise=H100_200_STEPS, floor=0.001)
    d = stats.decide_by_seed([(0, 0.6475)], [(0, 0.65)], rule)
    assert d.verdict == "undecided" and math.isnan(d.p) and d.ci == (-math.inf, math.inf)
    assert "needs 3 seeds a side, paired by seed" in d.reason and "(--ar-seeds 3)" in d.reason
    power = lambda n: stats.power(0.0025, 0.0006 / math.sqrt(n), n - 1, 0.05, d.threshold)
    assert power(2) < stats.POWER <= power(3)  # the fewest seeds with 80% power
    small = stats.decide_by_seed([(0, 0.6490)], [(0, 0.65)], rule)
    assert "below the threshold 0.0020: more seeds would not make it a verdict" in small.reason
    unknown = stats.decide([0.5], [1.0])
    assert unknown.verdict == "undecided" and "--ar-seeds 3 or auto" in unknown.reason


def test_one_run_against_several_is_a_t_test_with_their_spread():
    base = [1.00, 1.02, 0.98]
    expected = scipy.stats.t.sf((1.00 - 0.90) / (0.02 * math.sqrt(1 + 1 / 3)), 2) * 2
    d = stats.decide([0.90], base)
    assert d.verdict == "better" and d.p == pytest.approx(expected, rel=1e-9) and d.test == "t, one run against 3"
    assert stats.decide([0.99], base).verdict == "no difference"
    assert stats.decide(base, [1.10]).verdict == "better"


def test_higher_is_better_flips_the_verdict():
    a, b = [0.95, 0.951, 0.949], [0.90, 0.901, 0.899]
    assert stats.decide(a, b, Rule("higher")).verdict == "better"
    assert stats.decide(a, b, Rule("lower")).verdict == "worse"
    with pytest.raises(ValueError, match="direction"):
        Rule("up")


def test_a_shift_hidden_by_the_seeds_spread_is_found_when_runs_pair_by_seed():
    baseline = [0.640, 0.634, 0.650]  # what each seed scores: a spread of 0.008
    candidate = [b - 0.012 + e for b, e in zip(baseline, (0.0004, -0.0003, 0.0001))]
    rule = Rule(min_effect=0.004)
    assert stats.decide(candidate, baseline, rule).verdict == "no difference"
    paired = stats.decide_by_seed(seeded(candidate), seeded(baseline), rule)
    assert paired.verdict == "better" and paired.ci[1] < -0.004 and paired.p < 0.01
    assert stats.decide_by_seed(seeded(baseline), seeded(candidate), rule).verdict == "worse"


def test_seeds_on_one_side_only_are_left_out_of_the_pairs():
    d = stats.decide_by_seed([(0, 1.0), (1, 1.1), (5, 9.0)], [(0, 1.2), (1, 1.3), (2, 1.25)])
    assert d.test == "paired t, seeds 0, 1" and d.delta == pytest.approx(-0.2)


# --- inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_is_an_error_never_a_verdict(bad):
    with pytest.raises(stats.NotFinite, match=rf"candidate value 3 of 3 is {bad}, not a finite number"):
        stats.decide([0.64, 0.65, bad], [0.60, 0.61, 0.62])
    with pytest.raises(ValueError, match="baseline value 1 of 2 is"):
        stats.decide_by_seed(seeded([0.6, 0.7]), seeded([bad, 0.7]))
    with pytest.raises(ValueError, match="not a finite number"):
        stats.summarize([1.0, bad])


def test_huge_values_do_not_overflow():
    scale = 1e300
    base, cand = [1.0 * scale, 1.02 * scale, 0.98 * scale], [0.90 * scale, 0.93 * scale, 0.87 * scale]
    small = stats.decide(cand[:], base[:], Rule(min_effect=0.01))
    big = stats.decide(cand, base, Rule(min_effect=0.01 * scale))
    assert big.verdict == "better" and big.p == pytest.approx(
        stats.decide([c / scale for c in cand], [b / scale for b in base]).p, rel=1e-12
    )
    assert math.isfinite(big.delta) and all(math.isfinite(x) for x in big.ci) and small.verdict == "better"
    edge = stats.decide_by_seed(seeded([1.7e308, -1.7e308]), seeded([1.6e308, -1.6e308]))
    assert not math.isnan(edge.p) and edge.verdict == "no difference"
    assert math.isfinite(stats.summarize([1.7e308, 1.6e308]).std)


# --- more seeds only while the question is open ----------------------------------------------------


def test_sequential_looks_spend_alpha_in_proportion_to_the_seeds():
    plan = Sequential(start=3, stop=8)
    levels = [plan.level(n, 0.05) for n in range(1, 12)]
    assert levels[:2] == [0.0, 0.0] and levels[2] == pytest.approx(0.05 * 3 / 8)
    assert levels[3:8] == pytest.approx([0.05 / 8] * 5) and levels[8:] == [0.0, 0.0, 0.0]
    assert math.fsum(levels) == pytest.approx(0.05)


def test_a_decision_is_open_while_more_seeds_could_still_decide_it():
    base = seeded([0.6431, 0.6367, 0.6510])
    rule = Rule(noise=H100_200_STEPS, floor=0.001)
    noisy = [(s, v - 0.002 + e) for (s, v), e in zip(base, (0.0009, -0.0008, 0.0001))]
    assert stats.decide_by_seed(noisy, base, rule, level=0.01, last=False).open
    assert not stats.decide_by_seed(noisy, base, rule, level=0.01, last=True).open
    same = [(s, v + e) for (s, v), e in zip(base, (0.00002, -0.00001, 0.00001))]  # inside ±threshold: settled
    settled = stats.decide_by_seed(same, base, rule, level=0.01, last=False)
    assert settled.verdict == "no difference" and not settled.open
    clear = stats.decide_by_seed([(s, v - 0.01) for s, v in base], base, Rule(min_effect=0.004), 0.01, last=False)
    assert clear.verdict == "better" and not clear.open


def test_several_candidates_are_one_holm_family():
    base = seeded([1.0, 1.1, 1.2, 1.05])
    shifts = [
        (-0.05, (0.011, -0.012, 0.004, -0.003)),
        (0.0, (0.01, -0.02, 0.015, -0.004)),
        (0.0, (0.02, -0.01, 0.005, -0.016)),
    ]
    candidates = [[(s, v + shift + e) for (s, v), e in zip(base, noise)] for shift, noise in shifts]
    alone = stats.decide_by_seed(candidates[0], base)
    family = stats.decide_family(candidates, base)
    assert alone.verdict == "better" and alone.p < 0.05 / 3 and family[0].verdict == "better"
    assert family[0].p == pytest.approx(3 * alone.p) and "Holm over 3" in family[0].reason
    borderline = [(s, v - 0.02 + e) for (s, v), e in zip(base, (0.011, -0.012, 0.004, -0.003))]
    p = stats.decide_by_seed(borderline, base).p
    assert 0.05 / 3 < p < 0.05
    assert [d.verdict for d in stats.decide_family([borderline, *candidates[1:]], base)] == ["no difference"] * 3


# --- properties ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(values)
def test_summary_interval_contains_the_mean(xs):
    s = stats.summarize(xs)
    assert s.ci95[0] <= s.mean <= s.ci95[1] and s.std >= 0 and min(xs) <= s.mean <= max(xs)


@settings(max_examples=60, deadline=None)
@given(many, many)
def test_welch_is_never_nan(a, b):
    t, df, p = stats.welch(a, b)
    assert not math.isnan(t) and df > 0 and 0.0 <= p <= 1.0


@settings(max_examples=60, deadline=None)
@given(values, values, st.sampled_from(["lower", "higher"]), st.sampled_from([0.0, 0.05]))
def test_decide_is_antisymmetric(a, b, direction, min_effect):
    other = "higher" if direction == "lower" else "lower"
    d = stats.decide(a, b, Rule(direction, min_effect=min_effect))
    swapped = stats.decide(b, a, Rule(direction, min_effect=min_effect))
    assert swapped.verdict == MIRROR[d.verdict] and swapped.delta == -d.delta
    assert stats.decide(a, b, Rule(other, min_effect=min_effect)).verdict == MIRROR[d.verdict]


@given(many, st.sampled_from(["lower", "higher"]), st.floats(0.0, 0.3))
@settings(max_examples=100, deadline=None)
def test_paired_decisions_are_antisymmetric(a, direction, min_effect):
    b = [x * 1.1 + 0.01 * i for i, x in enumerate(a)]
    rule = Rule(direction, min_effect=min_effect)
    forward = stats.decide_by_seed(seeded(a), seeded(b), rule)
    backward = stats.decide_by_seed(seeded(b), seeded(a), rule)
    assert backward.verdict == MIRROR[forward.verdict]
    assert backward.delta == pytest.approx(-forward.delta)
