"""Noise-aware decisions: the statistics behind better / worse / no difference.

Reference values were computed once with mpmath at 30 digits (Student t through its regularized
incomplete beta) and agree with printed t tables and with Wikipedia's worked Welch example.
"""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch_bench import stats

values = st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=1, max_size=8)
many = st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=2, max_size=8)
MIRROR = {"better": "worse", "worse": "better", "no difference": "no difference"}


@pytest.mark.parametrize("q, df, expected", [
    (0.975, 1, 12.7062047362), (0.975, 2, 4.30265272975), (0.975, 4, 2.7764451052),
    (0.975, 10, 2.22813885199), (0.975, 30, 2.0422724563), (0.95, 3, 2.3533634348),
    (0.995, 5, 4.03214298356), (0.9995, 1, 636.619248769), (0.975, 7.85, 2.31369658919),
    (0.975, 1000, 1.96233908083)])
def test_t_quantile_matches_reference_values(q, df, expected):
    assert stats.t_quantile(q, df) == pytest.approx(expected, abs=1e-4 * max(1.0, expected / 100))
    assert stats.t_quantile(1 - q, df) == pytest.approx(-expected, abs=1e-4 * max(1.0, expected / 100))


@pytest.mark.parametrize("t, df, expected", [
    (2.0, 10, 0.96330598261463), (1.0, 1, 0.75), (3.834, 7.85, 0.99741467442172),
    (0.5, 2.5, 0.671151040065143), (10.0, 3, 0.998935800470793), (-1.5, 4, 0.104), (0.0, 3, 0.5)])
def test_t_cdf_matches_reference_values(t, df, expected):
    assert stats.t_cdf(t, df) == pytest.approx(expected, abs=1e-9)


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


def test_welch_matches_wikipedias_worked_example():
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    t, df, p = stats.welch(a1, a2)
    assert (t, df, p) == pytest.approx((-2.45535639829, 24.9885292902, 0.0213780014629), abs=1e-6)


@pytest.mark.parametrize("a, b, expected", [
    ([19.1, 20.2, 21.0, 19.8, 20.5], [21.6, 22.4, 20.9, 23.1, 22.0],
     (-3.83433997731, 7.84671574471, 0.00517226803378)),
    ([0.812, 0.815, 0.809], [0.80, 0.83, 0.79, 0.81], (0.516468630531, 3.24369926352, 0.638692515482))])
def test_welch_matches_reference_values(a, b, expected):
    assert stats.welch(a, b) == pytest.approx(expected, abs=1e-6)


def test_welch_without_spread_gives_no_nan():
    assert stats.welch([1.0, 1.0, 1.0], [1.0, 1.0]) == (0.0, 3.0, 1.0)
    assert stats.welch([0.1] * 3, [0.1] * 4)[2] == 1.0  # 0.1 is inexact in binary: still no spread
    t, _, p = stats.welch([1.0, 1.0], [2.0, 2.0])
    assert t == -math.inf and p == 0.0
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.welch([1.0], [1.0, 2.0])


def test_clearly_lower_bpb_is_better_and_higher_is_worse():
    base = [1.000, 1.002, 0.998, 1.001]
    better = stats.decide([0.950, 0.951, 0.949, 0.952], base, min_effect=0.01)
    assert better.verdict == "better" and better.delta == pytest.approx(-0.04975) and better.p < 1e-5
    assert better.ci[0] < better.delta < better.ci[1] < 0
    assert stats.decide([1.050, 1.051, 1.049, 1.052], base, min_effect=0.01).verdict == "worse"


def test_identical_groups_are_no_difference():
    d = stats.decide([0.9, 0.9, 0.9], [0.9, 0.9, 0.9])
    assert (d.verdict, d.delta, d.p, d.ci) == ("no difference", 0.0, 1.0, (0.0, 0.0))
    d = stats.decide([0.8, 0.81, 0.82], [0.8, 0.81, 0.82])
    assert d.verdict == "no difference" and d.p == pytest.approx(1.0) and d.ci[0] < 0 < d.ci[1]


def test_a_significant_difference_below_the_minimum_effect_is_no_difference():
    base = [1.0000, 1.0001, 0.9999]
    decision = stats.decide([0.9990, 0.9991, 0.9989], base, min_effect=0.01)
    assert decision.verdict == "no difference" and decision.p < 0.05 and "minimum effect" in decision.reason
    assert stats.decide([0.9990, 0.9991, 0.9989], base, min_effect=0.0005).verdict == "better"


def test_noise_is_no_difference():
    d = stats.decide([1.00, 1.03, 0.98], [1.01, 0.99, 1.02])
    assert d.verdict == "no difference" and d.p > 0.5 and "noise" in d.reason


