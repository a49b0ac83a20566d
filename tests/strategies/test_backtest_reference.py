"""The JAX backtester of the liquidity-sweep strategy against a plain-Python reference, trade for trade.

The reference (`reference_liquidity_sweep`) is written from the docstring rules alone. Besides the
comparison: no look-ahead (perturbing bars after t changes nothing decided up to t), accounting
properties, and parameter validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_liquidity_sweep import reference_backtest, reference_signals

import quant_core  # noqa: F401  (switches JAX to float64 before anything else)
from quant_core.strategies.backtest import Bars, Costs, backtest, prepare
from quant_core.strategies.liquidity_sweep import LIQUIDITY_SWEEP

# one shape everywhere (JAX compiles per shape and per Costs): warm-up + N_DAYS whole days, B combinations
BARS_PER_DAY = 24
N_DAYS = 40
WARMUP = 150  # < 199: the SMA-200 trend filter is undefined over the window's first bars
T_WINDOW = N_DAYS * BARS_PER_DAY
N_BARS = WARMUP + T_WINDOW
B = 16
COSTS = Costs(fee=0.0006, slippage=0.0002, position_fraction=0.5, initial_capital=10_000.0)
SEEDS = (0, 1, 2, 3)
REL = 1e-9
HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000 - WARMUP * HOUR_MS  # the window starts 2024-01-01 00:00 UTC


def ohlcv(rng: np.random.Generator, n: int, start_price: float = 100.0) -> dict[str, np.ndarray]:
    """Hourly-looking candles: a log random walk close; the open near the previous close, sometimes gapped
    (and often gapped right after a sweep bar, so gaps through stops and skipped entries happen); volume
    spikes of x3-x6 on bars that also wick far to one side, so sweeps actually trigger."""
    close = start_price * np.exp(np.cumsum(rng.normal(0.0, 0.006, n)))
    prev = np.concatenate([[start_price], close[:-1]])
    open_ = prev * (1.0 + rng.normal(0.0, 0.0005, n))
    spike = rng.random(n) < 0.08
    gap = rng.random(n) < 0.03
    open_[gap] = prev[gap] * (1.0 + rng.choice([-1.0, 1.0], gap.sum()) * rng.uniform(0.01, 0.03, gap.sum()))
    after = np.concatenate([[False], spike[:-1]]) & (rng.random(n) < 0.3)
    open_[after] = prev[after] * (1.0 + rng.choice([-1.0, 1.0], after.sum()) * rng.uniform(0.02, 0.06, after.sum()))
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.002, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.002, n))
    up = rng.random(n) < 0.5
    wick = rng.uniform(0.004, 0.015, n)
    high = np.where(spike & up, high * (1.0 + wick), high)
    low = np.where(spike & ~up, low * (1.0 - wick), low)
    volume = rng.lognormal(np.log(1000.0), 0.3, n)
    volume[spike] *= rng.uniform(3.0, 6.0, spike.sum())
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def make_bars(seed: int, **override: np.ndarray) -> Bars:
    data = ohlcv(np.random.default_rng(seed), N_BARS)
    data.update(override)
    return Bars(timestamp=START_MS + HOUR_MS * np.arange(N_BARS, dtype=np.int64), window_start=WARMUP,
                bars_per_day=BARS_PER_DAY, **data)


def random_params(rng: np.random.Generator, b: int = B) -> dict[str, np.ndarray]:
    """b combinations drawn inside the schema (lookback kept short so that swings break often)."""
    return {
        "lookback": rng.integers(10, 61, b).astype(float),
        "pierce_depth": np.exp(rng.uniform(math.log(0.0005), math.log(0.005), b)),
        "volume_spike_threshold": rng.uniform(1.5, 4.0, b),
        "volume_period": rng.integers(5, 51, b).astype(float),
        "stop_atr_mult": rng.uniform(0.5, 2.0, b),
        "rr_ratio": rng.uniform(1.0, 4.0, b),
        "max_hold_bars": rng.integers(6, 97, b).astype(float),
        "atr_period": rng.choice([14.0, 21.0], b),
        "sma_period": rng.choice([0.0, 50.0, 100.0, 200.0], b),
    }


def combo(params: dict[str, np.ndarray], j: int) -> dict[str, float]:
    return {k: float(v[j]) for k, v in params.items()}


def run_reference(bars: Bars, p: dict[str, float], costs: Costs = COSTS, stats: dict | None = None):
    return reference_backtest(bars.open, bars.high, bars.low, bars.close, bars.volume, bars.window_start, p,
                              costs.fee, costs.slippage, costs.position_fraction, costs.initial_capital,
                              timestamp=bars.timestamp, stats=stats)


FLOAT_KEYS = ("entry_price", "exit_price", "return", "pnl")
EXACT_KEYS = ("entry_bar", "exit_bar", "entry_time", "exit_time", "side", "exit_reason")


def assert_same_trades(got: list[dict], want: list[dict], label: str) -> None:
    assert len(got) == len(want), f"{label}: {len(got)} trades, the reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(w), f"{label} trade {i}: keys {sorted(g)} != {sorted(w)}"
        assert {k: g[k] for k in EXACT_KEYS} == {k: w[k] for k in EXACT_KEYS}, f"{label} trade {i}: {g} != {w}"
        for k in FLOAT_KEYS:
            assert g[k] == pytest.approx(w[k], rel=REL, abs=1e-12), f"{label} trade {i} {k}: {g} != {w}"


def reference_metrics(trades: list[dict], marks: list[float], final: float, capital: float) -> dict[str, float]:
    """The trade metrics as read off the reference's trades and marks."""
    n = len(trades)
    rs = [t["return"] for t in trades]
    wins = [t for t in trades if t["return"] > 0]
    losses = [t for t in trades if not t["return"] > 0]
    peak, max_dd = capital, 0.0
    for m in marks:
        peak = max(peak, m)
        max_dd = max(max_dd, 1.0 - m / peak)
    nan = math.nan
    out = {
        "n_trades": float(n),
        "net_profit": final - capital,
        "win_rate": len(wins) / n if n else nan,
        "expectancy": sum(rs) / n if n else nan,
        "avg_win": sum(t["return"] for t in wins) / len(wins) if wins else nan,
        "avg_loss": sum(t["return"] for t in losses) / len(losses) if losses else nan,
        "exposure": sum(t["exit_bar"] - t["entry_bar"] + 1 for t in trades) / len(marks),
        "max_drawdown": -max_dd,
    }
    if losses and sum(t["pnl"] for t in losses) < 0:
        out["profit_factor"] = sum(t["pnl"] for t in wins) / -sum(t["pnl"] for t in losses)
    return out


