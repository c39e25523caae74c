"""Noise-aware decisions: the statistics behind better / worse / no difference."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch_bench import stats

values = st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=2, max_size=8)


def test_t_distribution_matches_tables():
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)  # textbook table
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert stats.t_sf_two_sided(2.0, 10) == pytest.approx(0.07339, abs=1e-4)


def test_welch_matches_a_hand_computed_example():
    # means 20.12 and 22.0; variances 0.517 and 0.685; se² = 0.1034 + 0.137 → t = -3.834, df = 7.85
    a, b = [19.1, 20.2, 21.0, 19.8, 20.5], [21.6, 22.4, 20.9, 23.1, 22.0]
    t, df, p = stats.welch(a, b)
    assert t == pytest.approx(-3.834, abs=2e-3)
    assert df == pytest.approx(7.85, abs=0.01)
    assert p == pytest.approx(stats.t_sf_two_sided(3.834, 7.85), abs=1e-4) and 0.003 < p < 0.007


def test_identical_groups_without_spread_give_no_nan():
    t, df, p = stats.welch([1.0, 1.0, 1.0], [1.0, 1.0])
    assert (t, p) == (0.0, 1.0)
    assert stats.welch([1.0, 1.0], [2.0, 2.0])[2] == 0.0


def test_clearly_lower_bpb_is_better_and_higher_is_worse():
    base = [1.000, 1.002, 0.998, 1.001]
    assert stats.decide([0.950, 0.951, 0.949, 0.952], base, min_effect=0.01).verdict == "better"
    assert stats.decide([1.050, 1.051, 1.049, 1.052], base, min_effect=0.01).verdict == "worse"


def test_a_significant_difference_below_the_minimum_effect_is_no_difference():
    base = [1.0000, 1.0001, 0.9999]
    decision = stats.decide([0.9990, 0.9991, 0.9989], base, min_effect=0.01)
    assert decision.verdict == "no difference" and "minimum effect" in decision.reason


def test_noise_is_no_difference():
    assert stats.decide([1.00, 1.03, 0.98], [1.01, 0.99, 1.02]).verdict == "no difference"


def test_single_seed_needs_twice_the_minimum_effect():
    assert stats.decide([0.99], [1.0], min_effect=0.01).verdict == "no difference"
    assert "--ar-seeds" in stats.decide([0.99], [1.0], min_effect=0.01).reason
    assert stats.decide([0.97], [1.0], min_effect=0.01).verdict == "better"


def test_higher_is_better_flips_the_verdict():
    a, b = [0.95, 0.951, 0.949], [0.90, 0.901, 0.899]
    assert stats.decide(a, b, direction="higher").verdict == "better"
    assert stats.decide(a, b, direction="lower").verdict == "worse"


def test_bootstrap_interval_contains_the_true_difference():
    low, high = stats.bootstrap_diff_ci([2.0, 2.1, 1.9, 2.05, 1.95], [1.0, 1.1, 0.9, 1.05, 0.95], n_boot=2000)
    assert low < 1.0 < high and low > 0.8


def test_minimum_detectable_effect_shrinks_with_seeds():
    one, three, five = (stats.min_detectable_effect(0.01, n) for n in (1, 3, 5))
    assert one == pytest.approx(2.8016 * 0.01 * math.sqrt(2), rel=1e-3)
    assert one > three > five


@settings(max_examples=50, deadline=None)
@given(values)
def test_summary_interval_contains_the_mean(xs):
    s = stats.summarize(xs)
    assert s.ci95[0] <= s.mean <= s.ci95[1] and s.std >= 0


@settings(max_examples=50, deadline=None)
@given(values, values)
def test_swapping_candidate_and_baseline_mirrors_the_verdict(a, b):
    mirrored = {"better": "worse", "worse": "better", "no difference": "no difference"}
    assert stats.decide(b, a).verdict == mirrored[stats.decide(a, b).verdict]
