"""Turning raw file columns into candle values: epoch-unit detection, time parsing and number coercion.

Offline files spell times as ISO strings, datetimes or epoch s/ms/us/ns numbers and prices as text
or numbers; these helpers make one Datetime(ms, UTC) / Float64 reading of them, with null where a
value is unreadable (so the import can reject and count it) and an error where guessing would lie.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from quant_core.data.import_files import CandleImportError
from quant_core.data.price_file import parse_utc_times
from quant_core.data.schema import CANDLE_SCHEMA
from quant_core.data.validation import to_utc_ms

TimeUnit = Literal["s", "ms", "us", "ns"]

# Magnitude bands of epoch integers around today: seconds ~1.7e9, ms ~1.7e12, us ~1.7e15, ns ~1.7e18.
_UNIT_BANDS: tuple[tuple[float, TimeUnit], ...] = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
_MS_PER_UNIT: dict[str, float] = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


def epoch_unit(values: pl.Series, *, what: str = "timestamp") -> TimeUnit:
    """The unit of epoch numbers from their magnitude (s, ms, us or ns around the present era).

    Every value must fall in the same band: a file mixing units is an error, not a guess.
    """
    present = values.drop_nulls()
    if present.dtype.is_float():
        present = present.filter(present.is_finite())
    if present.len() == 0:
        raise CandleImportError(f"no {what} values to read")

    def band(v: float) -> TimeUnit:
        for limit, unit in _UNIT_BANDS:
            if v < limit:
                return unit
        return "ns"

    lo, hi = band(float(present.abs().min())), band(float(present.abs().max()))  # type: ignore[arg-type]
    if lo != hi:
        raise CandleImportError(
            f"{what} values mix epoch units ({lo} and {hi} by magnitude); fix: convert them to one unit"
        )
    return lo


def _epoch_to_utc(values: pl.Series, unit: TimeUnit) -> pl.Series:
    """Epoch numbers in `unit` as Datetime(ms, UTC).

    A value that is not a whole millisecond becomes null (an unreadable time) rather than being
    truncated onto the grid, where it would pass for a real candle open time.
    """
    scale = {"s": 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    if values.dtype.is_integer():
        v = values.cast(pl.Int64)
        if unit in ("s", "ms"):
            ms, whole = v * scale, pl.repeat(True, v.len(), eager=True)
        else:
            ms, whole = v // scale, v % scale == 0
    else:
        f = values.cast(pl.Float64)
        scaled = f * scale if unit in ("s", "ms") else f / scale
        rounded = scaled.round(0)
        ms, whole = rounded.cast(pl.Int64, strict=False), (scaled - rounded).abs() < 1e-6
    frame = pl.DataFrame({"ms": ms, "whole": whole.fill_null(False)})
    out = frame.select(pl.when(pl.col("whole")).then(pl.col("ms")).alias("ms"))["ms"]
    return pl.from_epoch(out, time_unit="ms").dt.replace_time_zone("UTC").alias("timestamp")


_NUMERIC_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def _times(column: pl.Series, unit: TimeUnit | None, where: str) -> tuple[pl.Series, TimeUnit | None]:
    """Any reasonable time column as Datetime(ms, UTC) (null where unreadable), plus the epoch unit used."""
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        ts, why = to_utc_ms(column)
        if ts is None:
            raise CandleImportError(f"{where}: {why}")
        return ts.alias("timestamp"), None
    if dtype == pl.String:
        present = column.drop_nulls().str.strip_chars()
        present = present.filter(present != "")
        if present.len() and bool(present.str.contains(_NUMERIC_RE).all()):
            numbers = column.str.strip_chars().cast(pl.Float64, strict=False)
            if bool(present.str.contains(r"^\s*[+-]?\d+\s*$").all()):
                numbers = column.str.strip_chars().cast(pl.Int64, strict=False)
            column, dtype = numbers, numbers.dtype
        else:
            return parse_utc_times(column).alias("timestamp"), None
    if dtype.is_numeric():
        try:
            used = unit or epoch_unit(column)
        except CandleImportError as exc:
            raise CandleImportError(f"{where}: {exc}") from None
        return _epoch_to_utc(column, used), used
    raise CandleImportError(
        f"{where}: the time column has dtype {dtype}; expected ISO times, epoch numbers or datetimes"
    )


def _numbers(column: pl.Series, name: str, where: str) -> pl.Series:
    """A price/volume column as Float64; unreadable text becomes null (and is rejected, with a count)."""
    if column.dtype == pl.String:
        return column.str.strip_chars().cast(pl.Float64, strict=False).alias(name)
    if column.dtype.is_numeric() or column.dtype == pl.Null:
        return column.cast(pl.Float64).alias(name)
    raise CandleImportError(f"{where}: column {column.name!r} ({name}) has dtype {column.dtype}; expected numbers")


def _as_schema(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())