@pytest.fixture(scope="module")
def runs():
    """Per seed: the bars, B random combinations, the JAX result and each combination's reference run."""
    out = []
    for seed in SEEDS:
        bars = make_bars(seed)
        params = random_params(np.random.default_rng(1000 + seed))
        LIQUIDITY_SWEEP.batch(params)  # inside the schema
        res = backtest(bars, params, COSTS, trades=True)
        refs = []
        for j in range(B):
            stats: dict = {}
            trades, marks, final = run_reference(bars, combo(params, j), stats=stats)
            refs.append({"trades": trades, "marks": marks, "final": final, "stats": stats})
        out.append({"seed": seed, "bars": bars, "params": params, "res": res, "refs": refs})
    return out


@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_trades_match_reference(runs, i):
    run = runs[i]
    res = run["res"]
    assert len(res.trades) == B
    for j in range(B):
        assert_same_trades(res.trades[j], run["refs"][j]["trades"], f"seed {run['seed']} combination {j}")


@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_equity_matches_reference(runs, i):
    run = runs[i]
    res = run["res"]
    assert res.bar_equity.shape == (B, T_WINDOW)
    assert res.daily_equity.shape == (B, N_DAYS + 1)
    np.testing.assert_array_equal(res.bar_timestamps, run["bars"].timestamp[WARMUP:])
    for j in range(B):
        ref = run["refs"][j]
        np.testing.assert_allclose(res.bar_equity[j], ref["marks"], rtol=REL, atol=0)
        daily = [COSTS.initial_capital] + ref["marks"][BARS_PER_DAY - 1::BARS_PER_DAY]
        np.testing.assert_allclose(res.daily_equity[j], daily, rtol=REL, atol=0)
        assert ref["marks"][-1] == pytest.approx(ref["final"], rel=1e-15)  # everything exits at the last close


