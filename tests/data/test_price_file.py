"""Long price files (shipped, shared, Parquet, bad) and the candle source over them."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from quant_core.data.price_file import (
    LONG_PRICE_SCHEMA,
    PriceFileError,
    PriceFileSource,
    infer_step_minutes,
    read_long_prices,
    shipped_prices_path,
)
from quant_core.data.schema import CANDLE_SCHEMA, CandleSource, Market
from quant_core.data.validation import validate_candles

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_daily_prices.csv"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason=f"shared data folder absent: {SHARED} not found (only in the full workspace)"
)


def utc(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# ------------------------------------------------------------------------------------ read_long_prices


def test_shipped_file() -> None:
    path = shipped_prices_path()
    assert path.is_file() and path.name == "real_daily_prices_2022_2024.csv"
    assert path.read_text().splitlines()[0] == "date,token,price_usd"
    df = read_long_prices(path)
    assert df.schema == pl.Schema(LONG_PRICE_SCHEMA)
    assert df.height == 3 * 1094
    assert sorted(df["token"].unique()) == ["BTC", "ETH", "USDC"]
    assert df["timestamp"].min() == utc(2022, 1, 1)
    assert df["timestamp"].max() == utc(2024, 12, 29)
    assert df.equals(df.sort("timestamp", "token"))
    assert df.row(0) == (utc(2022, 1, 1), "BTC", 46250.0)
    assert df.row(-1) == (utc(2024, 12, 29), "USDC", 1.0019)


@needs_shared
def test_shared_file_and_shipped_subset() -> None:
    df = read_long_prices(SHARED)
    assert df.height == 9684
    counts = dict(df.group_by("token").len().iter_rows())
    assert counts == {
        "BTC": 1739,
        "USDC": 1739,
        "PAXG": 1514,
        "ETH": 1308,
        "SOL": 1308,
        "XRP": 1097,
        "S": 725,
        "AERO": 254,
    }
    subset = df.filter(
        pl.col("token").is_in(["BTC", "ETH", "USDC"])
        & pl.col("timestamp").is_between(utc(2022, 1, 1), utc(2024, 12, 29))
    )
    assert subset.equals(read_long_prices(shipped_prices_path()))
    # Gaps are real in the shared file: S skips days, and the source must keep them missing.
    src = PriceFileSource(SHARED)
    _, report = validate_candles(src.fetch(Market("shipped", "S/USD", "1d")), "1d")
    assert report.gaps and report.missing_candles == 4


@pytest.mark.parametrize("name", ["prices[1].csv", "prices[btc]*?.csv.gz", "prices[1].parquet"])
def test_any_legal_file_name(tmp_path: Path, name: str) -> None:
    """Polars would take [ ] * ? in a path as a glob pattern and find no file; names are read literally."""
    expected = read_long_prices(shipped_prices_path()).head(30)
    path = tmp_path / name
    if name.endswith(".parquet"):
        expected.write_parquet(path)
    else:
        text = expected.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("date")).select(
            "date", "token", "price_usd").write_csv()
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    assert read_long_prices(path).equals(expected)


def test_parquet_and_iso_timestamps(tmp_path: Path) -> None:
    expected = read_long_prices(shipped_prices_path()).head(30)
    pq = tmp_path / "prices.parquet"
    # Naive microsecond timestamps are taken as UTC.
    expected.with_columns(pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("us")).write_parquet(pq)
    assert read_long_prices(pq).equals(expected)

    csv = write_csv(
        tmp_path / "iso.csv",
        """
