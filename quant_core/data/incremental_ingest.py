"""Incremental, idempotent ingestion: bring a candle store up to date from any CandleSource.

Independent of the exchange client: it decides which segments to (re-)fetch from what the store
holds, fetches them from the source and merges them into the store, reporting what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import polars as pl

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
    for seg_start, seg_end in segments:
        if hasattr(source, "fetch_with_report"):
            frame, fetch_report = source.fetch_with_report(market, seg_start, seg_end)
            reports.append(fetch_report)
        else:
            frame = source.fetch(market, seg_start, seg_end)
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