@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_metrics_match_reference_trades(runs, i):
    run = runs[i]
    res = run["res"]
    for j in range(B):
        ref = run["refs"][j]
        want = reference_metrics(ref["trades"], ref["marks"], ref["final"], COSTS.initial_capital)
        for name, value in want.items():
            got = float(res.metrics[name][j])
            assert got == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True), \
                f"seed {run['seed']} combination {j} {name}: {got} != reference {value}"


@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_signals_match_reference(runs, i):
    """The signal table behind the trades agrees with the reference's reading of the signal rules."""
    run = runs[i]
    bars, params = run["bars"], run["params"]
    prep = prepare(bars, params)
    signals, lanes = np.asarray(prep.entries), prep.lanes
    for j in range(B):
        want, _ = reference_signals(bars.high, bars.low, bars.close, bars.volume, WARMUP, combo(params, j))
        got = signals[:, lanes["set"][j]]
        bad = np.flatnonzero(got != np.asarray(want))
        assert bad.size == 0, f"seed {run['seed']} combination {j}: signals differ at window bars {bad[:10]}"


def test_runs_exercise_every_rule(runs):
    """The comparison is not vacuous: many trades, both sides, every exit reason, gaps at the open."""
    reasons, sides = set(), set()
    n_trades = 0
    stats: dict[str, int] = {}
    for run in runs:
        for ref in run["refs"]:
            n_trades += len(ref["trades"])
            reasons |= {t["exit_reason"] for t in ref["trades"]}
            sides |= {t["side"] for t in ref["trades"]}
            for k, v in ref["stats"].items():
                stats[k] = stats.get(k, 0) + int(v)
    assert n_trades > 100
    assert reasons == {"stop", "target", "time", "end"}
    assert sides == {"long", "short"}
    assert stats["stop_at_open"] > 0, "no stop was gapped through (fill at the open)"
    assert stats["target_at_open"] > 0, "no target was gapped through (fill at the open)"
    assert stats["skipped_gap"] > 0, "no entry was skipped for an open beyond its stop"
    assert stats["signals_while_in_position"] > 0, "no signal was ignored for an open position"
    n_empty = sum(not ref["trades"] for run in runs for ref in run["refs"])
    assert n_empty < len(SEEDS) * B // 2


# ---------------------------------------------------------------------------------------------- look-ahead


def perturb_after(bars: Bars, t_abs: int, seed: int) -> Bars:
    """The same bars up to and including t_abs, fresh random (valid) candles after it."""
    rng = np.random.default_rng(seed)
    n = N_BARS - t_abs - 1
    fresh = ohlcv(rng, n, start_price=float(bars.close[t_abs]) * rng.uniform(0.9, 1.1))
    fresh["volume"] *= rng.uniform(0.2, 5.0)
    data = {k: np.concatenate([getattr(bars, k)[: t_abs + 1], fresh[k]]) for k in fresh}
    assert np.all(data["high"] >= np.maximum(data["open"], data["close"]))
    assert np.all(data["low"] <= np.minimum(data["open"], data["close"]))
    return Bars(timestamp=bars.timestamp, window_start=bars.window_start, bars_per_day=bars.bars_per_day, **data)


@pytest.mark.parametrize(("seed", "t"), [(0, 300), (1, 611), (2, 0), (3, T_WINDOW - 2)])
def test_no_look_ahead(seed, t):
    """Perturbing every bar after window bar t changes no signal, mark or closed trade up to t."""
    bars = make_bars(seed)
    params = random_params(np.random.default_rng(2000 + seed))
    other = perturb_after(bars, WARMUP + t, seed=3000 + seed)
    a = backtest(bars, params, COSTS, trades=True)
    b = backtest(other, params, COSTS, trades=True)

    _, sig_a, atr_a, lanes_a, *_ = prepare(bars, params)
    _, sig_b, atr_b, lanes_b, *_ = prepare(other, params)
    np.testing.assert_array_equal(lanes_a["set"], lanes_b["set"])
    np.testing.assert_array_equal(np.asarray(sig_a)[: t + 1], np.asarray(sig_b)[: t + 1])
    np.testing.assert_array_equal(atr_a[: t + 1], atr_b[: t + 1])

    np.testing.assert_array_equal(a.bar_equity[:, : t + 1], b.bar_equity[:, : t + 1])
    for j in range(B):
        closed_a = [x for x in a.trades[j] if x["exit_bar"] <= t]
        closed_b = [x for x in b.trades[j] if x["exit_bar"] <= t]
        assert closed_a == closed_b
        entered_a = [(x["entry_bar"], x["side"], x["entry_price"]) for x in a.trades[j] if x["entry_bar"] <= t]
        entered_b = [(x["entry_bar"], x["side"], x["entry_price"]) for x in b.trades[j] if x["entry_bar"] <= t]
        assert entered_a == entered_b
    # the reference has no look-ahead either
    for j in (0, 1):
        ra, ma, _ = run_reference(bars, combo(params, j))
        rb, mb, _ = run_reference(other, combo(params, j))
        assert ma[: t + 1] == mb[: t + 1]
        assert [x for x in ra if x["exit_bar"] <= t] == [x for x in rb if x["exit_bar"] <= t]
    # the perturbation did reach the backtest after t
    if t < T_WINDOW - 2:
        assert not np.array_equal(a.bar_equity, b.bar_equity)
        assert not np.array_equal(np.asarray(sig_a)[t + 1:], np.asarray(sig_b)[t + 1:])


