"""Binance public-data kline files: the file-name pattern and the 12-column kline CSV reader.

Binance ships history as one headerless (or headed) CSV per ZIP, with millisecond open times before
2025 and microsecond ones after; this module reads exactly that layout and nothing else.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import polars as pl

from quant_core.data.import_files import (
    LINE_COLUMN,
    CandleImportError,
    _first_line,
    _is_number,
    _read_text_bytes,
)
from quant_core.data.import_values import TimeUnit, _as_schema, _epoch_to_utc, _numbers, epoch_unit
from quant_core.data.schema import CANDLE_COLUMNS, TIMEFRAME_MINUTES
from quant_core.units import MS_PER_MINUTE

BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)

# Binance interval names -> this package's timeframes (the others, such as 3m or 1mo, are not modelled).
_BINANCE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1mo",
)
_BINANCE_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>" + "|".join(sorted(_BINANCE_INTERVALS, key=len, reverse=True)) + r")-",
)


def binance_file_info(path: str | Path) -> tuple[str | None, str | None]:
    """(symbol, timeframe) from a Binance public-data file name such as 'BTCUSDT-1h-2024-01.zip'.

    (None, None) when the name does not follow that pattern; raises for a Binance interval this package
    does not model (3m, 2h, 1mo, ...), since guessing a different timeframe would corrupt the grid.
    """
    m = _BINANCE_NAME_RE.match(Path(path).name)
    if not m:
        return None, None
    interval = m.group("interval")
    if interval not in TIMEFRAME_MINUTES:
        raise CandleImportError(
            f"{path}: Binance interval {interval!r} is not a supported timeframe; download one of "
            + ", ".join(TIMEFRAME_MINUTES)
            + " (or import a finer one with resample_to=...)"
        )
    return m.group("symbol"), interval


def _read_binance(
    path: Path, max_unpacked_bytes: int | None = None
) -> tuple[pl.DataFrame, TimeUnit, str | None]:
    """Binance klines as (candles with their LINE_COLUMN, epoch unit of the file, timeframe implied by
    close_time - open_time)."""
    data = _read_text_bytes(path, max_unpacked_bytes)
    fields = _first_line(data)
    header = not _is_number(fields[0])
    n = len(fields)
    if n < 6:
        raise CandleImportError(f"{path}: {n} column(s); Binance klines have 12 (open_time, open, ..., ignore)")
    names = list(BINANCE_KLINE_COLUMNS[:n]) + [f"extra_{i}" for i in range(n - len(BINANCE_KLINE_COLUMNS))]
    try:
        raw = pl.read_csv(io.BytesIO(data), has_header=header, new_columns=names, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise CandleImportError(f"{path}: cannot parse the kline CSV: {exc}") from exc
    where = str(path)
    open_time = raw["open_time"].str.strip_chars().cast(pl.Int64, strict=False)
    try:
        unit = epoch_unit(open_time, what="open_time")
    except CandleImportError as exc:
        raise CandleImportError(f"{where}: {exc}") from None
    if unit not in ("ms", "us"):
        raise CandleImportError(
            f"{where}: open_time values look like epoch {unit}; Binance klines use milliseconds (before 2025) "
            "or microseconds (2025 on) - is this a Binance kline file?"
        )
    frame = pl.DataFrame([_epoch_to_utc(open_time, unit)] + [_numbers(raw[c], c, where) for c in CANDLE_COLUMNS[1:]])
    frame = _as_schema(frame).with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + (2 if header else 1)).alias(LINE_COLUMN)
    )
    implied: str | None = None
    if "close_time" in raw.columns:
        close_time = raw["close_time"].str.strip_chars().cast(pl.Int64, strict=False)
        span = (close_time - open_time).drop_nulls()
        if span.len():
            per_ms = 1 if unit == "ms" else 1000
            # close_time is the last instant of the candle: open + step - 1 unit.
            step_ms = (int(span.median()) + 1) / per_ms  # type: ignore[arg-type]
            minutes = step_ms / MS_PER_MINUTE
            implied = next((tf for tf, m in TIMEFRAME_MINUTES.items() if abs(m - minutes) < 1e-9), None)
    return frame, unit, implied


def read_binance_klines(path: str | Path, *, max_unpacked_bytes: int | None = None) -> pl.DataFrame:
    """Candles from a Binance public-data kline file (a CSV inside a ZIP, or the bare CSV).

    Headerless or with a header row; open times in milliseconds (files before 2025) or microseconds
    (2025 on), detected per file from their magnitude. Returns the candle columns in CANDLE_SCHEMA
    (timestamp = open time, ms UTC), unvalidated and in file order: `import_candles` validates.
    The timeframe is in the file name (`binance_file_info`) or the spacing (`infer_timeframe`).
    A ZIP member may unpack to at most `max_unpacked_bytes` (default import_files.MAX_UNPACKED_BYTES).
    """
    frame, _, _ = _read_binance(Path(path), max_unpacked_bytes)
    return frame.drop(LINE_COLUMN)
