"""Candle validation: every batch passes here before it is stored or simulated.

Bad candles silently corrupt a backtest, so problems are either repaired in ways that cannot change
the market's story (sorting, dropping exact repeats, widening a high/low that does not cover open and
close) or rejected with a message that says what is wrong, where, and how to fix it. Gaps are
reported, never filled: how to treat missing candles is a policy decision made elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from quant_core.data.schema import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    PRICE_COLUMNS,
    grid_offset_ms,
    timeframe_ms,
)

_EXAMPLES = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch milliseconds stop at year 2286 below this; larger integers are micro- or nanoseconds.
_MAX_EPOCH_MS = 10**13


class CandleValidationError(ValueError):
    """A candle batch that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], timeframe: str = "", rows: int = 0) -> None:
        self.problems = list(problems)
        self.timeframe = timeframe
        self.rows = rows
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {rows} {timeframe} candle(s):\n{lines}")

    def __reduce__(self) -> tuple[type[CandleValidationError], tuple[list[str], str, int]]:
        # Survives pickling (multiprocess executors ship errors between processes).
        return (type(self), (self.problems, self.timeframe, self.rows))


@dataclass
class ValidationReport:
    """What validation saw in a batch: extent, gaps (half-open [start, end) of missing open times,
    with the number of missing candles), what was repaired, and a note per repaired problem."""

    rows: int
    first: datetime | None
    last: datetime | None
    gaps: list[tuple[datetime, datetime, int]] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def missing_candles(self) -> int:
        """Total candles missing inside [first, last]."""
        return sum(n for _, _, n in self.gaps)

    def as_metadata(self, max_gaps: int = 20) -> dict[str, Any]:
        """JSON-safe summary, for asset metadata and logs."""
        return {
            "rows": self.rows,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "gaps": len(self.gaps),
            "missing_candles": self.missing_candles,
            "gap_list": [[s.isoformat(), e.isoformat(), n] for s, e, n in self.gaps[:max_gaps]],
            "repaired": dict(self.repaired),
            "problems": list(self.problems),
        }


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=int(ms))


def _fmt_ms(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def _examples(ts: pl.Series) -> str:
    """A few example timestamps of the offending rows, for the message."""
    values = ts.drop_nulls().head(_EXAMPLES).cast(pl.Int64).to_list()
    if not values:
        return "(timestamp missing)"
    return ", ".join(_fmt_ms(v) for v in values)


def _value_examples(rows: pl.DataFrame, columns: tuple[str, ...], bad: Callable[[float | None], bool]) -> str:
    """'2024-01-01T05:00:00Z close=nan' for a few offending rows: the time and each bad value with its column,
    so a person can find the row and see what is wrong with it."""
    out = []
    for r in rows.head(_EXAMPLES).iter_rows(named=True):
        ts = r["timestamp"]
        when = (ts.strftime("%Y-%m-%dT%H:%M:%S") + "Z") if ts is not None else "(timestamp missing)"
        shown = [f"{c}={'null' if r[c] is None else repr(r[c])}" for c in columns if bad(r[c])]
        out.append(" ".join([when, *shown]))
    return ", ".join(out)


def to_utc_ms(column: pl.Series, name: str = "timestamp") -> tuple[pl.Series | None, str | None]:
    """Cast a time column to Datetime(ms, UTC): naive datetimes are UTC, integers are epoch ms.

    Returns (series, None) or (None, reason). Sub-millisecond parts are kept out of the cast's way by
    the caller's grid check (a truncated value would otherwise look on-grid).
    """
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime):
        out = column
        if dtype.time_zone is None:
            out = out.dt.replace_time_zone("UTC")
        elif dtype.time_zone != "UTC":
            out = out.dt.convert_time_zone("UTC")
        return out.dt.cast_time_unit("ms").alias(name), None
    if dtype == pl.Date:
        return column.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias(name), None
    if dtype.is_integer():
        big = column.drop_nulls().abs().max()
        if big is not None and int(big) >= _MAX_EPOCH_MS:  # type: ignore[arg-type]
            return None, (
                f"column {name!r} holds integers up to {big}, too large for epoch milliseconds "
                "(they look like micro- or nanoseconds); divide to milliseconds first"
            )
        out = pl.from_epoch(column.cast(pl.Int64), time_unit="ms").dt.replace_time_zone("UTC")
        return out.alias(name), None
    return None, (
        f"column {name!r} has dtype {dtype}; expected a datetime (naive = UTC), a date, or integer epoch milliseconds"
    )