# ---------------------------------------------------------------------------------------------- properties


def check_accounting(res, costs: Costs) -> None:
    cap = costs.initial_capital
    m = res.metrics
    for j in range(B):
        trades = res.trades[j]
        n = len(trades)
        assert m["n_trades"][j] == n
        final = cap + m["net_profit"][j]
        assert sum(t["pnl"] for t in trades) == pytest.approx(final - cap, rel=1e-9, abs=1e-6)
        assert res.bar_equity[j, -1] == pytest.approx(final, rel=1e-12)
        assert res.daily_equity[j, -1] == pytest.approx(final, rel=1e-12)
        assert 0.0 <= m["exposure"][j] <= 1.0
        assert m["max_drawdown"][j] <= 0.0
        if n:
            assert 0.0 <= m["win_rate"][j] <= 1.0
        else:
            assert m["net_profit"][j] == 0.0
            np.testing.assert_array_equal(res.daily_equity[j], cap)
            np.testing.assert_array_equal(res.bar_equity[j], cap)
            assert m["exposure"][j] == 0.0
        # trades never overlap and follow each other in time
        for prev, nxt in zip(trades, trades[1:], strict=False):
            assert nxt["entry_bar"] > prev["exit_bar"]
        for t in trades:
            assert t["entry_bar"] <= t["exit_bar"]
            if t["exit_reason"] == "end":
                assert t["exit_bar"] == T_WINDOW - 1
            if t["exit_reason"] == "time":
                assert t["exit_bar"] - t["entry_bar"] + 1 >= 6
            if costs.fee == 0.0 and costs.slippage == 0.0:
                side = 1.0 if t["side"] == "long" else -1.0
                want = side * (t["exit_price"] - t["entry_price"]) / t["entry_price"]
                assert t["return"] == pytest.approx(want, rel=1e-12, abs=1e-15)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), fraction=st.sampled_from([0.25, 1.0]))
def test_frictionless_accounting(seed, fraction):
    """Without fees and slippage: returns are pure price moves and the pnl sums to the equity change."""
    costs = Costs(fee=0.0, slippage=0.0, position_fraction=fraction, initial_capital=5_000.0)
    bars = make_bars(seed)
    res = backtest(bars, random_params(np.random.default_rng(seed)), costs, trades=True)
    check_accounting(res, costs)
    total = sum(len(t) for t in res.trades)
    final = costs.initial_capital + res.metrics["net_profit"]
    assert total == 0 or np.all(final > 0)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_equity_stays_positive_with_costs(seed):
    """With fees, slippage and the whole equity at stake, the marks stay positive on these markets."""
    costs = Costs(fee=0.001, slippage=0.0005, position_fraction=1.0, initial_capital=10_000.0)
    res = backtest(make_bars(seed), random_params(np.random.default_rng(seed)), costs, trades=True)
    check_accounting(res, costs)
    assert np.all(res.bar_equity > 0)
    assert np.all(res.daily_equity > 0)


def test_accounting_on_the_compared_runs(runs):
    for run in runs:
        check_accounting(run["res"], COSTS)


