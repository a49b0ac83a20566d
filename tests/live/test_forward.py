"""Forward runs: the day convention for both kinds, and padding with flat candles changes no real day."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quant_core.data.schema import Market
from quant_core.data.synthetic import SyntheticSource
from quant_core.live.forward import pad_flat, run_days
from quant_core.runspec import load_run_spec
from quant_core.tunables import tunable_for

F = datetime(2024, 5, 6, tzinfo=UTC)


def candles(symbol: str, timeframe: str, seed: int) -> pl.DataFrame:
    src = SyntheticSource(seed=seed, symbols=(symbol,), exchange="synthetic")
    return src.fetch(Market("synthetic", symbol, timeframe), datetime(2024, 1, 1, tzinfo=UTC), F + timedelta(days=20))


def pool():
    spec = load_run_spec({"rule": "momentum", "tokens": ["BTC", "ETH"], "startDateString": "2024-02-01",
                          "endDateString": "2024-05-06", "max_memory_days": 10, "chunk_period": 1440,
                          "weight_interpolation_period": 1440})
    t = tunable_for(spec)
    frames = {"synthetic.BTC-USD.1d": candles("BTC/USD", "1d", 1), "synthetic.ETH-USD.1d": candles("ETH/USD", "1d", 2)}
    markets = {"BTC": Market.from_key("synthetic.BTC-USD.1d"), "ETH": Market.from_key("synthetic.ETH-USD.1d")}
    return t, markets, frames, t.initial()


def strategy():
    spec = load_run_spec({"strategy": "donchian_breakout", "tokens": ["BTC"], "startDateString": "2024-02-01",
                          "endDateString": "2024-05-06", "max_memory_days": 34})
    t = tunable_for(spec)
    frames = {"synthetic.BTC-USDT.4h": candles("BTC/USDT", "4h", 3)}
    params = t.params_from_stored({"entry_period": 20, "exit_period": 5})
    return t, {"BTC": Market.from_key("synthetic.BTC-USDT.4h")}, frames, {**t.initial(), **params}


@pytest.mark.parametrize("make", [pool, strategy], ids=["pool", "strategy"])
def test_padding_with_flat_candles_changes_no_real_day(make):
    t, markets, frames, params = make()
    last = F + timedelta(days=9)
    real = {k: f.filter(pl.col("timestamp") < last + timedelta(days=1)) for k, f in frames.items()}
    plain = run_days(t, t.load_data(markets, real), params, F, last)  # ends at last's close
    padded = t.load_data(markets, {k: pad_flat(f, markets_by(markets)[k].timeframe, 40) for k, f in real.items()})
    b16 = run_days(t, padded, params, F, last, bucket=16)
    b32 = run_days(t, padded, params, F, last, bucket=32)
    assert list(plain) == [f"{F + timedelta(days=i):%Y-%m-%d}" for i in range(10)] == list(b16)
    assert b16 == b32  # bit for bit: the runs are causal, padding only ever follows the real days
    *before, final = plain
    assert {d: plain[d] for d in before} == {d: b16[d] for d in before}
    # on the last day the exact run closes any open position (with its costs); the forward run keeps it open
    if plain[final].trades and plain[final].trades[-1]["exit_reason"] == "end":
        assert b16[final].trades == plain[final].trades[:-1]


def markets_by(markets: dict) -> dict:
    return {m.key: m for m in markets.values()}


def test_a_pool_day_is_close_to_close_of_that_day():
    t, markets, frames, params = pool()
    days = run_days(t, t.load_data(markets, frames), params, F, F + timedelta(days=3))
    closes = {k: f.filter(pl.col("timestamp").is_between(F - timedelta(days=1), F + timedelta(days=3)))["close"]
              .to_numpy() for k, f in frames.items()}
    hodl_day0 = np.log(np.mean([c[1] / c[0] for c in closes.values()]))  # equal weights at the start
    assert days[f"{F:%Y-%m-%d}"].benchmark_log_return == pytest.approx(hodl_day0, rel=1e-9)
    values = [d.value for d in days.values()]
    assert [math.log(b / a) for a, b in zip(values, values[1:], strict=False)] == pytest.approx(
        [d.log_return for d in list(days.values())[1:]], rel=1e-12)


def test_flat_padding_has_the_candle_schema_and_no_volume():
    f = candles("BTC/USDT", "4h", 3).head(12)
    p = pad_flat(f, "4h", 2)
    assert p.schema == f.schema and p.height == 12 + 12
    tail = p.tail(12)
    assert (tail["volume"] == 0).all() and (tail["open"] == f["close"][-1]).all()
    assert (tail["high"] == tail["low"]).all()
