"""Incremental, idempotent ingestion: bring a candle store up to date from any CandleSource.

Independent of the exchange client: it decides which segments to (re-)fetch from what the store
holds, fetches them from the source and merges them into the store, reporting what changed.

A fetch that fails part-way does not cost the complete candles it fetched: a source's error may carry them
(`partial`, as CcxtSourceError does), and they are stored before the error propagates whenever they continue
what is stored, so the next run fetches only what is still missing. `fetch_to_file` does the same for one
Parquet file (`quant data fetch --out`), leaving a marker so the same command run again continues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from quant_core.data.candle_store import CandleFile
from quant_core.data.fetch_report import FetchReport
from quant_core.data.schema import Market, empty_candles, timeframe_ms, to_epoch_ms, to_utc
from quant_core.data.validation import ValidationReport, ms_to_datetime


class _Store(Protocol):
    def exists(self, market: Market) -> bool: ...

    def read(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame: ...

    def write(self, market: Market, candles: pl.DataFrame, *, repair: bool = False) -> ValidationReport: ...


@dataclass
class IngestResult:
    """What one incremental ingest did: rows fetched from the source, rows written to the store
    (a written row may replace a stored one), rows the store gained, and the extent of what was fetched."""

    market: Market
    rows_fetched: int
    rows_written: int
    rows_added: int
    first: datetime | None
    last: datetime | None
    report: ValidationReport | None
    fetch_reports: list[FetchReport] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary for asset metadata and logs."""
        return {
            "market": self.market.key,
            "rows_fetched": self.rows_fetched,
            "rows_written": self.rows_written,
            "rows_added": self.rows_added,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "report": self.report.as_metadata() if self.report else None,
            "fetches": [r.as_metadata() for r in self.fetch_reports],
        }


def fetch_incremental(
    store: _Store,
    source: Any,
    market: Market,
    *,
    start: datetime | str,
    end: datetime | str | None = None,
    overlap_candles: int = 2,
) -> IngestResult:
    """Bring the store's candles of `market` up to date over [start, end), fetching only what is new.

    With nothing stored, fetches from `start`. Otherwise re-fetches from `overlap_candles` before the
    last stored candle (the exchange may have revised its most recent candles; the store's merge lets
    the fresh rows replace them) and, if `start` is before the first stored candle, back-fills that
    head. Re-running for the same window fetches only the overlap and writes no duplicates.
    `source` is any CandleSource; one with `fetch_with_report` also contributes its fetch reports.
    """
    if overlap_candles < 0:
        raise ValueError(f"overlap_candles must be >= 0, got {overlap_candles}")
    start_dt = to_utc(start)
    end_dt = to_utc(end) if end is not None else None
    step = timeframe_ms(market.timeframe)

    segments: list[tuple[datetime, datetime | None]] = []
    before = 0
    if store.exists(market):
        stored = store.read(market)
        before = stored.height
    if before:
        first_ms = to_epoch_ms(stored["timestamp"].min())
        last_ms = to_epoch_ms(stored["timestamp"].max())
        start_ms = to_epoch_ms(start_dt)
        end_ms = None if end_dt is None else to_epoch_ms(end_dt)
        tail_start = max(start_ms, last_ms - overlap_candles * step)
        if start_ms < first_ms:  # back-fill before what is stored; the tail fetch then starts at the stored data
            head_end = first_ms if end_ms is None else min(first_ms, end_ms)
            segments.append((start_dt, ms_to_datetime(head_end)))
            tail_start = max(tail_start, first_ms)
        if end_ms is None or tail_start < end_ms:
            segments.append((ms_to_datetime(tail_start), end_dt))
    else:
        segments.append((start_dt, end_dt))

    frames: list[pl.DataFrame] = []
    reports: list[FetchReport] = []
    for i, (seg_start, seg_end) in enumerate(segments):
        try:
            if hasattr(source, "fetch_with_report"):
                frame, fetch_report = source.fetch_with_report(market, seg_start, seg_end)
                reports.append(fetch_report)
            else:
                frame = source.fetch(market, seg_start, seg_end)
        except Exception as exc:
            # Complete pages of the last segment continue what is stored (or start it); those of a head backfill
            # would end before the stored candles, leaving a hole no later run refills: they are not kept.
            partial = getattr(exc, "partial", None)
            if isinstance(partial, pl.DataFrame) and partial.height and i == len(segments) - 1:
                frames.append(partial)
            _keep_complete(store, market, frames, exc)
            raise
        frames.append(frame)
    batch = pl.concat(frames) if frames else empty_candles()

    report = None
    after = before
    if batch.height:
        report = store.write(market, batch)
        after = store.read(market).height
    return IngestResult(
        market=market,
        rows_fetched=batch.height,
        rows_written=batch.height,
        rows_added=after - before,
        first=batch["timestamp"].min() if batch.height else None,  # type: ignore[arg-type]
        last=batch["timestamp"].max() if batch.height else None,  # type: ignore[arg-type]
        report=report,
        fetch_reports=reports,
    )


def _keep_complete(store: _Store, market: Market, frames: list[pl.DataFrame], exc: Exception) -> None:
    """Store the complete candles fetched before `exc` (one atomic write) and say so in its message."""
    batch = pl.concat(frames) if frames else empty_candles()
    if not batch.height:
        return
    try:
        store.write(market, batch)
    except Exception as write_exc:  # the fetch error is the one to report; keeping its candles was a bonus
        _append(exc, f"; the {batch.height} candles fetched before the failure could not be kept ({write_exc})")
        return
    last = batch["timestamp"].max()
    _append(exc, f"; kept the {batch.height} complete candles fetched before the failure "
                 f"({batch['timestamp'].min():%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC): the next run continues "
                 "from there")


def _append(exc: Exception, text: str) -> None:
    """Add `text` to the exception's message (its type, chain and traceback stay as they were)."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (exc.args[0] + text, *exc.args[1:])


def fetch_to_file(source: Any, market: Market, out: str | Path, *, start: datetime | str,
                  end: datetime | str | None = None) -> tuple[pl.DataFrame, IngestResult]:
    """The candles of `market` over [start, end) into one Parquet file (`quant data fetch --out`); returns the
    file's candles and what was fetched.

    A fetch that fails part-way keeps its complete candles in `out`, with a marker beside it (`<out>.partial.json`)
    naming the market and window; run again for the same market and window, it continues from them. Without a
    matching marker `out` is written afresh (an unrelated file is replaced, never merged into).
    """
    out = Path(out)
    marker = out.with_name(out.name + ".partial.json")
    window = {"market": market.key, "start": to_utc(start).isoformat(),
              "end": to_utc(end).isoformat() if end is not None else None}
    try:
        resume = out.is_file() and json.loads(marker.read_text()) == window
    except (OSError, ValueError):
        resume = False
    file = CandleFile(out, keep=resume)
    try:
        result = fetch_incremental(file, source, market, start=start, end=end)
    except Exception as exc:
        if file.exists(market):
            marker.write_text(json.dumps(window))
            _append(exc, f" (in {out}: run the same command again to continue)")
        raise
    marker.unlink(missing_ok=True)
    return (file.read(market) if file.exists(market) else empty_candles()), result

