"""Circuit breakers: each trips at its limit's boundary as documented, reads None on short data, and refuses
malformed streams and limits by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS
from quant_core.live.breakers import (
    BREAKERS,
    ForwardStream,
    Reading,
    check_limits,
    ks_statistic,
    read_breakers,
    tripped,
)


def make_stream(kind: str = "pool", r=(), b=None, m=None, trades=(), h=()) -> ForwardStream:
    """A stream with harmless defaults: benchmark = returns, one flat market covering the forward days."""
    r = np.asarray(r, dtype=float)
    b = r.copy() if b is None else np.asarray(b, dtype=float)
    m = np.zeros((1, r.size)) if m is None else np.atleast_2d(np.asarray(m, dtype=float))
    return ForwardStream(kind, r, b, m, np.asarray(trades, dtype=float), np.asarray(h, dtype=float))


def limits(**overrides: float) -> dict[str, float]:
    return {**DEFAULT_CIRCUIT_BREAKERS, **overrides}


def read(stream: ForwardStream, name: str, limit: float | None = None) -> Reading:
    lims = limits() if limit is None else limits(**{name: limit})
    return read_breakers(stream, lims)[name]


def assert_boundary(stream: ForwardStream, name: str) -> None:
    """A '>' breaker: a limit equal to the value does not trip, anything below it does."""
    value = read(stream, name, limit=1e9).value
    assert value is not None
    assert not read(stream, name, limit=value).tripped
    assert read(stream, name, limit=value * (1 - 1e-9)).tripped


def test_breakers_cover_exactly_the_default_limits():
    assert set(BREAKERS) == set(DEFAULT_CIRCUIT_BREAKERS)
    assert all(b.name == k and b.definition and b.pools and b.strategies and b.unit for k, b in BREAKERS.items())
    readings = read_breakers(make_stream(r=[0.0]), limits())
    assert list(readings) == list(BREAKERS)
    assert all(r.action == BREAKERS[n].action for n, r in readings.items())


# max_daily_loss ---------------------------------------------------------------------------------------------


def test_daily_loss_is_the_fraction_of_the_days_start_value():
    s = make_stream(r=[0.01, math.log(0.97)])
    reading = read(s, "max_daily_loss")
    assert reading.value == pytest.approx(0.03, rel=1e-12)
    assert reading.tripped and reading.action == "retire" and reading.detail == "day loss 3.0% > 2%"
    assert not read(s, "max_daily_loss", limit=0.031).tripped
    assert_boundary(s, "max_daily_loss")


def test_daily_loss_is_zero_on_a_gain_and_none_without_a_forward_day():
    assert read(make_stream(r=[-0.5, 0.02]), "max_daily_loss").value == 0.0
    reading = read(make_stream(r=[]), "max_daily_loss")
    assert reading.value is None and not reading.tripped and "needs 1 forward day" in reading.detail


# consecutive_losses_limit -----------------------------------------------------------------------------------


def test_consecutive_losing_days_for_pools_trip_at_the_limit():
    s = make_stream(r=[-0.01, 0.01, -0.01, -0.02, -0.01])
    assert read(s, "consecutive_losses_limit").value == 3.0
    assert read(s, "consecutive_losses_limit", limit=3).tripped
    assert not read(s, "consecutive_losses_limit", limit=4).tripped
    assert read(make_stream(r=[-0.01] * 5), "consecutive_losses_limit").tripped  # default 5
    assert read(make_stream(r=[-0.01, 0.0]), "consecutive_losses_limit").value == 0.0  # a flat day ends it


def test_consecutive_losing_trades_for_strategies():
    s = make_stream("strategy", r=[-0.01] * 8, trades=[-0.1, 0.2, -0.1, -0.05])  # days are not counted
    reading = read(s, "consecutive_losses_limit", limit=2)
    assert reading.value == 2.0 and reading.tripped and reading.detail == "losing trades in a row: 2 >= 2"
    assert not read(s, "consecutive_losses_limit", limit=3).tripped
    assert read(make_stream("strategy", r=[0.0]), "consecutive_losses_limit").value == 0.0


# unusual_market_threshold -----------------------------------------------------------------------------------


def alternating(n: int, size: float = 0.01) -> np.ndarray:
    return size * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def test_unusual_market_in_sigmas_of_the_30_days_before_today():
    today = 0.05
    market = np.concatenate([alternating(30), [today]])
    sigma = 0.01 * math.sqrt(30 / 29)  # sample std (ddof=1) of ±0.01 over 30 days
    s = make_stream(r=[0.0], m=[market])
    reading = read(s, "unusual_market_threshold")
    assert reading.value == pytest.approx(today / sigma, rel=1e-12)
    assert reading.tripped and reading.action == "pause"
    assert_boundary(s, "unusual_market_threshold")
    noisy_past = np.concatenate([alternating(50, 1.0), market])  # older than 30 days: ignored
    assert read(make_stream(r=[0.0], m=[noisy_past]), "unusual_market_threshold").value == reading.value


def test_unusual_market_takes_the_largest_market_and_skips_flat_ones():
    calm = np.concatenate([alternating(30), [0.02]])
    wild = np.concatenate([alternating(30), [-0.04]])
    flat = np.concatenate([np.zeros(30), [0.5]])
    value = read(make_stream(r=[0.0], m=[calm, wild, flat]), "unusual_market_threshold").value
    assert value == pytest.approx(0.04 / (0.01 * math.sqrt(30 / 29)))
    reading = read(make_stream(r=[0.0], m=[flat]), "unusual_market_threshold")
    assert reading.value is None and not reading.tripped


def test_unusual_market_needs_ten_days_before_today():
    assert read(make_stream(r=[0.0], m=[np.append(alternating(10), 0.1)]), "unusual_market_threshold").value
    reading = read(make_stream(r=[0.0], m=[np.append(alternating(9), 0.1)]), "unusual_market_threshold")
    assert reading.value is None and "needs 10" in reading.detail


# regime_break_threshold -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift,expected", [(0, 0.0), (10, 0.5), (100, 1.0)])
def test_regime_break_ks_statistic_by_hand(shift, expected):
    h = np.arange(20.0)  # whole numbers: the shifted copies tie exactly
    reading = read(make_stream(r=h + shift, h=h), "regime_break_threshold")
    assert reading.value == pytest.approx(expected)
    assert reading.tripped == (expected > 0.3)


def test_regime_break_boundary_and_window():
    rng = np.random.default_rng(0)
    h = rng.normal(0, 0.01, 60)
    r = np.concatenate([np.full(15, 1.0), rng.normal(0.01, 0.01, 30)])  # the first 15 days fall outside 30
    reading = read(make_stream(r=r, h=h), "regime_break_threshold")
    assert reading.value == pytest.approx(stats.ks_2samp(r[-30:], h).statistic, abs=1e-12)
    assert_boundary(make_stream(r=r, h=h), "regime_break_threshold")


def test_regime_break_needs_20_days_of_each():
    h = np.arange(20) * 0.001
    assert read(make_stream(r=h[:19] + 1, h=h), "regime_break_threshold").value is None
    reading = read(make_stream(r=h + 1, h=h[:19]), "regime_break_threshold")
    assert reading.value is None and not reading.tripped and "needs 20" in reading.detail


samples = st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1, 1)), min_size=1, max_size=40)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's p-value method fallback; the statistic is exact
@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_ks_statistic_equals_scipy(a, b):
    assert ks_statistic(np.array(a), np.array(b)) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


# max_correlation_spike --------------------------------------------------------------------------------------


def uncorrelated_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two zero-mean series with correlation exactly 0 over any multiple of 4 days."""
    x = np.tile([1.0, -1.0, 1.0, -1.0], n // 4) * 0.01
    y = np.tile([1.0, 1.0, -1.0, -1.0], n // 4) * 0.01
    return x, y


def pool_markets(base_days: int) -> np.ndarray:
    x, y = uncorrelated_pair(base_days)
    recent = alternating(14) * np.arange(1, 15)
    return np.stack([np.concatenate([x, recent]), np.concatenate([y, 2 * recent])])


def test_pool_correlation_spike_trailing_14_vs_the_days_before():
    m = pool_markets(32)
    reading = read(make_stream(r=[0.0], m=m), "max_correlation_spike")
    assert reading.value == pytest.approx(1.0)  # correlation 0 -> 1
    assert reading.tripped and reading.action == "pause"
    assert_boundary(make_stream(r=[0.0], m=m), "max_correlation_spike")


def test_pool_correlation_baseline_is_the_90_days_before_the_trailing_14():
    rng = np.random.default_rng(1)
    m = rng.normal(0, 0.01, (3, 150))
    corr = [[np.corrcoef(m[i, w], m[j, w])[0, 1] for w in (slice(-14, None), slice(-104, -14))]
            for i, j in ((0, 1), (0, 2), (1, 2))]
    expected = max(now - then for now, then in corr)
    assert read(make_stream(r=[0.0], m=m), "max_correlation_spike").value == pytest.approx(expected, abs=1e-12)


def test_pool_correlation_needs_two_markets_and_44_days_and_skips_flat_pairs():
    assert read(make_stream(r=[0.0], m=pool_markets(32)[:1]), "max_correlation_spike").value is None
    short = pool_markets(32)[:, 3:]  # 29 baseline days
    assert read(make_stream(r=[0.0], m=short), "max_correlation_spike").value is None
    with_flat = np.vstack([pool_markets(32), np.zeros(46)])
    assert read(make_stream(r=[0.0], m=with_flat), "max_correlation_spike").value == pytest.approx(1.0)
    flat_pair = np.vstack([pool_markets(32)[:1], np.zeros(46)])
    assert read(make_stream(r=[0.0], m=flat_pair), "max_correlation_spike").value is None


def strategy_stream(forward: int = 14, holdout: int = 20, history: int | None = None) -> ForwardStream:
    """Hold-out uncorrelated with its market (corr 0), forward days moving with it (corr 1)."""
    h, m_hold = uncorrelated_pair(holdout)
    fwd_market = alternating(forward) * np.arange(1, forward + 1)
    market = np.concatenate([m_hold, fwd_market])
    if history is not None:
        market = market[-(forward + history):]
    return make_stream("strategy", r=3 * fwd_market, m=[market], h=h)


def test_strategy_correlation_spike_forward_vs_hold_out():
    reading = read(strategy_stream(), "max_correlation_spike")
    assert reading.value == pytest.approx(1.0) and reading.tripped
    assert_boundary(strategy_stream(), "max_correlation_spike")


def test_strategy_correlation_needs_14_forward_and_hold_out_days():
    assert read(strategy_stream(forward=13), "max_correlation_spike").value is None
    reading = read(strategy_stream(history=13), "max_correlation_spike")  # market history covers 13 hold-out days
    assert reading.value is None and "hold-out" in reading.detail
    market = np.concatenate([alternating(20), np.ones(14)])
    flat = make_stream("strategy", r=np.zeros(14), m=[market], h=alternating(20))  # flat strategy: undefined
    assert read(flat, "max_correlation_spike").value is None


# max_adverse_selection --------------------------------------------------------------------------------------


def pool_with_days_below_hodl(below: int, days: int = 20, extra_below: int = 0) -> ForwardStream:
    r = np.zeros(extra_below + days)
    b = np.zeros_like(r)
    b[:extra_below] = 0.01  # older than the trailing 20: ignored
    b[extra_below: extra_below + below] = 0.01
    return make_stream(r=r, b=b)


def test_pool_adverse_selection_share_of_days_below_hodl():
    reading = read(pool_with_days_below_hodl(13), "max_adverse_selection")
    assert reading.value == 0.65 and reading.tripped and "13 of the last 20" in reading.detail
    at_limit = read(pool_with_days_below_hodl(12), "max_adverse_selection")
    assert at_limit.value == 0.6 and not at_limit.tripped  # default limit 0.6: not above
    assert read(pool_with_days_below_hodl(12, extra_below=5), "max_adverse_selection").value == 0.6
    assert read(pool_with_days_below_hodl(9, days=10), "max_adverse_selection").value == 0.9
    assert read(pool_with_days_below_hodl(9, days=9), "max_adverse_selection").value is None


def test_strategy_adverse_selection_share_of_losing_trades():
    trades = [-0.01] * 7 + [0.01] * 3
    assert read(make_stream("strategy", r=[0.0], trades=trades), "max_adverse_selection").tripped
    reading = read(make_stream("strategy", r=[0.0], trades=trades[1:] + [0.02]), "max_adverse_selection")
    assert reading.value == 0.6 and not reading.tripped
    short = read(make_stream("strategy", r=[0.0], trades=trades[:9]), "max_adverse_selection")
    assert short.value is None and "needs 10 closed trades, has 9" in short.detail


# latency and tripped() --------------------------------------------------------------------------------------


def test_latency_is_live_only_and_never_trips():
    reading = read(make_stream(r=[math.log(0.5)]), "latency_threshold_ms", limit=0)
    assert reading.value is None and not reading.tripped and reading.action == "live_only"
    assert reading.limit == 0 and "live execution" in reading.detail


def test_tripped_filters_by_action():
    s = make_stream(r=[-0.01] * 4 + [math.log(0.9)])
    readings = read_breakers(s, limits(consecutive_losses_limit=5))
    assert [r.name for r in tripped(readings, "retire")] == ["max_daily_loss", "consecutive_losses_limit"]
    assert tripped(readings, "live_only") == []
    with pytest.raises(ValueError, match="action"):
        tripped(readings, "stop")  # type: ignore[arg-type]


# validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,stream", [
    ("benchmark_log_returns", make_stream(r=[0.0, 0.0], b=[0.0])),
    ("market_log_returns", make_stream(r=[0.0, 0.0], m=[[0.0]])),
    ("market_log_returns", make_stream("strategy", r=[0.0], m=[[0.0], [0.0]])),
    ("trade_returns", make_stream(r=[0.0], trades=[0.1])),
    ("log_returns", make_stream(r=[0.0, math.nan], m=np.zeros((1, 2)))),
    ("holdout_log_returns", make_stream(r=[0.0], h=[math.inf])),
    ("market_log_returns", make_stream(r=[0.0], m=[[math.nan]])),
    ("kind", ForwardStream("vault", np.zeros(1), np.zeros(1), np.zeros((1, 1)), np.zeros(0), np.zeros(0))),
])
def test_malformed_streams_are_refused_by_field(field, stream):
    with pytest.raises(ValueError, match=f"^{field}"):
        read_breakers(stream, limits())


