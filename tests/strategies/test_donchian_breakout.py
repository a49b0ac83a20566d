"""The Donchian breakout in JAX against a plain-Python reference, trade for trade.

The reference (`reference_donchian_breakout`) is written from the docstring rules alone. Besides the
comparison: no look-ahead, every exit reason and both sides exercised, the exit_period < entry_period rule
and the schema refused, a grid batch equal to each combination run alone, and the registry universes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_donchian_breakout import reference_backtest, reference_signals

import quant_core  # noqa: F401  (switches JAX to float64 before anything else)
from quant_core.strategies import get_strategy
from quant_core.strategies.backtest import Bars, Costs, backtest, prepare
from quant_core.strategies.donchian_breakout import DONCHIAN_BREAKOUT

NAME = "donchian_breakout"
BARS_PER_DAY = 24
N_DAYS = 30
WARMUP = 150  # < 199: the SMA-200 trend filter is undefined over the window's first bars
T_WINDOW = N_DAYS * BARS_PER_DAY
N_BARS = WARMUP + T_WINDOW
B = 16
COSTS = Costs(fee=0.0006, slippage=0.0002, position_fraction=0.5, initial_capital=10_000.0)
SEEDS = (0, 1, 2, 3)
REL = 1e-9
HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000 - WARMUP * HOUR_MS
FLOAT_KEYS = ("entry_price", "exit_price", "return", "pnl")
EXACT_KEYS = ("entry_bar", "exit_bar", "entry_time", "exit_time", "side", "exit_reason")


def ohlcv(rng: np.random.Generator, n: int, start_price: float = 100.0) -> dict[str, np.ndarray]:
    """Hourly-looking candles with regimes: the drift switches every few dozen bars so that channels break
    both ways and trends last long enough for time exits; opens are sometimes gapped (stops filled at the
    open)."""
    regime = np.repeat(rng.choice([-1.0, 0.0, 1.0], n // 40 + 1), 40)[:n]
    close = start_price * np.exp(np.cumsum(regime * 0.002 + rng.normal(0.0, 0.006, n)))
    prev = np.concatenate([[start_price], close[:-1]])
    open_ = prev * (1.0 + rng.normal(0.0, 0.0005, n))
    gap = rng.random(n) < 0.04
    open_[gap] = prev[gap] * (1.0 + rng.choice([-1.0, 1.0], gap.sum()) * rng.uniform(0.01, 0.04, gap.sum()))
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.002, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.002, n))
    volume = rng.lognormal(np.log(1000.0), 0.3, n)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def make_bars(seed: int) -> Bars:
    data = ohlcv(np.random.default_rng(seed), N_BARS)
    return Bars(timestamp=START_MS + HOUR_MS * np.arange(N_BARS, dtype=np.int64), window_start=WARMUP,
                bars_per_day=BARS_PER_DAY, **data)


def random_params(rng: np.random.Generator, b: int = B) -> dict[str, np.ndarray]:
    """b combinations inside the schema with exit_period < entry_period (short holds, so time exits happen)."""
    entry = rng.integers(10, 61, b)
    return {
        "entry_period": entry.astype(float),
        "exit_period": np.array([rng.integers(5, min(50, e - 1) + 1) for e in entry], dtype=float),
        "stop_atr_mult": rng.uniform(1.0, 5.0, b),
        "atr_period": rng.choice([14.0, 21.0], b),
        "sma_period": rng.choice([0.0, 50.0, 100.0, 200.0], b),
        "max_hold_bars": rng.integers(24, 80, b).astype(float),
        "allow_short": rng.choice([0.0, 1.0], b, p=[0.25, 0.75]),
    }


def combo(params: dict[str, np.ndarray], j: int) -> dict[str, float]:
    return {k: float(v[j]) for k, v in params.items()}


def run_reference(bars: Bars, p: dict[str, float], costs: Costs = COSTS, stats: dict | None = None):
    return reference_backtest(bars.open, bars.high, bars.low, bars.close, bars.window_start, p, costs.fee,
                              costs.slippage, costs.position_fraction, costs.initial_capital,
                              timestamp=bars.timestamp, stats=stats)


def assert_same_trades(got: list[dict], want: list[dict], label: str) -> None:
    assert len(got) == len(want), f"{label}: {len(got)} trades, the reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(w), f"{label} trade {i}: keys {sorted(g)} != {sorted(w)}"
        assert {k: g[k] for k in EXACT_KEYS} == {k: w[k] for k in EXACT_KEYS}, f"{label} trade {i}: {g} != {w}"
        for k in FLOAT_KEYS:
            assert g[k] == pytest.approx(w[k], rel=REL, abs=1e-12), f"{label} trade {i} {k}: {g} != {w}"


def compare(bars: Bars, params: dict[str, np.ndarray], costs: Costs, label: str) -> list[dict]:
    """Backtest the batch and each combination in the reference; assert trades, marks and daily equity agree.
    Returns the reference runs."""
    res = backtest(bars, params, costs, strategy=NAME, trades=True)
    refs = []
    for j in range(len(params["entry_period"])):
        stats: dict = {}
        trades, marks, final = run_reference(bars, combo(params, j), costs, stats)
        assert_same_trades(res.trades[j], trades, f"{label} combination {j}")
        np.testing.assert_allclose(res.bar_equity[j], marks, rtol=REL, atol=0)
        daily = [costs.initial_capital] + marks[BARS_PER_DAY - 1::BARS_PER_DAY]
        np.testing.assert_allclose(res.daily_equity[j], daily, rtol=REL, atol=0)
        assert res.metrics["n_trades"][j] == len(trades)
        assert res.metrics["net_profit"][j] == pytest.approx(final - costs.initial_capital, rel=1e-9, abs=1e-6)
        refs.append({"trades": trades, "marks": marks, "stats": stats})
    return refs


@pytest.fixture(scope="module")
def runs():
    out = []
    for seed in SEEDS:
        bars = make_bars(seed)
        params = random_params(np.random.default_rng(1000 + seed))
        out.append({"seed": seed, "bars": bars, "params": params,
                    "refs": compare(bars, params, COSTS, f"seed {seed}")})
    return out


def test_registered_automatically():
    assert get_strategy(NAME) is DONCHIAN_BREAKOUT


@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_signals_match_reference(runs, i):
    """Entry and exit tables agree with the reference's reading of the signal rules."""
    run = runs[i]
    bars, params = run["bars"], run["params"]
    prep = prepare(bars, params, NAME)
    entries, exits = np.asarray(prep.entries), np.asarray(prep.exits)
    assert prep.stop_anchor == "fill" and "rr_ratio" not in prep.lanes
    for j in range(B):
        want_entries, want_exits = reference_signals(bars.high, bars.low, bars.close, WARMUP, combo(params, j))
        s = prep.lanes["set"][j]
        bad = np.flatnonzero(entries[:, s] != np.asarray(want_entries))
        assert bad.size == 0, f"seed {run['seed']} combination {j}: entries differ at window bars {bad[:10]}"
        bad = np.flatnonzero(exits[:, s] != np.asarray(want_exits))
        assert bad.size == 0, f"seed {run['seed']} combination {j}: exits differ at window bars {bad[:10]}"


