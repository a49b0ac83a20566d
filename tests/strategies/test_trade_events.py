"""The trade-to-trade engine (quant_core.strategies.trade_events) against the bar scan (backtest._run) it stands
in for when only metrics are asked: every accumulator and every daily mark, on random signal tables that exercise
each static branch (a target or none, the stop at the signal bar's extreme or at the fill, exit signals or none),
with gaps through stops, trades held to the time limit and to the window's last bar, reversals at an exit's close.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import quant_core  # noqa: F401  (float64)
from quant_core.strategies import backtest as bt
from quant_core.strategies.trade_events import run_events, signal_words

T, S, B, BPD = 960, 7, 96, 96
FIELDS = ("n", "wins", "sum_r", "sum_r2", "sum_win_r", "sum_loss_r", "gross_win", "gross_loss", "exposure", "equity",
          "max_dd")


def _inputs(seed: int, *, target: bool, exits: bool, density: float):
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, T)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, T))  # gaps at the open
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, T))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, T))
    ohlc = {k: jnp.asarray(v) for k, v in {"open": open_, "high": high, "low": low, "close": close}.items()}
    entries = (rng.uniform(size=(T, S)) < density) * rng.choice([-1, 1], size=(T, S))
    exit_table = (rng.uniform(size=(T, S)) < 0.03) * rng.choice([-1, 1], size=(T, S)) if exits else None
    atr = np.abs(rng.normal(0.5, 0.2, (T, 2)))
    atr[:5, 0] = np.nan  # an undefined ATR: the entry is skipped
    lanes = {"set": rng.integers(0, S, B).astype(np.int32), "atr_row": rng.integers(0, 2, B).astype(np.int32),
             "stop_atr_mult": rng.uniform(0.3, 3.0, B), "max_hold_bars": rng.integers(1, 150, B).astype(float)}
    if target:
        lanes["rr_ratio"] = rng.uniform(0.5, 4.0, B)
    lanes = {k: jnp.asarray(v) for k, v in lanes.items()}
    return (ohlc, jnp.asarray(entries.astype(np.int8)),
            None if exit_table is None else jnp.asarray(exit_table.astype(np.int8)), jnp.asarray(atr), lanes)


@pytest.mark.parametrize("target", [True, False], ids=["target", "no target"])
@pytest.mark.parametrize("fill", [False, True], ids=["stop at extreme", "stop from fill"])
@pytest.mark.parametrize("exits", [False, True], ids=["no exit signals", "exit signals"])
@pytest.mark.parametrize("density", [0.01, 0.2], ids=["sparse", "dense"])
def test_the_events_engine_gives_the_scans_numbers(target, fill, exits, density):
    ohlc, entries, exit_table, atr, lanes = _inputs(int(density * 100) + 2 * target + fill, target=target,
                                                   exits=exits, density=density)
    costs = bt.Costs(0.001, 0.0005, 0.5, 10_000.0)
    scan, scan_marks, _ = bt._run(ohlc, entries, exit_table, atr, lanes, costs, BPD, False, fill)
    events, event_marks = run_events(ohlc, entries, exit_table, atr, lanes, costs, BPD, fill)
    assert float(jnp.max(scan.n)) > 3  # trades happened
    for name in FIELDS:
        np.testing.assert_allclose(getattr(events, name), getattr(scan, name), rtol=1e-13, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(event_marks, scan_marks, rtol=1e-13, atol=0)


def test_signal_words_find_the_next_signal_and_never_the_last_bar():
    from quant_core.strategies.trade_events import _next_signal

    entries = np.zeros((200, 2), np.int8)
    entries[[3, 64, 130, 199], 0] = 1  # 199 is the last bar: never an entry
    bits, nxt = signal_words(jnp.asarray(entries))
    got = [int(_next_signal(bits, nxt, jnp.int32(0), jnp.int32(t))) for t in (0, 3, 4, 64, 65, 131, 199)]
    assert got[:5] == [3, 3, 64, 64, 130]
    assert min(got[5:]) >= 199  # none left
    assert int(_next_signal(bits, nxt, jnp.int32(1), jnp.int32(0))) >= 199


def test_both_engines_through_the_public_entry_give_the_same_metrics(monkeypatch):
    """Both engines through `backtest`: the same metrics and daily equity."""
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_backtest import random_combos

    from quant_core.data.synthetic import synthetic_candles
    from quant_core.strategies.market import strategy_bars

    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=10)
    bars = strategy_bars(synthetic_candles(start=start - timedelta(days=1), end=end, timeframe="5m", seed=7), "5m",
                         start, end, 1)
    combos = random_combos(256, seed=4)
    costs = bt.Costs(0.001, 0.0002, 1.0, 10_000.0)
    monkeypatch.setattr(bt, "EVENT_ENGINE", True)
    events = bt.backtest(bars, combos, costs)
    monkeypatch.setattr(bt, "EVENT_ENGINE", False)
    scan = bt.backtest(bars, combos, costs)
    assert events.metrics["n_trades"].max() > 0
    for name, values in scan.metrics.items():
        np.testing.assert_allclose(events.metrics[name], values, rtol=1e-12, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(events.daily_equity, scan.daily_equity, rtol=1e-13, atol=0)


def test_which_engine_a_batch_takes(monkeypatch):
    """On the CPU big batches step from trade to trade, small ones (whose compile time would dominate) bar by bar;
    a GPU keeps the bar scan; EVENT_ENGINE overrides."""
    monkeypatch.setattr(bt.jax, "default_backend", lambda: "cpu")
    assert bt.event_engine(4096) and not bt.event_engine(512)
    monkeypatch.setattr(bt.jax, "default_backend", lambda: "gpu")
    assert not bt.event_engine(4096)
    monkeypatch.setattr(bt, "EVENT_ENGINE", True)
    assert bt.event_engine(16)
