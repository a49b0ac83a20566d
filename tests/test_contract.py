"""Both kinds of tunable satisfy one contract (quant_core.contract.Tunable) with the same shapes of evidence."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import random_walk_panel

import quant_core  # noqa: F401  (JAX float64)
from quant_core.contract import Evaluation, Tunable
from quant_core.data.market_candles import MarketCandles
from quant_core.data.synthetic import synthetic_candles
from quant_core.runspec import load_run_spec
from quant_core.train.problem import NoFiniteCandidate
from quant_core.tunables import PoolTunable, StrategyTunable, tunable_for

START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)


def _pool():
    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-03-01",
                          "endDateString": "2024-04-01", "max_memory_days": 30})
    return tunable_for(spec), random_walk_panel(200)


def _strategy():
    spec = load_run_spec({"strategy": "donchian_breakout", "tokens": ["AAA"], "startDateString": "2024-03-01",
                          "endDateString": "2024-04-01", "max_memory_days": 5})
    frame = synthetic_candles(timeframe="1h", start="2024-02-01", end="2024-04-02", seed=1)
    return tunable_for(spec), MarketCandles(frame, "1h")


KINDS = {"pool": _pool, "strategy": _strategy}


def test_both_implement_every_member_of_the_protocol():
    members = {n for n in dir(Tunable) if not n.startswith("_")} | set(Tunable.__annotations__)
    for cls in (PoolTunable, StrategyTunable):
        missing = {m for m in members if not hasattr(cls, m) and m not in cls.__init__.__code__.co_names}
        assert not missing, f"{cls.__name__} lacks {missing}"
        for name, member in inspect.getmembers(Tunable, inspect.isfunction):
            if not name.startswith("_"):
                mine = inspect.signature(getattr(cls, name)).parameters
                assert list(mine) == list(inspect.signature(member).parameters), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("kind", KINDS)
def test_one_evaluation_type(kind):
    tunable, data = KINDS[kind]()
    initial = tunable.user_params(tunable.initial())
    ev = tunable.evaluate(data, [initial, initial], START, END, trades=tunable.trades)
    assert isinstance(ev, Evaluation) and tunable.kind == kind
    # a strategy marks each day's close (31 returns in March); a pool reads prices at day starts, so its last
    # row (March 31) closes its 30th return
    days = (END - START).days - (kind == "pool")
    assert ev.log_returns.shape == (2, days) and ev.daily_values.shape == (2, days + 1) and len(ev.dates) == days
    np.testing.assert_allclose(ev.log_returns[0], ev.log_returns[1], rtol=0, atol=1e-12)  # one batched call
    np.testing.assert_allclose(np.diff(np.log(ev.daily_values[0])), ev.log_returns[0], rtol=0, atol=1e-9)
    assert ev.dates[-1] == "2024-03-31" and len(set(ev.dates)) == days
    assert ev.benchmark_log_returns[tunable.benchmark].shape == (days,)
    assert tunable.benchmark in ev.benchmark_metrics and len(ev.metrics) == 2
    assert tunable.metric_names and set(ev.metrics[0]) >= {"daily_log_sharpe", "returns"}
    assert (ev.trades is not None) == tunable.trades
    assert len(tunable.data_hash(data)) == 64 and tunable.data_hash(data) == tunable.data_hash(data)
    parts = tunable.scored_parts(data, START, END)
    assert parts[0][0] == START and parts[-1][1] == END
    stored = tunable.stored_params(initial)
    assert set(stored) == set(initial)


@pytest.mark.parametrize("kind", KINDS)
def test_staying_out_of_the_market(kind):
    tunable, data = KINDS[kind]()
    if kind == "pool":  # a pool always holds its tokens
        with pytest.raises(NoFiniteCandidate, match="cannot stay out"):
            tunable.stay_out(data, START, END)
        return
    ev = tunable.stay_out(data, START, END)
    assert np.all(ev.log_returns == 0) and ev.trades == [[]] and ev.metrics[0]["n_trades"] == 0