def test_runs_exercise_every_rule(runs):
    """The comparison is not vacuous: many trades, both sides, every exit reason, gaps, reversals."""
    trades = [t for run in runs for ref in run["refs"] for t in ref["trades"]]
    stats: dict[str, int] = {}
    for run in runs:
        for ref in run["refs"]:
            for k, v in ref["stats"].items():
                stats[k] = stats.get(k, 0) + int(v)
    assert len(trades) > 200
    assert {t["exit_reason"] for t in trades} == {"stop", "signal", "time", "end"}
    assert {t["side"] for t in trades} == {"long", "short"}
    for reason in ("stop", "signal", "time"):
        assert {t["side"] for t in trades if t["exit_reason"] == reason} == {"long", "short"}, reason
    assert stats["stop_at_open"] > 0, "no stop was gapped through (fill at the open)"
    assert stats["reversals"] > 0, "no exit signal was followed by an entry the other way"
    assert stats["signals_while_in_position"] > 0
    # longs only where allow_short is 0
    for run in runs:
        for j, ref in enumerate(run["refs"]):
            if run["params"]["allow_short"][j] == 0:
                assert all(t["side"] == "long" for t in ref["trades"])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), fee=st.sampled_from([0.0, 0.001]), slippage=st.sampled_from([0.0, 0.0005]),
       fraction=st.sampled_from([0.25, 1.0]))
