"""Candle schema, Market identity and every validation rule (one bad frame per rule)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.data.schema import (
    CANDLE_SCHEMA,
    TIMEFRAME_MINUTES,
    Market,
    empty_candles,
    timeframe_minutes,
    to_utc,
)
from quant_core.data.validation import CandleValidationError, ValidationReport, validate_candles

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_candles(n: int = 10, tf: str = "1h", start: datetime = T0, seed: int = 0) -> pl.DataFrame:
    """A valid candle frame: a random walk with consistent high/low."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    step = timedelta(minutes=timeframe_minutes(tf))
    return pl.DataFrame(
        {
            "timestamp": [start + i * step for i in range(n)],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(0, 10, n),
        },
        schema=CANDLE_SCHEMA,
    )


def set_value(df: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


# ---------------------------------------------------------------------------------------------- schema


def test_timeframes() -> None:
    assert timeframe_minutes("1m") == 1
    assert timeframe_minutes("4h") == 240
    assert timeframe_minutes("1d") == 1440
    assert timeframe_minutes("1w") == 7 * 1440
    assert set(TIMEFRAME_MINUTES) >= {"1m", "5m", "15m", "30m", "1h", "4h", "1d"}
    with pytest.raises(ValueError, match="unknown timeframe '2d'.*1m, 5m, 15m, 30m, 1h, 4h, 1d"):
        timeframe_minutes("2d")


def test_schema_and_empty_frame() -> None:
    assert list(CANDLE_SCHEMA) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert CANDLE_SCHEMA["timestamp"] == pl.Datetime("ms", "UTC")
    assert empty_candles().schema == pl.Schema(CANDLE_SCHEMA)


def test_to_utc() -> None:
    assert to_utc("2024-01-01") == T0
    assert to_utc("2024-01-01T01:00:00+01:00") == T0
    assert to_utc("2024-01-01T00:00:00Z") == T0
    assert to_utc(datetime(2024, 1, 1)) == T0
    assert to_utc(np.datetime64("2024-01-01T00:00:00")) == T0
    with pytest.raises(ValueError, match="ISO"):
        to_utc("yesterday")


def test_market_key_and_parts() -> None:
    m = Market("shipped", "BTC/USD", "1d")
    assert m.key == "shipped.BTC-USD.1d"
    assert (m.base, m.quote, m.minutes) == ("BTC", "USD", 1440)
    assert Market.from_key("shipped.BTC-USD.1d") == m
    assert Market.from_key("binance.USDC.e-USDT.1h") == Market("binance", "USDC.e/USDT", "1h")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"exchange": "Binance"}, "exchange"),
        ({"exchange": ""}, "exchange"),
        ({"exchange": "bin.ance"}, "exchange"),
        ({"symbol": "BTCUSD"}, "symbol"),
        ({"symbol": "BTC/USDT:USDT"}, "symbol"),
        ({"symbol": "BTC-X/USD"}, "symbol"),
        ({"symbol": "BTC/"}, "symbol"),
        ({"timeframe": "2h"}, "timeframe"),
    ],
)
def test_market_rejects_bad_fields(kwargs: dict[str, str], field: str) -> None:
    args = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", **kwargs}
    with pytest.raises(ValueError, match=f"Market.{field}"):
        Market(**args)


@pytest.mark.parametrize("key", ["binance", "binance.BTCUSDT.1h", "binance.BTC-USDT", "x.A-B-C.1h", "b.BTC-USDT.2h"])
def test_market_from_bad_key(key: str) -> None:
    with pytest.raises(ValueError, match="market key"):
        Market.from_key(key)


_asset = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    exchange=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True),
    base=_asset,
    quote=_asset,
    timeframe=st.sampled_from(sorted(TIMEFRAME_MINUTES)),
)
def test_market_key_round_trip(exchange: str, base: str, quote: str, timeframe: str) -> None:
    m = Market(exchange, f"{base}/{quote}", timeframe)
    assert Market.from_key(m.key) == m
    assert not any(ch in m.key for ch in "/|:\\")


# ------------------------------------------------------------------------------------------ validation


def test_valid_frame_passes_unchanged() -> None:
    df = make_candles(24)
    out, report = validate_candles(df, "1h")
    assert out.equals(df)
    assert report.rows == 24
    assert report.first == T0 and report.last == T0 + timedelta(hours=23)
    assert report.gaps == [] and report.repaired == {} and report.problems == []


