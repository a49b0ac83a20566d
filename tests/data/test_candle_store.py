"""Parquet candle store: round trip, merge, rejection without damage, atomic replacement."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_core.data.candle_store import ParquetCandleStore
from quant_core.data.price_file import PriceFileSource
from quant_core.data.schema import CANDLE_SCHEMA, Market
from quant_core.data.validation import CandleValidationError

BTC = Market("shipped", "BTC/USD", "1d")
HOURLY = Market("binance", "BTC/USDT", "1h")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def hourly(start: int, stop: int, price: float = 100.0) -> pl.DataFrame:
    """Hourly candles for hours [start, stop) after T0, with a recognisable close."""
    n = stop - start
    close = price + np.arange(start, stop, dtype=float)
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(hours=h) for h in range(start, stop)],
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.ones(n),
        },
        schema=CANDLE_SCHEMA,
    )


def leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.endswith(".tmp"))


def test_round_trip(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path / "candles")
    assert store.markets() == [] and not store.exists(BTC)
    candles = PriceFileSource().fetch(BTC)
    report = store.write(BTC, candles)
    assert report.rows == 1094 and report.gaps == []
    assert store.exists(BTC)
    assert store.path(BTC) == tmp_path / "candles" / "shipped.BTC-USD.1d.parquet"
    assert store.markets() == [BTC]
    back = store.read(BTC)
    assert back.equals(candles)
    assert back.schema == pl.Schema(CANDLE_SCHEMA)
    window = store.read(BTC, start=datetime(2023, 1, 1), end="2023-01-11")
    assert window["timestamp"].to_list() == [datetime(2023, 1, d, tzinfo=UTC) for d in range(1, 11)]


def test_merge_replaces_overlapping_rows(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path)
    store.write(HOURLY, hourly(0, 10))
    store.write(HOURLY, hourly(5, 15, price=500.0))
    back = store.read(HOURLY)
    assert back.height == 15 and back["timestamp"].is_sorted()
    assert back["close"].to_list() == [100.0 + h for h in range(5)] + [500.0 + h for h in range(5, 15)]
    # An earlier batch merges in front; a batch with a hole is stored with the hole (gaps are reported).
    report = store.write(HOURLY, hourly(-3, 0).vstack(hourly(20, 21)))
    assert report.gaps == [(T0, T0 + timedelta(hours=20), 20)]
    assert store.read(HOURLY).height == 19


def test_bad_batch_leaves_stored_file_untouched(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path)
    store.write(HOURLY, hourly(0, 10))
    before = store.path(HOURLY).read_bytes()
    bad = hourly(5, 15).with_columns(
        pl.when(pl.col("timestamp") == T0 + timedelta(hours=12))
        .then(float("nan"))
        .otherwise(pl.col("close"))
        .alias("close")
    )
    with pytest.raises(CandleValidationError, match="NaN"):
        store.write(HOURLY, bad)
    assert store.path(HOURLY).read_bytes() == before
    assert leftovers(tmp_path) == []
    # A bad first batch creates no file at all.
    other = Market("binance", "ETH/USDT", "1h")
    with pytest.raises(CandleValidationError):
        store.write(other, bad)
    assert not store.exists(other)


def test_repair_passes_through(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path)
    messy = pl.concat([hourly(5, 10), hourly(0, 6)])
    with pytest.raises(CandleValidationError, match="repair=True"):
        store.write(HOURLY, messy)
    report = store.write(HOURLY, messy, repair=True)
    assert report.repaired == {"exact_duplicates_dropped": 1, "sorted": 1}
    assert store.read(HOURLY).equals(hourly(0, 10))


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ParquetCandleStore(tmp_path)
    for i in range(3):
        store.write(HOURLY, hourly(i * 5, i * 5 + 5))
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.glob("*.parquet")] == [f"{HOURLY.key}.parquet"]
    before = store.path(HOURLY).read_bytes()

    def crash(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        file.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write(HOURLY, hourly(15, 20))
    assert store.path(HOURLY).read_bytes() == before
    assert leftovers(tmp_path) == []


def test_concurrent_writers_do_not_lose_batches(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            ParquetCandleStore(tmp_path).write(HOURLY, hourly(i * 24, (i + 1) * 24))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read_while_writing() -> None:
        try:
            for _ in range(30):
                if store.exists(HOURLY):
                    frame = store.read(HOURLY)  # always a whole version: a multiple of one batch
                    assert frame.height % 24 == 0 and frame["timestamp"].is_sorted()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=read_while_writing) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.read(HOURLY).equals(hourly(0, 8 * 24))


def test_missing_market_and_foreign_files(tmp_path: Path) -> None:
    store = ParquetCandleStore(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"shipped\.BTC-USD\.1d.*write them first"):
        store.read(BTC)
    (tmp_path / "notes.parquet").write_bytes(b"")
    store.write(HOURLY, hourly(0, 2))
    assert store.markets() == [HOURLY]