def test_random_markets_and_costs_match_reference(seed, fee, slippage, fraction):
    costs = Costs(fee=fee, slippage=slippage, position_fraction=fraction, initial_capital=5_000.0)
    compare(make_bars(seed), random_params(np.random.default_rng(seed), 8), costs, f"seed {seed}")


# ---------------------------------------------------------------------------------------------- look-ahead


def perturb_after(bars: Bars, t_abs: int, seed: int) -> Bars:
    """The same bars up to and including t_abs, fresh random (valid) candles after it."""
    rng = np.random.default_rng(seed)
    fresh = ohlcv(rng, N_BARS - t_abs - 1, start_price=float(bars.close[t_abs]) * rng.uniform(0.9, 1.1))
    data = {k: np.concatenate([getattr(bars, k)[: t_abs + 1], fresh[k]]) for k in fresh}
    return Bars(timestamp=bars.timestamp, window_start=bars.window_start, bars_per_day=bars.bars_per_day, **data)


@pytest.mark.parametrize(("seed", "t"), [(0, 250), (1, 480), (2, 0), (3, T_WINDOW - 2)])
def test_no_look_ahead(seed, t):
    """Perturbing every bar after window bar t changes no signal, mark or trade decided up to t."""
    bars = make_bars(seed)
    params = random_params(np.random.default_rng(2000 + seed))
    other = perturb_after(bars, WARMUP + t, seed=3000 + seed)
    a = backtest(bars, params, COSTS, strategy=NAME, trades=True)
    b = backtest(other, params, COSTS, strategy=NAME, trades=True)
    pa, pb = prepare(bars, params, NAME), prepare(other, params, NAME)
    np.testing.assert_array_equal(pa.lanes["set"], pb.lanes["set"])
    for name in ("entries", "exits", "atr"):
        np.testing.assert_array_equal(np.asarray(getattr(pa, name))[: t + 1], np.asarray(getattr(pb, name))[: t + 1])
    np.testing.assert_array_equal(a.bar_equity[:, : t + 1], b.bar_equity[:, : t + 1])
    for j in range(B):
        assert [x for x in a.trades[j] if x["exit_bar"] <= t] == [x for x in b.trades[j] if x["exit_bar"] <= t]
        entered_a = [(x["entry_bar"], x["side"], x["entry_price"]) for x in a.trades[j] if x["entry_bar"] <= t]
        entered_b = [(x["entry_bar"], x["side"], x["entry_price"]) for x in b.trades[j] if x["entry_bar"] <= t]
        assert entered_a == entered_b
    for j in (0, 1):  # the reference has no look-ahead either
        ra, ma, _ = run_reference(bars, combo(params, j))
        rb, mb, _ = run_reference(other, combo(params, j))
        assert ma[: t + 1] == mb[: t + 1]
        assert [x for x in ra if x["exit_bar"] <= t] == [x for x in rb if x["exit_bar"] <= t]
    if t < T_WINDOW - 2:  # the perturbation did reach the backtest after t
        assert not np.array_equal(a.bar_equity, b.bar_equity)


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("entry", "exit_"), [(20, 20), (20, 30), (10, 50)])
def test_refuses_exit_period_not_below_entry_period(entry, exit_):
    params = random_params(np.random.default_rng(0), 3)
    params["entry_period"][1], params["exit_period"][1] = entry, exit_
    with pytest.raises(ValueError, match=r"exit_period.*entry_period") as err:
        backtest(make_bars(0), params, COSTS, strategy=NAME)
    assert f"exit_period={exit_}" in str(err.value) and f"entry_period={entry}" in str(err.value)
    with pytest.raises(ValueError, match=r"exit_period.*entry_period"):
        DONCHIAN_BREAKOUT.resolve({"entry_period": entry, "exit_period": exit_})
    with pytest.raises(ValueError, match=r"exit_period.*entry_period"):  # prepare refuses unchecked batches too
        DONCHIAN_BREAKOUT.prepare(make_bars(0), {k: v[1:2] for k, v in params.items()})
    assert list(DONCHIAN_BREAKOUT.valid(params)) == [True, False, True]