date,token,price_usd
2022-01-01T00:00:00Z,BTC,1.5
2022-01-02T01:00:00+01:00,BTC,2
2022-01-03 00:00:00,BTC,3
2022-01-04,BTC,4
""",
    )
    df = read_long_prices(csv)
    assert df["timestamp"].to_list() == [utc(2022, 1, d) for d in (1, 2, 3, 4)]
    assert df["price_usd"].to_list() == [1.5, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date,token\n2022-01-01,BTC\n", "missing column 'price_usd'"),
        ("day,token,price_usd\n2022-01-01,BTC,1\n", "missing column 'date' (or 'timestamp')"),
        (
            "date,token,price_usd\n2022-01-01,BTC,1\n2022-01-02,BTC,-5\n",
            "non-positive 'price_usd': data row 2 (line 3): 2022-01-02T00:00:00Z 'BTC' price_usd=-5.0",
        ),
        ("date,token,price_usd\n2022-01-01,BTC,abc\n", "missing or non-numeric 'price_usd': data row 1"),
        (
            "date,token,price_usd\nnot-a-date,BTC,1\n",
            "unreadable or empty 'date': data row 1 (line 2): 'not-a-date'",
        ),
        ("date,token,price_usd\n2022-01-01,,1\n", "empty 'token'"),
        (
            "date,token,price_usd\n2022-01-01,BTC,1\n2022-01-01,ETH,2\n2022-01-01T00:00:00Z,BTC,1.1\n",
            "1 duplicate (timestamp, token) pair(s) over 2 rows, e.g. (2022-01-01T00:00:00Z, 'BTC') (rows [1, 3])",
        ),
    ],
)
def test_bad_csv_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PriceFileError) as info:
        read_long_prices(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_bad_parquet_and_paths(tmp_path: Path) -> None:
    pq = tmp_path / "bad.parquet"
    pl.DataFrame({"timestamp": [utc(2022, 1, 1)], "token": ["BTC"], "price": [1.0]}).write_parquet(pq)
    with pytest.raises(PriceFileError, match="missing column 'price_usd'.*timestamp,token,price_usd"):
        read_long_prices(pq)
    pl.DataFrame({"timestamp": ["x"], "token": ["BTC"], "price_usd": [0.0]}).write_parquet(pq)
    with pytest.raises(PriceFileError, match="unreadable"):
        read_long_prices(pq)
    with pytest.raises(FileNotFoundError):
        read_long_prices(tmp_path / "nope.csv")
    other = tmp_path / "prices.txt"
    other.write_text("x")
    with pytest.raises(PriceFileError, match="unknown price file type"):
        read_long_prices(other)


def test_infer_step(tmp_path: Path) -> None:
    assert infer_step_minutes(read_long_prices(shipped_prices_path())) == 1440
    minutes = pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, 1) + timedelta(minutes=i) for i in (0, 1, 2, 5, 6)],
            "token": ["A"] * 5,
            "price_usd": [1.0] * 5,
        }
    )
    assert infer_step_minutes(minutes) == 1  # a gap is a multiple of the step: fine
    irregular = minutes.with_columns(pl.col("timestamp") + pl.Series([0, 0, 0, 30_000, 30_000]).cast(pl.Duration("ms")))
    with pytest.raises(PriceFileError, match="not whole multiples of the inferred step 1m"):
        infer_step_minutes(irregular)
    with pytest.raises(PriceFileError, match="no token has two timestamps"):
        infer_step_minutes(minutes.head(1))


# ------------------------------------------------------------------------------------- PriceFileSource


def test_source_markets() -> None:
    src = PriceFileSource()
    assert isinstance(src, CandleSource)
    assert [m.key for m in src.markets()] == [
        "shipped.BTC-USD.1d",
        "shipped.ETH-USD.1d",
        "shipped.USDC-USD.1d",
    ]
    assert PriceFileSource(exchange="file", quote="USDT").markets()[0] == Market("file", "BTC/USDT", "1d")
    with pytest.raises(ValueError, match="timeframe '1h' does not match .* one price every 1d.*use timeframe '1d'"):
        src.markets("1h")
    with pytest.raises(ValueError, match="Market.exchange"):
        PriceFileSource(exchange="Bad Name")


def test_source_btc_candles() -> None:
    src = PriceFileSource()
    candles = src.fetch(Market("shipped", "BTC/USD", "1d"))
    assert candles.schema == pl.Schema(CANDLE_SCHEMA)
    assert candles.height == 1094
    # The first snapshot (2022-01-01) closes the candle opened a day earlier.
    assert candles["timestamp"][0] == utc(2021, 12, 31)
    assert candles["timestamp"][-1] == utc(2024, 12, 28)
    prices = read_long_prices(shipped_prices_path()).filter(pl.col("token") == "BTC")
    assert candles["close"].to_list() == prices["price_usd"].to_list()
    assert candles["open"][0] == candles["close"][0]
    assert candles["open"][1:].to_list() == candles["close"][:-1].to_list()
    checks = candles.select(
        hi=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        lo=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
        vol=(pl.col("volume") == 0.0).all(),
        step=(pl.col("timestamp").diff().drop_nulls() == timedelta(days=1)).all(),
    )
    assert checks.row(0) == (True, True, True, True)


def test_source_window_is_half_open() -> None:
    src = PriceFileSource()
    m = Market("shipped", "ETH/USD", "1d")
    part = src.fetch(m, start=datetime(2023, 1, 1), end=date(2023, 2, 1))  # naive/date = UTC
    assert part.height == 31
    assert part["timestamp"][0] == utc(2023, 1, 1) and part["timestamp"][-1] == utc(2023, 1, 31)
    assert part["open"][0] != part["close"][0]  # opens at the previous snapshot, even at a window edge
    assert src.fetch(m, start=utc(2030, 1, 1)).height == 0


def test_source_keeps_gaps_missing(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "gappy.csv",
        """
date,token,price_usd
2024-01-01,X,10
2024-01-02,X,11
2024-01-05,X,14
2024-01-06,X,15
""",
    )
    candles = PriceFileSource(path).fetch(Market("shipped", "X/USD", "1d"))
    assert candles["timestamp"].to_list() == [
        utc(2023, 12, 31),
        utc(2024, 1, 1),
        utc(2024, 1, 4),
        utc(2024, 1, 5),
    ]
    # After a gap the open price is unknown, so the candle opens at its own close rather than a stale price.
    assert candles["open"].to_list() == [10.0, 10.0, 14.0, 14.0]
    _, report = validate_candles(candles, "1d")
    assert report.gaps == [(utc(2024, 1, 2), utc(2024, 1, 4), 2)]


def test_source_rejects_foreign_markets(tmp_path: Path) -> None:
    src = PriceFileSource()
    with pytest.raises(ValueError, match="token 'DOGE' is not in .* it has: BTC, ETH, USDC"):
        src.fetch(Market("shipped", "DOGE/USD", "1d"))
    with pytest.raises(ValueError, match="not from this source"):
        src.fetch(Market("binance", "BTC/USD", "1d"))
    with pytest.raises(ValueError, match="not from this source"):
        src.fetch(Market("shipped", "BTC/EUR", "1d"))
    with pytest.raises(ValueError, match="timeframe '4h' does not match"):
        src.fetch(Market("shipped", "BTC/USD", "4h"))
    hourly = write_csv(
        tmp_path / "hourly.csv",
        "date,token,price_usd\n2024-01-01T00:00:00Z,X,1\n2024-01-01T01:00:00Z,X,2\n2024-01-01T02:00:00Z,X,3",
    )
    with pytest.raises(ValueError, match="timeframe '1d' does not match hourly.csv, which has one price every 1h"):
        PriceFileSource(hourly).markets()
    assert PriceFileSource(hourly).fetch(Market("shipped", "X/USD", "1h")).height == 3
