"""The aligned price panel: shipped data, alignment rules, holes, slicing and the data hash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.data.panel import PricePanel, build_panel, panel_from_long_prices
from quant_core.data.price_file import PriceFileSource, read_long_prices, shipped_prices_path
from quant_core.data.schema import CANDLE_SCHEMA

TOKENS = ("BTC", "ETH", "USDC")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_daily_prices.csv"


@pytest.fixture(scope="module")
def long_prices() -> pl.DataFrame:
    return read_long_prices(shipped_prices_path())


@pytest.fixture(scope="module")
def panel(long_prices: pl.DataFrame) -> PricePanel:
    return panel_from_long_prices(long_prices, TOKENS)


def utc(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def test_shipped_panel_matches_the_file(panel: PricePanel, long_prices: pl.DataFrame) -> None:
    assert panel.prices.shape == (1094, 3) and len(panel) == 1094
    assert panel.tokens == TOKENS and panel.step_minutes == 1440
    assert panel.timestamps.dtype == np.dtype("datetime64[ms]")
    assert panel.timestamps[0] == np.datetime64("2022-01-01T00:00:00", "ms")
    assert panel.timestamps[-1] == np.datetime64("2024-12-29T00:00:00", "ms")
    dates = long_prices["timestamp"].unique().sort().dt.replace_time_zone(None).to_numpy()
    assert np.array_equal(panel.timestamps, dates.astype("datetime64[ms]"))
    wide = long_prices.pivot(on="token", index="timestamp", values="price_usd").sort("timestamp")
    for j, tok in enumerate(TOKENS):
        assert np.array_equal(panel.prices[:, j], wide[tok].to_numpy())
    meta = panel.metadata
    assert meta["rows"] == 1094 and meta["first"] == "2022-01-01T00:00:00Z" and meta["last"] == "2024-12-29T00:00:00Z"
    assert meta["data_hash"] == panel.data_hash and meta["timeframe"] == "1d"
    assert meta["missing_steps"] == {"BTC": 0, "ETH": 0, "USDC": 0}


def test_candle_path_gives_the_same_panel(panel: PricePanel) -> None:
    src = PriceFileSource()
    markets = {m.base: m for m in src.markets()}
    candles = {tok: src.fetch(markets[tok]) for tok in TOKENS}
    built = build_panel(candles, "1d", markets=markets)
    # Candle observed at open + 1d = the snapshot's own date, value = close = the snapshot's price.
    assert np.array_equal(built.timestamps, panel.timestamps)
    assert np.array_equal(built.prices, panel.prices)
    assert built.data_hash == panel.data_hash
    assert built.metadata["markets"]["ETH"] == "shipped.ETH-USD.1d"
    # Token order is the order given.
    reordered = build_panel({t: candles[t] for t in ("USDC", "BTC")}, "1d")
    assert reordered.tokens == ("USDC", "BTC")
    assert np.array_equal(reordered.prices[:, 1], panel.prices[:, 0])


def test_observation_time_is_open_plus_timeframe() -> None:
    opens = [utc(2024, 1, 1, h) for h in range(4)]
    frame = pl.DataFrame(
        {
            "timestamp": opens,
            "open": 1.0,
            "high": 3.0,
            "low": 1.0,
            "close": [2.0, 3.0, 2.5, 2.0],
            "volume": 0.0,
        },
        schema=CANDLE_SCHEMA,
    )
    p = build_panel({"A": frame}, "1h")
    assert p.timestamps[0] == np.datetime64("2024-01-01T01:00", "ms")
    assert p.prices[:, 0].tolist() == [2.0, 3.0, 2.5, 2.0] and p.step_minutes == 60


def test_common_range_trims_edges(long_prices: pl.DataFrame) -> None:
    late = long_prices.filter((pl.col("token") != "ETH") | (pl.col("timestamp") >= utc(2023, 6, 1)))
    early = late.filter((pl.col("token") != "BTC") | (pl.col("timestamp") < utc(2024, 6, 1)))
    p = panel_from_long_prices(early, TOKENS)
    assert p.metadata["first"] == "2023-06-01T00:00:00Z" and p.metadata["last"] == "2024-05-31T00:00:00Z"
    assert p.metadata["trimmed"]["BTC"]["before"] == (utc(2023, 6, 1) - utc(2022, 1, 1)).days
    assert p.metadata["trimmed"]["BTC"]["after"] == 0 and p.metadata["trimmed"]["USDC"]["after"] > 0


def test_hole_raises_naming_the_token(long_prices: pl.DataFrame) -> None:
    holed = long_prices.filter(
        ~((pl.col("token") == "ETH") & pl.col("timestamp").dt.date().is_in([date(2023, 5, 5), date(2023, 5, 6)]))
    )
    with pytest.raises(
        ValueError, match=r"'ETH' is missing 2 timestamp\(s\): 2023-05-05T00:00:00Z, 2023-05-06"
    ) as info:
        panel_from_long_prices(holed, TOKENS)
    assert "BTC" not in str(info.value).split("holes inside")[1]
    assert holed.filter(pl.col("token") == "ETH").height == 1092  # the long frame itself is fine
    assert panel_from_long_prices(holed, ["BTC", "USDC"]).prices.shape == (1094, 2)

    src = PriceFileSource()
    candles = {t: src.fetch(m) for t, m in zip(TOKENS, src.markets(), strict=True)}
    candles["USDC"] = candles["USDC"].filter(pl.col("timestamp") != utc(2024, 2, 29))
    with pytest.raises(ValueError, match=r"'USDC' is missing 1 timestamp\(s\): 2024-03-01T00:00:00Z"):
        build_panel(candles, "1d")


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared data folder absent: {SHARED} not found")
def test_shared_file_holes_are_caught() -> None:
    with pytest.raises(ValueError, match=r"'S' is missing 4 timestamp\(s\)"):
        panel_from_long_prices(SHARED, ["BTC", "S"])
    p = panel_from_long_prices(SHARED, ["BTC", "PAXG", "USDC"])
    assert p.metadata["last"] == "2025-04-22T00:00:00Z"


def test_bad_inputs(long_prices: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"\['DOGE'\] not in the prices"):
        panel_from_long_prices(long_prices, ["BTC", "DOGE"])
    with pytest.raises(ValueError, match="more than once"):
        panel_from_long_prices(long_prices, ["BTC", "BTC"])
    apart = long_prices.filter(
        ((pl.col("token") == "BTC") & (pl.col("timestamp") < utc(2022, 2, 1)))
        | ((pl.col("token") == "ETH") & (pl.col("timestamp") > utc(2023, 1, 1)))
    )
    with pytest.raises(ValueError, match="do not overlap"):
        panel_from_long_prices(apart, ["BTC", "ETH"])
    shifted = long_prices.with_columns(
        pl.when(pl.col("token") == "ETH").then(pl.col("timestamp") + pl.duration(hours=12)).otherwise("timestamp")
    )
    with pytest.raises(ValueError, match="'ETH' has 1094 timestamp.* off the 1d grid of 'BTC'"):
        panel_from_long_prices(shifted, ["BTC", "ETH"])


def test_index_of_and_slice(panel: PricePanel) -> None:
    assert panel.index_of("2022-01-01") == 0
    assert panel.index_of(datetime(2024, 12, 29)) == 1093
    assert panel.index_of(np.datetime64("2023-01-01")) == 365
    with pytest.raises(KeyError, match="2025-01-01T00:00:00Z is not a timestamp.*2022-01-01T00:00:00Z .. 2024-12-29"):
        panel.index_of("2025-01-01")
    with pytest.raises(KeyError):
        panel.index_of("2023-01-01T12:00:00")
    year = panel.slice("2023-01-01", utc(2024, 1, 1))
    assert len(year) == 365 and year.index_of("2023-01-01") == 0
    assert np.array_equal(year.prices, panel.prices[365:730])
    assert year.metadata["first"] == "2023-01-01T00:00:00Z" and year.metadata["last"] == "2023-12-31T00:00:00Z"
    assert year.data_hash != panel.data_hash and year.metadata["data_hash"] == year.data_hash
    assert panel.slice().data_hash == panel.data_hash
    assert len(panel.slice(start="2024-12-29")) == 1
    assert len(panel.slice(end="2022-01-01")) == 0
    assert len(panel.slice("2030-01-01")) == 0


def test_data_hash_identifies_the_data(panel: PricePanel) -> None:
    same = PricePanel(panel.timestamps, panel.tokens, panel.prices.copy(), panel.step_minutes)
    assert same.data_hash == panel.data_hash and len(panel.data_hash) == 64
    changed = panel.prices.copy()
    changed[500, 1] *= 1.0000001
    assert PricePanel(panel.timestamps, panel.tokens, changed, 1440).data_hash != panel.data_hash
    renamed = PricePanel(panel.timestamps, ("BTC", "ETH", "USDT"), panel.prices, 1440)
    assert renamed.data_hash != panel.data_hash
    shifted = PricePanel(panel.timestamps + np.timedelta64(1, "D"), panel.tokens, panel.prices, 1440)
    assert shifted.data_hash != panel.data_hash


def test_panel_is_immutable_and_checked(panel: PricePanel) -> None:
    with pytest.raises(ValueError):
        panel.prices[0, 0] = 1.0
    with pytest.raises(ValueError):
        panel.timestamps[0] = np.datetime64("2000-01-01")
    ts = panel.timestamps[:3]
    with pytest.raises(ValueError, match="finite and > 0.*ETH at 2022-01-02T00:00:00Z"):
        PricePanel(ts, ("BTC", "ETH"), np.array([[1.0, 1.0], [1.0, np.nan], [1.0, 1.0]]), 1440)
    with pytest.raises(ValueError, match="every 1d"):
        PricePanel(ts[[0, 2]], ("BTC",), np.ones((2, 1)), 1440)
    with pytest.raises(ValueError, match="shape"):
        PricePanel(ts, ("BTC",), np.ones((3, 2)), 1440)


def test_to_frame(panel: PricePanel) -> None:
    frame = panel.to_frame()
    assert frame.columns == ["timestamp", *TOKENS]
    assert frame.schema["timestamp"] == pl.Datetime("ms", "UTC")
    assert frame["timestamp"][0] == utc(2022, 1, 1)
    assert np.array_equal(frame.select(TOKENS).to_numpy(), panel.prices)


def test_minute_data_step_is_inferred() -> None:
    n = 500
    ts = [utc(2024, 3, 1) + timedelta(minutes=i) for i in range(n)]
    prices = pl.DataFrame(
        {"timestamp": ts * 2, "token": ["A"] * n + ["B"] * n, "price_usd": np.linspace(1, 2, 2 * n)}
    ).sample(fraction=1.0, shuffle=True, seed=1)
    p = panel_from_long_prices(prices, ["B", "A"])
    assert p.step_minutes == 1 and p.metadata["timeframe"] == "1m" and len(p) == n
    assert p.prices[0].tolist() == [np.linspace(1, 2, 2 * n)[n], 1.0]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_slice_and_index_agree(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 60))
    step = data.draw(st.sampled_from([1, 60, 1440]))
    ts = np.datetime64("2024-01-01T00:00", "ms") + np.arange(n) * np.timedelta64(step, "m")
    p = PricePanel(ts, ("A",), np.arange(1, n + 1, dtype=float)[:, None], step)
    i = data.draw(st.integers(0, n))
    j = data.draw(st.integers(0, n))
    k = data.draw(st.integers(0, n - 1))
    end = ts[j] if j < n else ts[-1] + np.timedelta64(step, "m")
    part = p.slice(ts[i] if i < n else end, end)
    assert len(part) == max(0, j - i)
    assert p.index_of(ts[k]) == k
    if len(part):
        assert part.index_of(ts[i]) == 0 and part.prices[0, 0] == i + 1


def _closes(values, timeframe="1h", start="2024-01-01"):
    """Valid candles whose closes are `values` (open = previous close)."""
    from datetime import timedelta

    from quant_core.data.schema import CANDLE_SCHEMA, timeframe_minutes, to_utc

    t0 = to_utc(start)
    step = timedelta(minutes=timeframe_minutes(timeframe))
    closes = [float(v) for v in values]
    opens = [closes[0]] + closes[:-1]
    return pl.DataFrame({
        "timestamp": [t0 + i * step for i in range(len(closes))], "open": opens,
        "high": [max(o, c) for o, c in zip(opens, closes, strict=True)],
        "low": [min(o, c) for o, c in zip(opens, closes, strict=True)], "close": closes, "volume": [1.0] * len(closes),
    }, schema=CANDLE_SCHEMA)


def test_numeraire_panel_converts_quotes_and_pins_stablecoins_in_the_metadata():
    from quant_core.data.panel import build_numeraire_panel
    from quant_core.data.schema import Market

    btc_usdt = Market("binance", "BTC/USDT", "1h")
    eth_btc = Market("binance", "ETH/BTC", "1h")
    candles = {btc_usdt: _closes([40_000, 41_000, 42_000, 40_500]), eth_btc: _closes([0.05, 0.051, 0.049, 0.05])}
    panel = build_numeraire_panel(candles, ["BTC", "ETH", "USDC"], "1h")
    assert panel.tokens == ("BTC", "ETH", "USDC")
    np.testing.assert_allclose(panel.prices[:, 0], [40_000, 41_000, 42_000, 40_500])
    # ETH/BTC x BTC/USD, where BTC/USD is BTC/USDT with USDT pinned: no ETH/USD market needed
    with pytest.raises(ValueError, match="cannot be priced"):
        build_numeraire_panel(candles, ["ETH"], "1h", pin_stablecoins=False)
    np.testing.assert_array_equal(panel.prices[:, 2], 1.0)
    assert "USDT pinned at 1 USD" in panel.metadata["pricing"]["BTC"]
    assert panel.metadata["pinned"] == ["USDC"]
    usdt_usd = Market("kraken", "USDT/USD", "1h")
    candles[usdt_usd] = _closes([1.0, 0.99, 1.0, 1.01])
    conv = build_numeraire_panel(candles, ["BTC"], "1h")
    np.testing.assert_allclose(conv.prices[:, 0], [40_000, 41_000 * 0.99, 42_000, 40_500 * 1.01])
    assert conv.metadata["pricing"]["BTC"] == "binance.BTC-USDT.1h x (kraken.USDT-USD.1h)"