@pytest.mark.parametrize(("name", "value"), [
    ("entry_period", 9), ("entry_period", 101), ("entry_period", 20.5), ("exit_period", 4), ("exit_period", 51),
    ("stop_atr_mult", 0.5), ("stop_atr_mult", 5.5), ("atr_period", 20), ("sma_period", 30), ("max_hold_bars", 23),
    ("max_hold_bars", 501), ("allow_short", 0.5), ("allow_short", 2), ("stop_atr_mult", float("nan")),
])
def test_rejects_params_outside_the_schema(name, value):
    params = {"entry_period": np.array([60.0, 60.0]), "exit_period": np.array([5.0, 5.0])}
    params[name] = np.array([params.get(name, [DONCHIAN_BREAKOUT.param(name).default])[0], value])
    with pytest.raises(ValueError, match=name):
        backtest(make_bars(0), params, COSTS, strategy=NAME)


def test_schema():
    d = DONCHIAN_BREAKOUT.defaults()
    assert d == {"entry_period": 20, "exit_period": 10, "stop_atr_mult": 2.0, "atr_period": 14, "sma_period": 0,
                 "max_hold_bars": 200, "allow_short": 1}
    for p in DONCHIAN_BREAKOUT.params:
        assert p.hard_limits and p.unit and p.description


# ---------------------------------------------------------------------------------------------- batching


def test_grid_batch_equals_each_combination_alone():
    """A mixed grid in one call gives each combination exactly the trades and equity it gives alone (the daily
    metrics to rounding: vectorised transcendental functions may differ in the last bit across batch sizes)."""
    bars = make_bars(5)
    grid = list(itertools.product((15.0, 40.0), (8.0, 12.0), (1.5, 3.0), (14.0, 21.0), (0.0, 100.0), (30.0,),
                                  (0.0, 1.0)))
    names = ("entry_period", "exit_period", "stop_atr_mult", "atr_period", "sma_period", "max_hold_bars",
             "allow_short")
    params = {n: np.array([g[i] for g in grid]) for i, n in enumerate(names)}
    res = backtest(bars, params, COSTS, strategy=NAME, trades=True)
    assert sum(len(t) for t in res.trades) > 100
    for j in range(len(grid)):
        alone = backtest(bars, {n: params[n][j:j + 1] for n in names}, COSTS, strategy=NAME, trades=True)
        assert alone.trades[0] == res.trades[j], f"combination {j} {grid[j]}"
        np.testing.assert_array_equal(alone.bar_equity[0], res.bar_equity[j])
        for name, values in alone.metrics.items():
            np.testing.assert_allclose(values[0], res.metrics[name][j], rtol=1e-12, atol=0,
                                       err_msg=f"{name} of combination {j}")


# ---------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("which", ["quant_assets/registry.yaml", "deploy/registry.ccxt.yaml"])
def test_registry_universes(which):
    from pathlib import Path

    from quant_core.universe import load_registry

    reg = load_registry(Path(__file__).parents[2] / which)
    found = {u.name: u for u in reg.universes if u.spec.kind == "strategy" and u.spec.strategy == NAME}
    want = {f"donchian_binance_{b}_usdt_{tf}" for b in ("btc", "eth", "sol") for tf in ("1h", "4h")}
    assert set(found) == want
    for name, u in found.items():
        (market,) = u.markets.values()
        entry = reg.market(market)
        tf = name.rsplit("_", 1)[1]
        assert (entry.market.exchange, entry.market.timeframe) == ("binance", tf)
        assert entry.source == ("ccxt" if "ccxt" in which else "synthetic")
        bars_per_day = {"1h": 24, "4h": 6}[tf]
        assert u.spec.max_memory_days * bars_per_day >= 200  # the SMA-200 warms up before the window
        space = u.spec.optimisation_settings.search_settings.parameter_space
        assert space["exit_period"].high < space["entry_period"].low  # random search never breaks the rule