def test_single_seed_falls_back_to_thresholds_and_asks_for_more_seeds():
    one_each = stats.decide([0.99], [1.0], min_effect=0.02)
    assert one_each.verdict == "no difference" and "more seeds" in one_each.reason
    assert math.isnan(one_each.p) and one_each.ci == (-math.inf, math.inf)
    assert stats.decide([0.97], [1.0], min_effect=0.02).verdict == "better"
    assert stats.decide([1.03], [1.0], min_effect=0.02).verdict == "worse"
    # no minimum effect and no spread known: nothing can be told apart from noise
    assert "more seeds" in stats.decide([0.5], [1.0]).reason


def test_single_seed_against_several_must_also_clear_twice_their_std():
    base = [1.00, 1.02, 0.98]  # std 0.02: the bar is 2 × 0.02 = 0.04
    within = stats.decide([0.97], base, min_effect=0.01)
    assert within.verdict == "no difference" and "more seeds" in within.reason
    assert within.ci[0] < within.delta < within.ci[1]
    assert stats.decide([0.95], base, min_effect=0.01).verdict == "better"
    assert stats.decide([0.95], base, min_effect=0.06).verdict == "no difference"
    assert stats.decide(base, [0.95], min_effect=0.01).verdict == "worse"


def test_higher_is_better_flips_the_verdict():
    a, b = [0.95, 0.951, 0.949], [0.90, 0.901, 0.899]
    assert stats.decide(a, b, direction="higher").verdict == "better"
    assert stats.decide(a, b, direction="lower").verdict == "worse"
    with pytest.raises(ValueError, match="direction"):
        stats.decide(a, b, direction="up")


def test_bootstrap_interval_contains_the_true_difference():
    low, high = stats.bootstrap_diff_ci([2.0, 2.1, 1.9, 2.05, 1.95], [1.0, 1.1, 0.9, 1.05, 0.95])
    assert 0.9 < low < 1.0 < high < 1.1
    assert stats.bootstrap_diff_ci([2.0, 2.1, 1.9], [1.0, 1.1]) == stats.bootstrap_diff_ci([2.0, 2.1, 1.9], [1.0, 1.1])
    narrow = stats.bootstrap_diff_ci([2.0, 2.1, 1.9, 2.05, 1.95], [1.0, 1.1, 0.9, 1.05, 0.95], level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_minimum_detectable_effect_shrinks_with_seeds():
    one, three, five = (stats.min_detectable_effect(0.01, n) for n in (1, 3, 5))
    assert one == pytest.approx((1.959964 + 0.841621) * 0.01 * math.sqrt(2), rel=1e-5)
    assert one > three > five and three == pytest.approx(one / math.sqrt(3))
    assert stats.min_detectable_effect(0.01, 3, power=0.9) > three


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
    d = stats.decide(a, b, direction, min_effect)
    swapped = stats.decide(b, a, direction, min_effect)
    assert swapped.verdict == MIRROR[d.verdict] and swapped.delta == -d.delta
    assert stats.decide(a, b, other, min_effect).verdict == MIRROR[d.verdict]
    assert stats.decide(b, a, other, min_effect).verdict == d.verdict


def test_a_shift_hidden_by_the_seeds_spread_is_found_when_runs_pair_by_seed():
    baseline = [0.640, 0.634, 0.650]  # what each seed scores: a spread of 0.008
    candidate = [b - 0.012 + e for b, e in zip(baseline, (0.0004, -0.0003, 0.0001))]
    assert stats.decide(candidate, baseline, min_effect=0.004).verdict == "no difference"
    paired = stats.decide_paired(candidate, baseline, min_effect=0.004)
    assert paired.verdict == "better" and paired.ci[1] < -0.004 and paired.p < 0.01
    assert stats.decide_paired(baseline, candidate, min_effect=0.004).verdict == "worse"


def test_paired_runs_with_the_same_score_per_seed_are_no_difference():
    runs = [0.640, 0.634, 0.650]
    assert stats.decide_paired(runs, runs).verdict == "no difference"
    assert stats.decide_paired([r + 1e-4 for r in runs], runs, min_effect=0.004).verdict == "no difference"


def test_paired_needs_a_value_per_seed_on_both_sides_and_one_pair_uses_thresholds():
    with pytest.raises(ValueError, match="as many values"):
        stats.decide_paired([0.6, 0.7], [0.6])
    assert stats.decide_paired([0.60], [0.65], min_effect=0.004) == stats.decide([0.60], [0.65], min_effect=0.004)


@given(many, st.sampled_from(["lower", "higher"]), st.floats(0.0, 0.3))
@settings(max_examples=200, deadline=None)
def test_decide_paired_is_antisymmetric(a, direction, min_effect):
    b = [x * 1.1 + 0.01 * i for i, x in enumerate(a)]
    forward = stats.decide_paired(a, b, direction, min_effect)
    backward = stats.decide_paired(b, a, direction, min_effect)
    assert backward.verdict == MIRROR[forward.verdict]
    assert backward.delta == pytest.approx(-forward.delta)