def test_no_volume_spike_no_trades():
    """Constant volume never reaches 1.5x its SMA: every combination stays flat at the initial capital."""
    bars = make_bars(7, volume=np.full(N_BARS, 1234.5))
    params = random_params(np.random.default_rng(7))
    res = backtest(bars, params, COSTS, trades=True)
    assert all(t == [] for t in res.trades)
    check_accounting(res, COSTS)
    np.testing.assert_array_equal(res.metrics["n_trades"], 0.0)
    np.testing.assert_array_equal(res.metrics["net_profit"], 0.0)
    np.testing.assert_array_equal(res.daily_equity, COSTS.initial_capital)
    for j in range(3):
        trades, marks, final = run_reference(bars, combo(params, j))
        assert trades == [] and final == COSTS.initial_capital and set(marks) == {COSTS.initial_capital}


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("name", "value"), [
    ("lookback", 5), ("lookback", 101), ("lookback", 20.5), ("pierce_depth", 0.01), ("volume_spike_threshold", 1.0),
    ("volume_period", 4), ("stop_atr_mult", 2.5), ("rr_ratio", 0.5), ("max_hold_bars", 97), ("atr_period", 15),
    ("sma_period", 30), ("rr_ratio", math.nan),
])
def test_rejects_params_outside_the_schema(name, value):
    bars = make_bars(0)
    params = random_params(np.random.default_rng(0), 2)
    params[name] = np.array([params[name][0], value])
    with pytest.raises(ValueError, match=name):
        backtest(bars, params, COSTS)


def test_rejects_unknown_param():
    with pytest.raises(KeyError, match="lookback"):
        backtest(make_bars(0), {"look_back": np.array([20.0])}, COSTS)


# ---------------------------------------------------------------------------------------------- planted sweeps

# flat 100 market (high 100.5, low 99.5, volume 1000: every true range is exactly 1, so ATR = 1) with planted
# events; with lookback 10, volume_period 5 and threshold 2.5 a sweep bar of volume 4000 meets the volume test
# with equality (4000 = 2.5 x (4 x 1000 + 4000) / 5); the long stop is 99 - 1 = 98, target 100 + 2 x 2 = 104;
# the short stop 101 + 1 = 102, target 96. Events sit 30 bars apart so that no indicator window spans two.
PLANTED_PARAMS = {"lookback": 10.0, "pierce_depth": 0.001, "volume_spike_threshold": 2.5, "volume_period": 5.0,
                  "stop_atr_mult": 1.0, "rr_ratio": 2.0, "max_hold_bars": 24.0, "atr_period": 14.0, "sma_period": 0.0}
FRICTIONLESS = Costs(fee=0.0, slippage=0.0, position_fraction=0.25, initial_capital=5_000.0)
LONG_SWEEP = (100.0, 100.0, 99.0, 100.0, 4000.0)  # o, h, l, c, v
SHORT_SWEEP = (100.0, 101.0, 100.0, 100.0, 4000.0)