def test_limits_must_be_complete_and_valid():
    partial = {k: v for k, v in DEFAULT_CIRCUIT_BREAKERS.items() if k != "max_daily_loss"}
    with pytest.raises(ValueError, match="missing max_daily_loss.*max_daily_loss=0.02"):
        read_breakers(make_stream(r=[0.0]), partial)
    with pytest.raises(ValueError, match="regime_break_threshold"):
        read_breakers(make_stream(r=[0.0]), limits(regime_break_threshold=math.nan))


def test_check_limits_messages():
    check_limits(DEFAULT_CIRCUIT_BREAKERS)
    check_limits({"max_daily_loss": 0.05})  # overrides may be partial
    with pytest.raises(ValueError, match=r"^max_daily_loss: -0\.1 must be a finite number >= 0$"):
        check_limits({"max_daily_loss": -0.1})
    with pytest.raises(ValueError, match="^max_correlation_spike: inf must be"):
        check_limits({"max_correlation_spike": math.inf})
    with pytest.raises(ValueError, match="^latency_threshold_ms: '500' must be"):
        check_limits({"latency_threshold_ms": "500"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"unknown circuit breaker 'max_loss' \(did you mean 'max_daily_loss'\?\); "
                       r"valid names: max_daily_loss, ") as err:
        check_limits({"max_loss": 0.1})
    assert all(name in str(err.value) for name in DEFAULT_CIRCUIT_BREAKERS)