def _sub_ms_mask(column: pl.Series) -> pl.Series | None:
    """Rows whose time has a part finer than a millisecond (only possible for us/ns datetimes)."""
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit in ("us", "ns"):
        per_ms = 1_000 if dtype.time_unit == "us" else 1_000_000
        return (column.dt.epoch(dtype.time_unit) % per_ms != 0).fill_null(False)
    return None


def _coerce(df: pl.DataFrame, timeframe: str) -> tuple[pl.DataFrame, pl.Series | None]:
    """Select the schema columns and cast them; raise at once if that is impossible."""
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"expected a polars DataFrame of candles, got {type(df).__name__}")
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise CandleValidationError(
            [
                f"missing column(s) {', '.join(repr(c) for c in missing)} (found {df.columns}); "
                f"fix: provide {', '.join(CANDLE_COLUMNS)} with timestamp = candle open time"
            ],
            timeframe=timeframe,
            rows=df.height,
        )
    problems: list[str] = []
    sub_ms = _sub_ms_mask(df["timestamp"])
    ts, why = to_utc_ms(df["timestamp"])
    if why:
        problems.append(f"{why}")
    cols: list[pl.Series] = [ts] if ts is not None else []
    for name in CANDLE_COLUMNS[1:]:
        col = df[name]
        if col.dtype == pl.Float64:
            cols.append(col)
        elif col.dtype.is_numeric():
            cols.append(col.cast(pl.Float64))
        else:
            problems.append(f"column {name!r} has dtype {col.dtype}; expected numbers (Float64)")
    if problems:
        raise CandleValidationError(
            [p + "; fix: cast the column before validation" for p in problems],
            timeframe=timeframe,
            rows=df.height,
        )
    return pl.DataFrame(cols), sub_ms


