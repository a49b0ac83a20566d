"""Synthetic candles: determinism, validity at every timeframe, visible regime/jump/volume effects,
and a source whose overlapping and incremental fetches agree exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quant_core.data.schema import CANDLE_SCHEMA, TIMEFRAME_MINUTES, CandleSource, Market, grid_offset_ms, timeframe_ms
from quant_core.data.synthetic import BLOCK, Regime, SyntheticParams, SyntheticSource, synthetic_candles
from quant_core.data.validation import validate_candles

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def log_returns(df: pl.DataFrame) -> np.ndarray:
    return np.diff(np.log(np.concatenate([[df["open"][0]], df["close"].to_numpy()])))


def excess_kurtosis(x: np.ndarray) -> float:
    z = (x - x.mean()) / x.std()
    return float((z**4).mean() - 3)


def test_same_seed_same_frame() -> None:
    a = synthetic_candles(3000, "1h", seed=7)
    assert a.equals(synthetic_candles(3000, "1h", seed=7))
    assert not a.equals(synthetic_candles(3000, "1h", seed=8))
    # A longer request extends the same path: the prefix does not depend on the length asked for.
    assert synthetic_candles(BLOCK + 10, "1h", seed=7).head(3000).equals(a)


@pytest.mark.parametrize("tf", list(TIMEFRAME_MINUTES))
def test_valid_candles_at_every_timeframe(tf: str) -> None:
    df = synthetic_candles(600, tf, seed=3, start="2024-01-03")
    assert df.schema == pl.Schema(CANDLE_SCHEMA) and df.height == 600
    validate_candles(df, tf)  # grid, positivity, high/low consistency, no gaps
    ms = df["timestamp"].dt.epoch("ms")
    assert ((ms - grid_offset_ms(tf)) % timeframe_ms(tf) == 0).all()
    assert df["timestamp"][0] >= datetime(2024, 1, 3, tzinfo=UTC)  # start rounded up onto the grid
    assert (df["open"].tail(-1) == df["close"].head(-1)).all()  # open = previous close exactly
    assert df.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert df.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    assert (df["volume"] > 0).all() and df["open"][0] == pytest.approx(100.0)


def test_span_arguments() -> None:
    by_range = synthetic_candles(timeframe="4h", start="2024-01-01", end="2024-01-03", seed=1)
    assert by_range.height == 12 and by_range["timestamp"][-1] == T0 + timedelta(hours=44)
    by_end = synthetic_candles(5, "1d", end="2024-01-10", seed=1)
    assert by_end["timestamp"].to_list() == [T0 + timedelta(days=d) for d in range(4, 9)]
    assert synthetic_candles(0, "1d").height == 0
    with pytest.raises(ValueError, match="not all three"):
        synthetic_candles(5, "1d", start="2024-01-01", end="2024-02-01")
    with pytest.raises(ValueError, match="n_candles, or both start and end"):
        synthetic_candles(timeframe="1d", start="2024-01-01")
    with pytest.raises(ValueError, match="unknown timeframe"):
        synthetic_candles(5, "2h")
    with pytest.raises(ValueError, match="annual_vol"):
        synthetic_candles(5, "1d", annual_vol=0)


def test_jumps_raise_kurtosis() -> None:
    common = {"seed": 11, "regimes": None, "annual_vol": 0.5}
    plain = log_returns(synthetic_candles(20_000, "1h", jump_intensity=0, **common))
    jumpy = log_returns(synthetic_candles(20_000, "1h", jump_intensity=100, jump_scale=0.05, **common))
    assert abs(excess_kurtosis(plain)) < 0.3  # Gaussian without jumps
    assert excess_kurtosis(jumpy) > 5


def test_regimes_cluster_volatility_and_switch_per_day() -> None:
    regimes = (Regime("calm", vol_scale=0.5, mean_days=20), Regime("wild", vol_scale=3.0, mean_days=10))
    df = synthetic_candles(24 * 2000, "1h", seed=5, regimes=regimes, jump_intensity=0, with_regime=True)
    r, regime = log_returns(df), df["regime"].to_numpy()
    ratio = r[regime == 1].std() / r[regime == 0].std()
    assert 5.0 < ratio < 7.0  # 3.0 / 0.5
    share_wild = regime.mean()
    assert 0.2 < share_wild < 0.47  # stationary share 10 / 30
    abs_r = np.abs(r)
    clustered = np.corrcoef(abs_r[:-24], abs_r[24:])[0, 1]
    flat = log_returns(synthetic_candles(24 * 2000, "1h", seed=5, regimes=None, jump_intensity=0))
    assert clustered > 0.2 and abs(np.corrcoef(np.abs(flat[:-24]), np.abs(flat[24:]))[0, 1]) < 0.05
    # Switching probabilities scale with the timeframe: about as many switches per day at 1h as at 1d.
    daily = synthetic_candles(2000, "1d", seed=5, regimes=regimes, jump_intensity=0, with_regime=True)
    hourly_switches = int((np.diff(regime) != 0).sum())
    daily_switches = int((np.diff(daily["regime"].to_numpy()) != 0).sum())
    assert 0.6 < hourly_switches / daily_switches < 1.6  # unscaled probabilities would give ~24
    assert 100 < hourly_switches < 170  # 2000 days / mean cycle of 30 days * 2 switches = 133


def test_volume_follows_moves() -> None:
    df = synthetic_candles(5000, "1h", seed=2)
    volume = df["volume"].to_numpy()
    candle_range = np.log(df["high"].to_numpy() / df["low"].to_numpy())
    assert np.corrcoef(candle_range, volume)[0, 1] > 0.4  # volume follows the candle's range, wicks included
    assert np.corrcoef(np.abs(log_returns(df)), volume)[0, 1] > 0.3
    hourly = synthetic_candles(2000, "1h", seed=2, regimes=None, jump_intensity=0, base_volume=2400.0)
    assert 50 < hourly["volume"].mean() < 200  # base_volume is per day: ~100 per hour


# ---------------------------------------------------------------------------------------------- source


def test_source_is_a_candle_source() -> None:
    src = SyntheticSource(seed=1)
    assert isinstance(src, CandleSource)
    assert [m.symbol for m in src.markets("4h")] == ["BTC/USD", "ETH/USD", "SOL/USD"]
    assert all(m.exchange == "synthetic" and m.timeframe == "4h" for m in src.markets("4h"))
    with pytest.raises(ValueError, match="not from this source"):
        src.fetch(Market("synthetic", "DOGE/USD", "1d"))
    with pytest.raises(ValueError, match="not from this source"):
        src.fetch(Market("binance", "BTC/USD", "1d"))


def test_overlapping_and_incremental_fetches_agree() -> None:
    m = Market("synthetic", "ETH/USD", "1h")
    whole = SyntheticSource(seed=3).fetch(m, datetime(2020, 3, 1), datetime(2020, 12, 1))
    validate_candles(whole, "1h")
    assert whole.height == 275 * 24  # spans block boundaries (4096 candles)
    fresh = SyntheticSource(seed=3)
    late = fresh.fetch(m, datetime(2020, 9, 1), datetime(2020, 12, 1))  # later window first, cold cache
    early = fresh.fetch(m, datetime(2020, 3, 1), datetime(2020, 9, 1))
    assert pl.concat([early, late]).equals(whole)
    step = timedelta(days=17)
    pieces, t = [], datetime(2020, 3, 1, tzinfo=UTC)
    while t < datetime(2020, 12, 1, tzinfo=UTC):
        pieces.append(SyntheticSource(seed=3).fetch(m, t, min(t + step, datetime(2020, 12, 1, tzinfo=UTC))))
        t += step
    assert pl.concat(pieces).equals(whole)
    other_seed = SyntheticSource(seed=4).fetch(m, datetime(2020, 3, 1), datetime(2020, 4, 1))
    assert not other_seed.equals(whole.head(other_seed.height))


def test_source_origin_end_and_markets_differ() -> None:
    src = SyntheticSource(seed=2, origin="2021-01-01", end="2021-03-01")
    btc = src.fetch(Market("synthetic", "BTC/USD", "1d"))
    assert btc["timestamp"][0] == datetime(2021, 1, 1, tzinfo=UTC)  # nothing before the origin
    assert btc["timestamp"][-1] == datetime(2021, 2, 28, tzinfo=UTC)  # nothing at or after the end
    assert btc["open"][0] == pytest.approx(30_000.0)
    eth = src.fetch(Market("synthetic", "ETH/USD", "1d"))
    assert eth["open"][0] == pytest.approx(2_000.0)
    assert not np.allclose(log_returns(btc), log_returns(eth))
    weekly = src.fetch(Market("synthetic", "BTC/USD", "1w"))
    assert weekly["timestamp"][0] == datetime(2021, 1, 4, tzinfo=UTC)  # first Monday on/after the origin
    assert src.fetch(Market("synthetic", "BTC/USD", "1d"), datetime(2019, 1, 1), datetime(2019, 6, 1)).height == 0
    live = SyntheticSource(seed=2, params=SyntheticParams(annual_vol=0.3), origin=datetime.now(UTC) - timedelta(days=3))
    recent = live.fetch(Market("synthetic", "SOL/USD", "1h"))
    last_close = recent["timestamp"][-1] + timedelta(hours=1)
    assert last_close <= datetime.now(UTC) and 60 <= recent.height <= 72  # closed candles only


def test_dagster_ohlcv_asset_with_a_synthetic_market(tmp_path) -> None:
    """`source: synthetic` in the registry: a ranged (single-run) materialisation of three days writes
    one partition file per day with the day's six 4h candles, the same candles a later run regenerates."""
    import dagster as dg
    import yaml

    from quant_assets.defs.market_data.assets import build_market_data
    from quant_assets.io import CandleIOManagerFactory
    from quant_assets.resources import ExchangeResource
    from quant_core.universe import load_registry

    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"partitions_start": "2026-01-01", "markets": [{
        "exchange": "synthetic", "symbol": "SOL/USD", "timeframe": "4h", "source": "synthetic",
        "since": "2026-01-01", "seed": 7}], "universes": []}))
    (ohlcv,) = build_market_data(load_registry(reg)).assets
    resources = {"exchange": ExchangeResource(),
                 "ohlcv_io_manager": CandleIOManagerFactory(base_dir=str(tmp_path / "ohlcv"))}
    base = tmp_path / "ohlcv" / "market_data" / "ohlcv"
    with dg.instance_for_test() as instance:
        res = dg.materialize([ohlcv], instance=instance, resources=resources,
                             tags={"dagster/asset_partition_range_start": "2026-01-02|synthetic.SOL-USD.4h",
                                   "dagster/asset_partition_range_end": "2026-01-04|synthetic.SOL-USD.4h"})
        assert res.success and len(res.get_asset_materialization_events()) == 3
        first = pl.read_parquet(base / "2026-01-03" / "synthetic.SOL-USD.4h.parquet")
        assert first.height == 6
        assert dg.materialize([ohlcv], partition_key="2026-01-03|synthetic.SOL-USD.4h", instance=instance,
                              resources=resources).success
    assert pl.read_parquet(base / "2026-01-03" / "synthetic.SOL-USD.4h.parquet").equals(first)