def test_empty_frame_is_valid() -> None:
    out, report = validate_candles(empty_candles(), "1d")
    assert out.height == 0
    assert report == ValidationReport(rows=0, first=None, last=None)


# One bad frame per rule: (name, make the bad frame from a good one, text the error must contain,
# the example timestamp it must name or None, whether repair=True fixes it).
RULES: list[tuple[str, Callable[[pl.DataFrame], pl.DataFrame], str, str | None, bool]] = [
    ("missing column", lambda d: d.drop("volume"), "missing column(s) 'volume'", None, False),
    (
        "bad dtype",
        lambda d: d.with_columns(pl.col("close").cast(pl.String)),
        "'close' has dtype",
        None,
        False,
    ),
    (
        "bad time dtype",
        lambda d: d.with_columns(pl.col("timestamp").cast(pl.String)),
        "'timestamp' has dtype",
        None,
        False,
    ),
    (
        "NaN",
        lambda d: set_value(d, 3, "close", float("nan")),
        "null/NaN/inf 'close'",
        "2024-01-01T03:00:00Z",
        False,
    ),
    ("null", lambda d: set_value(d, 4, "open", None), "null/NaN/inf 'open'", "2024-01-01T04:00:00Z", False),
    (
        "inf",
        lambda d: set_value(d, 2, "high", float("inf")),
        "null/NaN/inf 'high'",
        "2024-01-01T02:00:00Z",
        False,
    ),
    ("null time", lambda d: set_value(d, 2, "timestamp", None), "null/NaN/inf 'timestamp'", None, False),
    (
        "non-positive",
        lambda d: set_value(d, 5, "low", 0.0),
        "non-positive price",
        "2024-01-01T05:00:00Z",
        False,
    ),
    (
        "negative volume",
        lambda d: set_value(d, 6, "volume", -1.0),
        "negative volume",
        "2024-01-01T06:00:00Z",
        False,
    ),
    (
        "high too low",
        lambda d: d.with_columns(
            pl.when(pl.int_range(pl.len()) == 7)
            .then(pl.min_horizontal("open", "close") * 0.999)
            .otherwise(pl.col("high"))
            .alias("high")
        ),
        "high < max(open, close)",
        "2024-01-01T07:00:00Z",
        True,
    ),
    (
        "low too high",
        lambda d: d.with_columns(
            pl.when(pl.int_range(pl.len()) == 8)
            .then(pl.max_horizontal("open", "close") * 1.001)
            .otherwise(pl.col("low"))
            .alias("low")
        ),
        "low > min(open, close)",
        "2024-01-01T08:00:00Z",
        True,
    ),
    (
        "exact duplicate",
        lambda d: pl.concat([d, d[2:3]]).sort("timestamp"),
        "exact duplicate",
        "2024-01-01T02:00:00Z",
        True,
    ),
    (
        "conflicting duplicate",
        lambda d: pl.concat([d, set_value(d[2:3], 0, "volume", 99.0)]).sort("timestamp"),
        "conflicting duplicate",
        "2024-01-01T02:00:00Z",
        False,
    ),
    ("unsorted", lambda d: pl.concat([d[5:], d[:5]]), "not sorted", "2024-01-01T00:00:00Z", True),
    (
        "off grid",
        lambda d: d.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(pl.col("timestamp") + pl.duration(minutes=1))
            .otherwise(pl.col("timestamp"))
            .alias("timestamp")
        ),
        "off the 1h grid",
        "2024-01-01T03:01:00Z",
        False,
    ),
    (
        "sub-millisecond",
        lambda d: d.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(pl.col("timestamp").dt.cast_time_unit("us") + pl.duration(microseconds=5))
            .otherwise(pl.col("timestamp").dt.cast_time_unit("us"))
            .alias("timestamp")
        ),
        "off the 1h grid",
        "2024-01-01T03:00:00Z",
        False,
    ),
    (
        "microsecond integers",
        lambda d: d.with_columns(pl.col("timestamp").dt.epoch("us").alias("timestamp")),
        "micro- or nanoseconds",
        None,
        False,
    ),
]


