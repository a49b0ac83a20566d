"""Gap policy and resampling for candle batches.

Validation only reports gaps, because whether a missing candle may be made up is a decision about the
data, not a property of it. `GapPolicy` makes that decision explicit and visible: short gaps may be
bridged with flat zero-volume candles (listed, so the fill is never silent), anything longer fails the
batch. `resample_candles` turns fine candles into coarser ones on the same UTC grid the rest of the
package uses, so a resampled series can be stored and compared with one fetched at that timeframe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import polars as pl

from quant_core.data.schema import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    TIMEFRAME_MINUTES,
    empty_candles,
    format_minutes,
    grid_offset_ms,
    timeframe_for_minutes,
    timeframe_minutes,
    timeframe_ms,
    to_epoch_ms,
)
from quant_core.data.validation import find_gaps, validate_candles
from quant_core.units import MS_PER_MINUTE

Gap = tuple[datetime, datetime, int]
"""A half-open [start, end) range of missing candle open times and how many candles it spans."""

_EXAMPLES = 5


class GapError(ValueError):
    """A batch whose gaps are longer than the gap policy allows; `gaps` lists the offending ones."""

    def __init__(self, message: str, gaps: list[Gap]) -> None:
        super().__init__(message)
        self.gaps = list(gaps)


@dataclass(frozen=True)
class GapPolicy:
    """How an import treats missing candles.

    `max_fill_candles`: gaps of at most this many missing candles are filled with flat candles
    (open = high = low = close = the previous close, volume 0) and listed in the result; 0 fills nothing.
    `on_larger`: what a longer gap does - "fail" (default) rejects the batch, "keep" leaves it missing
    (reported as a gap, as validation does).
    """

    max_fill_candles: int = 0
    on_larger: Literal["fail", "keep"] = "fail"

    def __post_init__(self) -> None:
        if not isinstance(self.max_fill_candles, int) or self.max_fill_candles < 0:
            raise ValueError(f"GapPolicy.max_fill_candles must be an integer >= 0, got {self.max_fill_candles!r}")
        if self.on_larger not in ("fail", "keep"):
            raise ValueError(f"GapPolicy.on_larger must be 'fail' or 'keep', got {self.on_larger!r}")


def format_gap(gap: Gap) -> str:
    """'2024-01-01T05:00Z..2024-01-01T07:00Z (2 candles)': a gap as people read it in messages."""
    start, end, n = gap
    fmt = "%Y-%m-%dT%H:%MZ"
    return f"{start.strftime(fmt)}..{end.strftime(fmt)} ({n} candle{'s' if n != 1 else ''})"


def apply_gap_policy(
    candles: pl.DataFrame, timeframe: str, policy: GapPolicy, *, flag_column: str | None = None
) -> tuple[pl.DataFrame, list[Gap], list[Gap]]:
    """Fill the gaps `policy` allows; fail (or keep) the others.

    `candles` must be valid, sorted candles of `timeframe` (validate first). Returns (candles,
    filled gaps, gaps left missing). Filled candles are flagged by the returned list; with `flag_column`
    a boolean column of that name also marks them (True = made up), at the cost of leaving the schema.
    Raises GapError naming the gaps over the limit and the setting to change when `on_larger="fail"`.
    """
    gaps = find_gaps(candles["timestamp"], timeframe)
    fillable = [g for g in gaps if g[2] <= policy.max_fill_candles]
    larger = [g for g in gaps if g[2] > policy.max_fill_candles]
    if larger and policy.on_larger == "fail":
        biggest = max(n for _, _, n in larger)
        shown = "; ".join(format_gap(g) for g in larger[:_EXAMPLES])
        more = f" and {len(larger) - _EXAMPLES} more" if len(larger) > _EXAMPLES else ""
        raise GapError(
            f"{len(larger)} gap(s) in the {timeframe} candles are longer than GapPolicy(max_fill_candles="
            f"{policy.max_fill_candles}) allows: {shown}{more}; fix: re-fetch the missing candles, raise "
            f"max_fill_candles to at least {biggest} to fill them with flat zero-volume candles, or set "
            "GapPolicy(on_larger='keep') to leave them missing",
            larger,
        )
    frame = candles.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())
    if flag_column is not None:
        frame = frame.with_columns(pl.lit(False).alias(flag_column))
    if not fillable:
        return frame, [], larger

    step = timeframe_ms(timeframe)
    ms = frame["timestamp"].dt.epoch("ms").to_numpy()
    close = frame["close"].to_numpy()
    starts = np.array([to_epoch_ms(s) for s, _, _ in fillable], dtype=np.int64)
    counts = np.array([n for _, _, n in fillable], dtype=np.int64)
    # Previous candle of each gap: the one opening one step before the gap starts.
    prev_idx = np.searchsorted(ms, starts - step)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    fill_ms = np.repeat(starts, counts) + offsets * step
    fill_price = np.repeat(close[prev_idx], counts)
    filled = pl.DataFrame(
        {
            "timestamp": pl.Series(fill_ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "open": fill_price,
            "high": fill_price,
            "low": fill_price,
            "close": fill_price,
            "volume": np.zeros(len(fill_ms)),
        },
        schema=CANDLE_SCHEMA,
    )
    if flag_column is not None:
        filled = filled.with_columns(pl.lit(True).alias(flag_column))
    return pl.concat([frame, filled]).sort("timestamp"), fillable, larger


def infer_timeframe(timestamps: pl.Series) -> str:
    """The timeframe of a candle series: its most common spacing, which must be a known timeframe.

    The mode (not the minimum or the mean) so a few gaps or stray rows cannot change the answer.
    """
    ms = timestamps.dt.epoch("ms") if isinstance(timestamps.dtype, pl.Datetime) else timestamps.cast(pl.Int64)
    diffs = ms.drop_nulls().unique().sort().diff().drop_nulls()
    diffs = diffs.filter(diffs > 0)
    if diffs.len() == 0:
        raise ValueError("cannot infer the timeframe from fewer than two distinct timestamps; pass timeframe=")
    step_ms = int(diffs.mode().sort()[0])
    if step_ms % MS_PER_MINUTE:
        raise ValueError(f"the candles' usual spacing is {step_ms} ms, not whole minutes; pass timeframe=")
    minutes = step_ms // MS_PER_MINUTE
    name = timeframe_for_minutes(minutes)
    if name is None:
        raise ValueError(
            f"the candles' usual spacing is {format_minutes(minutes)}, which is not a supported timeframe; "
            "resample them to one of " + ", ".join(TIMEFRAME_MINUTES)
        )
    return name


def resample_candles(
    candles: pl.DataFrame,
    timeframe: str,
    *,
    source_timeframe: str | None = None,
    keep_incomplete: bool = False,
) -> pl.DataFrame:
    """Aggregate candles into a coarser `timeframe` on its UTC grid (weeks open Monday 00:00 UTC).

    open = first, high = max, low = min, close = last, volume = sum. A bucket at either end that the
    data does not reach from its start (first bucket) or to its end (last bucket) is dropped unless
    `keep_incomplete`, because its open or close would not be the period's; buckets with missing
    candles inside are kept, as gaps are the gap policy's business. Defining completeness by coverage
    of the edges (not by a candle count) makes resampling compose: 1m -> 1h equals 1m -> 15m -> 1h.
    `source_timeframe` defaults to the candles' most common spacing. Returns validated candles.
    """
    target_ms = timeframe_ms(timeframe)
    if candles.height == 0:
        return empty_candles()
    src = source_timeframe or infer_timeframe(candles["timestamp"])
    frame, _ = validate_candles(candles, src)
    src_ms = timeframe_ms(src)
    if target_ms < src_ms or target_ms % src_ms:
        raise ValueError(
            f"cannot resample {src} candles to {timeframe}: the target must be a whole multiple of the "
            f"source timeframe ({timeframe_minutes(timeframe)} min is not a multiple of {timeframe_minutes(src)} min)"
        )
    offset = grid_offset_ms(timeframe)
    if (offset - grid_offset_ms(src)) % src_ms:
        raise ValueError(f"the {timeframe} grid does not line up with the {src} grid; resample from a finer timeframe")
    if src == timeframe:
        return frame
    t = pl.col("timestamp").dt.epoch("ms")
    bucket = ((t - offset) // target_ms) * target_ms + offset
    out = (
        frame.with_columns(_b=bucket, _t=t)
        .group_by("_b", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            _first=pl.col("_t").min(),
            _last=pl.col("_t").max(),
        )
        .sort("_b")
    )
    if not keep_incomplete:
        n = out.height
        idx = pl.int_range(pl.len())
        head_short = (idx == 0) & (pl.col("_first") > pl.col("_b"))
        tail_short = (idx == n - 1) & (pl.col("_last") + src_ms < pl.col("_b") + target_ms)
        out = out.filter(~(head_short | tail_short))
    out = out.with_columns(timestamp=pl.from_epoch(pl.col("_b"), time_unit="ms").dt.replace_time_zone("UTC"))
    resampled, _ = validate_candles(out.select(CANDLE_COLUMNS), timeframe)
    return resampled
