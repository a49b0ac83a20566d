"""Champion vs challenger paired t-test: matches scipy, decides `better` as documented, explains itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from quant_core.live.paired import paired_test


def days(seed: int, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """A champion's daily log returns and a challenger that shares its market noise."""
    rng = np.random.default_rng(seed)
    champion = rng.normal(0.0, 0.02, n)
    return champion + rng.normal(0.0, 0.002, n), champion


@pytest.mark.parametrize("seed", range(5))
def test_p_value_matches_scipy_ttest_rel_greater(seed):
    challenger, champion = days(seed)
    res = paired_test(challenger, champion)
    ref = stats.ttest_rel(challenger, champion, alternative="greater")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.t_stat == pytest.approx(ref.statistic, rel=1e-9)
    assert res.n == 90 and res.mean_difference == pytest.approx(np.mean(challenger - champion))


def test_margin_shifts_the_null():
    challenger, champion = days(7)
    margin = 0.0005
    res = paired_test(challenger, champion, margin=margin)
    ref = stats.ttest_rel(challenger - margin, champion, alternative="greater")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9) and res.margin == margin


finite = st.floats(-0.1, 0.1, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=20, max_size=60))
def test_property_matches_scipy_and_better_needs_a_positive_edge(pairs):
    a, b = np.array(pairs).T
    d = a - b
    res = paired_test(a, b)
    assert 0.0 <= res.p_value <= 1.0
    assert res.better == (res.p_value < 0.05 and res.mean_difference > 0)
    if np.std(d, ddof=1) > 1e-6 * max(1e-12, float(np.max(np.abs(d)))):
        assert res.p_value == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue, abs=1e-9)


def test_a_shifted_series_is_better_and_says_by_how_much():
    challenger, champion = days(3)
    res = paired_test(challenger + 0.0012, champion)
    assert res.better and res.p_value < 0.05
    assert res.reason().startswith("beats the champion by 0.1")
    assert "over 90 paired days (one-sided paired t-test p=" in res.reason() and "< 0.05" in res.reason()


def test_equal_series_are_not_better():
    _, champion = days(4)
    res = paired_test(champion, champion.copy())
    assert not res.better and res.p_value == 1.0 and res.mean_difference == 0.0
    assert res.reason().startswith("does not beat the champion")


def test_zero_spread_differences():
    champion = np.full(30, 0.01)  # identical days: every difference is the same float
    up = paired_test(champion + 0.001, champion)
    assert up.p_value == 0.0 and up.better and up.t_stat == math.inf
    assert paired_test(champion + 0.001, champion, margin=0.002).p_value == 1.0
    assert not paired_test(champion + 0.001, champion, margin=0.002).better


def test_a_significant_edge_below_the_margin_is_not_better():
    challenger, champion = days(6)
    res = paired_test(challenger + 0.001, champion, margin=0.01)
    assert not res.better and res.p_value > 0.5
    assert "not above the margin" in res.reason()


def test_an_insignificant_edge_is_explained():
    rng = np.random.default_rng(8)
    champion = rng.normal(0, 0.02, 25)
    challenger = champion + rng.normal(0.0001, 0.02, 25)
    res = paired_test(challenger, champion)
    assert not res.better
    assert "not significant" in res.reason() or "not above the margin" in res.reason()


def test_too_few_days():
    challenger, champion = days(9, n=19)
    res = paired_test(challenger + 1.0, champion)
    assert res.n == 19 and not res.better and res.p_value == 1.0 and math.isnan(res.t_stat)
    assert res.reason() == "too few paired days to compare: 19 < 20 needed"
    assert paired_test(challenger + 1.0, champion, min_days=10).better


def test_bad_inputs_are_named():
    challenger, champion = days(10, n=30)
    with pytest.raises(ValueError, match="challenger has 29 days but champion has 30"):
        paired_test(challenger[1:], champion)
    with pytest.raises(ValueError, match="^champion: contains NaN"):
        paired_test(challenger, np.where(np.arange(30) == 3, np.nan, champion))
    with pytest.raises(ValueError, match="^challenger: contains NaN or infinite"):
        paired_test(np.where(np.arange(30) == 3, np.inf, challenger), champion)
    with pytest.raises(ValueError, match="^alpha"):
        paired_test(challenger, champion, alpha=1.5)
    with pytest.raises(ValueError, match="^min_days"):
        paired_test(challenger, champion, min_days=1)