def planted_bars() -> tuple[Bars, list[tuple]]:
    """The bars and the trades (entry_bar, exit_bar, side, entry_price, exit_price, reason) the rules imply
    without costs."""
    data = {"open": np.full(N_BARS, 100.0), "high": np.full(N_BARS, 100.5), "low": np.full(N_BARS, 99.5),
            "close": np.full(N_BARS, 100.0), "volume": np.full(N_BARS, 1000.0)}

    def put(k: int, ohlcv_: tuple) -> None:  # k: window bar
        for name, value in zip(("open", "high", "low", "close", "volume"), ohlcv_, strict=True):
            data[name][WARMUP + k] = value

    put(-1, LONG_SWEEP)  # a sweep on the last warm-up bar is not traded
    expected = []
    events = [
        ("long stop touched", LONG_SWEEP, {3: (100.0, 100.5, 98.0, 100.0, 1000.0)}, [(1, 3, "long", 100, 98, "stop")]),
        ("long target touched", LONG_SWEEP, {3: (100.0, 104.0, 99.5, 100.0, 1000.0)},
         [(1, 3, "long", 100, 104, "target")]),
        ("both in one bar: the stop", LONG_SWEEP, {3: (100.0, 104.0, 98.0, 100.0, 1000.0)},
         [(1, 3, "long", 100, 98, "stop")]),
        ("gap through the stop", LONG_SWEEP, {3: (97.0, 97.8, 96.9, 97.5, 1000.0)}, [(1, 3, "long", 100, 97, "stop")]),
        ("gap through the target", LONG_SWEEP, {3: (105.0, 105.5, 104.5, 105.0, 1000.0)},
         [(1, 3, "long", 100, 105, "target")]),
        ("open at the stop: skipped", LONG_SWEEP, {1: (98.0, 100.5, 97.9, 100.0, 1000.0)}, []),
        ("open beyond the stop: skipped", LONG_SWEEP, {1: (97.9, 100.5, 97.8, 100.0, 1000.0)}, []),
        ("time exit", LONG_SWEEP, {}, [(1, 24, "long", 100, 100, "time")]),
        ("short stop touched", SHORT_SWEEP, {3: (100.0, 102.0, 99.5, 100.0, 1000.0)},
         [(1, 3, "short", 100, 102, "stop")]),
        ("short target touched", SHORT_SWEEP, {3: (100.0, 100.5, 96.0, 100.0, 1000.0)},
         [(1, 3, "short", 100, 96, "target")]),
        ("short gap through the stop", SHORT_SWEEP, {3: (103.0, 103.5, 102.5, 103.0, 1000.0)},
         [(1, 3, "short", 100, 103, "stop")]),
        ("both ways: skipped", (100.0, 101.0, 99.0, 100.0, 4000.0), {}, []),
        ("volume just short of the spike", (100.0, 100.0, 99.0, 100.0, 3999.0), {}, []),
        # the stop bar is itself a sweep (8000 >= 2.5 x (1000 + 4000 + 1000 + 1000 + 8000) / 5): out and back in
        ("exit and re-enter on one bar", LONG_SWEEP, {3: (100.0, 100.0, 98.0, 100.0, 8000.0)},
         [(1, 3, "long", 100, 98, "stop"), (4, 27, "long", 100, 100, "time")]),
        ("a sweep while in a position is ignored", LONG_SWEEP, {5: (100.0, 100.0, 98.5, 100.0, 4000.0)},
         [(1, 24, "long", 100, 100, "time")]),
    ]
    for i, (_, sweep, later, trades) in enumerate(events):
        s = 20 + 30 * i
        put(s, sweep)
        for dk, bar in later.items():
            put(s + dk, bar)
        expected += [(s + a, s + b, side, float(e), float(x), why) for a, b, side, e, x, why in trades]
    s = T_WINDOW - 5  # open at the window's last bar
    put(s, LONG_SWEEP)
    expected.append((s + 1, T_WINDOW - 1, "long", 100.0, 100.0, "end"))
    put(T_WINDOW - 1, LONG_SWEEP)  # a signal on the last bar is never taken
    bars = Bars(timestamp=START_MS + HOUR_MS * np.arange(N_BARS, dtype=np.int64), window_start=WARMUP,
                bars_per_day=BARS_PER_DAY, **data)
    return bars, expected


def _summary(trades: list[dict]) -> list[tuple]:
    return [(t["entry_bar"], t["exit_bar"], t["side"], t["entry_price"], t["exit_price"], t["exit_reason"])
            for t in trades]


def test_planted_sweeps_follow_the_rules():
    """Hand-derived trades on a flat market with planted sweeps: ties (stop/target touched exactly, an open
    exactly at the stop, volume exactly at the threshold), gaps, both-way bars, time/end exits, re-entry."""
    bars, expected = planted_bars()
    params = {k: np.full(B, v) for k, v in PLANTED_PARAMS.items()}
    res = backtest(bars, params, FRICTIONLESS, trades=True)
    ref, marks, _ = run_reference(bars, PLANTED_PARAMS, FRICTIONLESS)
    assert _summary(ref) == expected
    for j in range(B):
        assert _summary(res.trades[j]) == expected
    assert_same_trades(res.trades[0], ref, "planted, frictionless")
    np.testing.assert_allclose(res.bar_equity[0], marks, rtol=REL, atol=0)

    # with costs the JAX backtester still agrees with the reference trade for trade
    res = backtest(bars, params, COSTS, trades=True)
    ref, marks, _ = run_reference(bars, PLANTED_PARAMS, COSTS)
    assert_same_trades(res.trades[0], ref, "planted, with costs")
    np.testing.assert_allclose(res.bar_equity[0], marks, rtol=REL, atol=0)


def test_profit_factor_of_only_winners_is_positive(runs):
    """Regression: gross_loss starts at +0.0, and gross_win / -0.0 once gave -inf for all-winning trades."""
    seen = 0
    for run in runs:
        for j in range(B):
            trades = run["res"].trades[j]
            if trades and all(t["return"] > 0 for t in trades):
                seen += 1
                assert run["res"].metrics["profit_factor"][j] == np.inf
    assert seen