@pytest.mark.parametrize(("name", "corrupt", "expected", "example", "fixable"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_is_reported(
    name: str,
    corrupt: Callable[[pl.DataFrame], pl.DataFrame],
    expected: str,
    example: str | None,
    fixable: bool,
) -> None:
    bad = corrupt(make_candles(10))
    with pytest.raises(CandleValidationError) as info:
        validate_candles(bad, "1h")
    message = str(info.value)
    assert expected in message
    assert "fix:" in message
    if example:
        assert example in message
    if fixable:
        assert "repair=True" in message
        out, report = validate_candles(bad, "1h", repair=True)
        assert report.repaired and report.problems
        validate_candles(out, "1h")  # the repaired frame is clean
    else:
        with pytest.raises(CandleValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            validate_candles(bad, "1h", repair=True)


def test_error_lists_every_problem_with_counts() -> None:
    df = set_value(set_value(make_candles(10), 1, "close", float("nan")), 2, "close", float("nan"))
    df = set_value(df, 5, "volume", -3.0)
    with pytest.raises(CandleValidationError) as info:
        validate_candles(df, "1h")
    err = info.value
    assert len(err.problems) == 2
    assert "2 row(s) with null/NaN/inf 'close'" in str(err)
    assert "1 row(s) with negative volume" in str(err)
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.problems == err.problems


def test_repair_fixes_everything_it_can_at_once() -> None:
    good = make_candles(12)
    broken = set_value(good, 4, "high", float(good["low"][4]))  # high below open/close
    broken = set_value(broken, 6, "low", float(good["high"][6]))  # low above open/close
    broken = pl.concat([broken[6:], broken[:6], broken[1:3]])  # 2 steps back + 2 exact duplicates
    out, report = validate_candles(broken, "1h", repair=True)
    assert report.repaired == {
        "high_widened": 1,
        "low_widened": 1,
        "exact_duplicates_dropped": 2,
        "sorted": 2,
    }
    assert len(report.problems) == 4 and all(p.startswith("repaired:") for p in report.problems)
    assert out.height == 12 and out["timestamp"].is_sorted()
    assert out["timestamp"].equals(good["timestamp"])
    ok = out.select(
        hi=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        lo=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
    )
    assert ok.row(0) == (True, True)
    assert out["close"].equals(good["close"])


def test_casts_to_schema() -> None:
    good = make_candles(6)
    naive = good.with_columns(pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("ns"))
    as_int = good.with_columns(pl.col("timestamp").dt.epoch("ms"), pl.col("volume").cast(pl.Int32))
    berlin = good.with_columns(
        pl.col("timestamp").dt.convert_time_zone("Europe/Berlin"), pl.col("close").cast(pl.Float32)
    )
    extra = good.with_columns(trades=pl.lit(3)).select("trades", *good.columns[::-1])
    for variant in (naive, as_int, berlin, extra):
        out, _ = validate_candles(variant, "1h")
        assert out.schema == pl.Schema(CANDLE_SCHEMA)
        assert out["timestamp"].equals(good["timestamp"])
    dated = pl.DataFrame(
        {"timestamp": [T0.date()], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [0]}
    )
    out, _ = validate_candles(dated, "1d")
    assert out["timestamp"][0] == T0


def test_gaps_are_reported_not_filled() -> None:
    df = make_candles(24)
    holed = df.filter(~pl.int_range(pl.len()).is_in([3, 4, 5, 10]))
    out, report = validate_candles(holed, "1h")
    assert out.height == 20
    assert report.gaps == [
        (T0 + timedelta(hours=3), T0 + timedelta(hours=6), 3),
        (T0 + timedelta(hours=10), T0 + timedelta(hours=11), 1),
    ]
    assert report.missing_candles == 4
    meta = report.as_metadata()
    json.dumps(meta)
    assert meta["gaps"] == 2 and meta["missing_candles"] == 4


def test_weekly_grid_is_monday() -> None:
    monday = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    assert monday.weekday() == 0
    validate_candles(make_candles(4, "1w", start=monday), "1w")
    with pytest.raises(CandleValidationError, match="off the 1w grid"):
        validate_candles(make_candles(4, "1w", start=monday + timedelta(days=3)), "1w")


def test_timeframe_mismatch_is_off_grid() -> None:
    with pytest.raises(CandleValidationError, match="off the 1d grid"):
        validate_candles(make_candles(30, "1h"), "1d")


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    dup_rows=st.lists(st.integers(0, 39), max_size=5),
    data=st.data(),
)
def test_repair_recovers_shuffled_duplicated_batch(n: int, seed: int, dup_rows: list[int], data: st.DataObject) -> None:
    good = make_candles(n, "5m", seed=seed)
    order = data.draw(st.permutations(range(n)))
    messy = pl.concat([good[list(order)], good[[r % n for r in dup_rows]]])
    out, report = validate_candles(messy, "5m", repair=True)
    assert out.equals(good)
    assert report.rows == n and report.gaps == []
