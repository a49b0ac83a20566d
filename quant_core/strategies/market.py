"""One market's candles as backtest bars: whole UTC days of a window plus warm-up bars before it."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from quant_core.data.schema import timeframe_minutes, to_utc
from quant_core.strategies.backtest import BacktestError, Bars
from quant_core.units import MINUTES_PER_DAY, MS_PER_MINUTE

DAY = timedelta(days=1)


def bars_per_day(timeframe: str) -> int:
    minutes = timeframe_minutes(timeframe)
    if MINUTES_PER_DAY % minutes:
        raise BacktestError(f"timeframe {timeframe!r}: CEX strategies need candles that divide a day (1m .. 1d)")
    return MINUTES_PER_DAY // minutes


def whole_days(start: datetime, end: datetime) -> int:
    """Days in [start, end); raises naming the dates unless both are UTC midnights."""
    start, end = to_utc(start), to_utc(end)
    for name, t in (("start", start), ("end", end)):
        if (t.hour, t.minute, t.second, t.microsecond) != (0, 0, 0, 0):
            raise BacktestError(f"{name} {t:%Y-%m-%d %H:%M} is not a UTC midnight: CEX strategy windows "
                                "(startDateString, endDateString, endTestDateString) are whole UTC days")
    days = (end - start) // DAY
    if days < 1:
        raise BacktestError(f"the window {start:%Y-%m-%d} .. {end:%Y-%m-%d} holds no whole day")
    return days


def strategy_bars(candles: pl.DataFrame, timeframe: str, start: datetime, end: datetime,
                  warmup_days: float) -> Bars:
    """Bars of [start, end) (every candle present) after up to `warmup_days` of contiguous warm-up bars."""
    bpd = bars_per_day(timeframe)
    days = whole_days(start, end)
    start, end = to_utc(start), to_utc(end)
    step = timeframe_minutes(timeframe) * MS_PER_MINUTE
    ts_col = pl.col("timestamp").dt.epoch("ms")
    first = start - timedelta(days=warmup_days)
    frame = candles.with_columns(_ms=ts_col).filter((pl.col("timestamp") >= first) & (pl.col("timestamp") < end))
    frame = frame.sort("_ms")
    ts = frame["_ms"].to_numpy()
    s_ms = int(start.timestamp() * 1000)
    in_window = ts >= s_ms
    expected = s_ms + step * np.arange(days * bpd)
    got = ts[in_window]
    if got.size != expected.size or not np.array_equal(got, expected):
        missing = np.setdiff1d(expected, got)
        where = f"; the first missing candle opens at {np.datetime64(int(missing[0]), 'ms')}" if missing.size else ""
        raise BacktestError(f"the candles cover {got.size} of the {expected.size} {timeframe} bars of "
                            f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}{where}: fill gaps (quant data import --max-fill, "
                            "the platform's gap policy) or move the window inside the data")
    # warm-up: the contiguous run of bars just before the window (indicators count bars, so no gaps)
    n_warm = int((~in_window).sum())
    warm = ts[:n_warm]
    breaks = np.flatnonzero(np.diff(np.concatenate([warm, [s_ms]])) != step)
    keep = n_warm - (breaks[-1] + 1 if breaks.size else 0)
    rows = frame.slice(n_warm - keep)
    return Bars(rows["_ms"].to_numpy(), *(rows[c].to_numpy().astype(np.float64)
                                           for c in ("open", "high", "low", "close", "volume")),
                window_start=keep, bars_per_day=bpd)