def validate_candles(
    df: pl.DataFrame, timeframe: str, *, repair: bool = False
) -> tuple[pl.DataFrame, ValidationReport]:
    """Check a candle batch; return it in schema order and dtypes, sorted, with a report.

    Raises CandleValidationError listing every problem. With `repair=True` the harmless problems
    (unsorted rows, exact duplicate rows, high/low not covering open/close) are fixed and counted in
    `report.repaired`; NaN/null, non-positive prices, negative volume, conflicting duplicates and
    off-grid timestamps always raise.
    """
    step = timeframe_ms(timeframe)
    offset = grid_offset_ms(timeframe)
    frame, sub_ms = _coerce(df, timeframe)
    rows = frame.height

    fatal: list[str] = []
    fixable: list[tuple[str, int, str]] = []  # (repair key, count, description)
    ts = frame["timestamp"]

    # Missing values: nothing sensible can be made up for them here.
    for name in CANDLE_COLUMNS:
        col = frame[name]
        bad = col.is_null()
        if name != "timestamp":
            bad = bad | col.is_nan().fill_null(False) | col.is_infinite().fill_null(False)
        n = int(bad.sum())
        if n:
            examples = (_examples(ts.filter(bad)) if name == "timestamp" else
                        _value_examples(frame.filter(bad), (name,), lambda v: v is None or not math.isfinite(v)))
            fatal.append(
                f"{n} row(s) with null/NaN/inf {name!r} (e.g. {examples}); "
                "fix: drop or re-fetch those candles (missing values are never filled silently)"
            )

    finite = pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in CANDLE_COLUMNS[1:]])
    good = frame.filter(finite & pl.col("timestamp").is_not_null())

    nonpos = good.filter(pl.min_horizontal(*PRICE_COLUMNS) <= 0)
    if nonpos.height:
        fatal.append(
            f"{nonpos.height} row(s) with a non-positive price (open/high/low/close <= 0) "
            f"(e.g. {_value_examples(nonpos, PRICE_COLUMNS, lambda v: v is not None and v <= 0)}); "
            "fix: the source returned bad prices, drop or re-fetch those candles"
        )
    negvol = good.filter(pl.col("volume") < 0)
    if negvol.height:
        fatal.append(
            f"{negvol.height} row(s) with negative volume "
            f"(e.g. {_value_examples(negvol, ('volume',), lambda v: v is not None and v < 0)}); "
            "fix: drop or re-fetch those candles"
        )

    off = (pl.col("timestamp").dt.epoch("ms") - offset) % step != 0
    off_rows = frame.filter(off.fill_null(False))
    n_off = off_rows.height
    if sub_ms is not None:
        extra = frame.filter(sub_ms & ~off.fill_null(False))
        n_off += extra.height
        off_rows = pl.concat([off_rows, extra])
    if n_off:
        grid = "UTC epoch" if not offset else "Monday 00:00 UTC"
        fatal.append(
            f"{n_off} timestamp(s) off the {timeframe} grid (e.g. {_examples(off_rows['timestamp'])}); "
            f"fix: timestamps must be candle OPEN times on whole {timeframe} steps from the {grid} - "
            "check the timeframe, or resample the candles"
        )

    high_bad = good.filter(pl.col("high") < pl.max_horizontal("open", "close"))
    if high_bad.height:
        fixable.append(
            (
                "high_widened",
                high_bad.height,
                f"{high_bad.height} row(s) with high < max(open, close) (e.g. {_examples(high_bad['timestamp'])})",
            )
        )
    low_bad = good.filter(pl.col("low") > pl.min_horizontal("open", "close"))
    if low_bad.height:
        fixable.append(
            (
                "low_widened",
                low_bad.height,
                f"{low_bad.height} row(s) with low > min(open, close) (e.g. {_examples(low_bad['timestamp'])})",
            )
        )

    dup_ts = frame.filter(pl.col("timestamp").is_duplicated() & pl.col("timestamp").is_not_null())
    if dup_ts.height:
        distinct = dup_ts.unique(maintain_order=True)
        conflicting = distinct.filter(pl.col("timestamp").is_duplicated())
        n_exact = dup_ts.height - distinct.height
        if conflicting.height:
            n_ts = conflicting["timestamp"].n_unique()
            fatal.append(
                f"{n_ts} timestamp(s) with conflicting duplicate candles "
                f"(e.g. {_examples(conflicting['timestamp'].unique(maintain_order=True))}); fix: the "
                "source returned different candles for the same time - decide which is right and drop "
                "the others"
            )
        if n_exact:
            fixable.append(
                (
                    "exact_duplicates_dropped",
                    n_exact,
                    f"{n_exact} exact duplicate row(s) "
                    f"(e.g. {_examples(dup_ts['timestamp'].unique(maintain_order=True))})",
                )
            )

    ts_present = ts.drop_nulls()
    if not ts_present.is_sorted():
        back = (ts_present.dt.epoch("ms").diff() < 0).fill_null(False)
        n_back = int(back.sum())
        fixable.append(
            (
                "sorted",
                n_back,
                f"rows not sorted by timestamp: {n_back} step(s) backwards "
                f"(e.g. at {_examples(ts_present.filter(back))})",
            )
        )

    if fatal or (fixable and not repair):
        problems = list(fatal)
        if not repair:
            problems += [f"{desc}; fix: pass repair=True to correct this" for _, _, desc in fixable]
        raise CandleValidationError(problems, timeframe=timeframe, rows=rows)

    repaired: dict[str, int] = {}
    notes: list[str] = []
    if fixable:
        frame = frame.sort("timestamp", maintain_order=True).unique(maintain_order=True)
        # Count widening after de-duplication so each stored candle is counted once.
        counts = frame.select(
            high_widened=(pl.col("high") < pl.max_horizontal("open", "close")).sum(),
            low_widened=(pl.col("low") > pl.min_horizontal("open", "close")).sum(),
        ).row(0, named=True)
        frame = frame.with_columns(
            pl.max_horizontal("high", "open", "close").alias("high"),
            pl.min_horizontal("low", "open", "close").alias("low"),
        )
        for key, n, desc in fixable:
            repaired[key] = int(counts.get(key, n))
            notes.append(f"repaired: {desc}")

    frame = frame.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())
    return frame, ValidationReport(
        rows=frame.height,
        first=frame["timestamp"][0] if frame.height else None,
        last=frame["timestamp"][-1] if frame.height else None,
        gaps=find_gaps(frame["timestamp"], timeframe),
        repaired=repaired,
        problems=notes,
    )


def find_gaps(timestamps: pl.Series, timeframe: str) -> list[tuple[datetime, datetime, int]]:
    """Missing open times between consecutive candles of a sorted, unique series, as half-open
    [start, end) ranges with the count of missing candles."""
    step = timeframe_ms(timeframe)
    ms = timestamps.dt.epoch("ms") if isinstance(timestamps.dtype, pl.Datetime) else timestamps
    frame = pl.DataFrame({"t": ms.cast(pl.Int64)}).with_columns(prev=pl.col("t").shift(1))
    jumps = frame.filter(pl.col("t") - pl.col("prev") > step)
    return [
        (ms_to_datetime(prev + step), ms_to_datetime(t), (t - prev) // step - 1)
        for t, prev in zip(jumps["t"].to_list(), jumps["prev"].to_list(), strict=True)
    ]
