"""Search batches scored on several threads (quant_core.train.threads): the same result bit for bit whatever the
thread count, for a pool and for a CEX strategy; QUANT_SEARCH_THREADS honoured, and refused when it is not a
positive integer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_parts import GRID, PANEL, _without_timing

import quant_core.train.grid as grid
from quant_core.data.market_candles import MarketCandles
from quant_core.runspec import load_run_spec
from quant_core.train.threads import THREADS_ENV, search_threads
from quant_core.train.trainer import train

sys.path.insert(0, str(Path(__file__).parents[1] / "strategies"))
from test_train_strategy import END, START, TF, spiky_candles  # noqa: E402
from test_train_strategy import GRID as SWEEP_GRID


class _Recording(grid.ThreadPoolExecutor):
    workers: list[int] = []

    def __init__(self, max_workers: int) -> None:
        _Recording.workers.append(max_workers)
        super().__init__(max_workers)


@pytest.fixture
def recorded(monkeypatch):
    _Recording.workers = []
    monkeypatch.setattr(grid, "ThreadPoolExecutor", _Recording)
    return _Recording.workers


def _trained(monkeypatch, threads: str, data, spec, **kw):
    monkeypatch.setenv(THREADS_ENV, threads)
    return _without_timing(train(data, spec, **kw))


def test_a_pool_grid_on_three_threads_equals_one_thread_bit_for_bit(monkeypatch, recorded):
    one = _trained(monkeypatch, "1", PANEL, GRID, seed=1)
    assert recorded == []  # one thread: no pool at all
    three = _trained(monkeypatch, "3", PANEL, GRID, seed=1)
    assert recorded == [3]  # 25 candidates in batches of 4: 7 batches on 3 threads
    np.testing.assert_equal(three, one)


def test_a_strategy_grid_on_threads_equals_one_thread_bit_for_bit(monkeypatch, recorded):
    spec = load_run_spec({
        "strategy": "liquidity_sweep", "tokens": ["BTC"], "startDateString": f"{START:%Y-%m-%d}",
        "endDateString": f"{END:%Y-%m-%d}", "max_memory_days": 20, "return_val": "net_profit",
        "strategy_settings": {"min_trades": 0},
        "optimisation_settings": {"method": "grid", "val_fraction": 0.25,
                                  "search_settings": {"parameter_space": SWEEP_GRID, "batch_size": 4}}})
    data = MarketCandles(spiky_candles(), TF)
    one = _trained(monkeypatch, "1", data, spec)
    many = _trained(monkeypatch, "8", data, spec)
    assert recorded == [4]  # 16 candidates, 4 batches: no more threads than batches
    np.testing.assert_equal(many, one)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"{THREADS_ENV}=.*positive integer"):
        train(PANEL, GRID, seed=1)


def test_the_default_is_one_thread_per_usable_cpu(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    import os

    assert search_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, " 2 ")
    assert search_threads() == 2
