"""Complete candles of a ranged fetch that failed part-way, kept for the next attempt of the same range.

A ranged ohlcv run materialises its partitions together, so a fetch that fails on a later page writes none of
them; without this, the retry (the asset's RetryPolicy) or the next run would fetch every earlier page again,
and against a rate-limited exchange a long backfill might never get through. The source's error carries the
candles it had completed (`CcxtSourceError.partial`, validated); they are kept here, per market and range
start, and the next fetch of a range starting there asks the exchange only for what comes after them. The file
is removed once the range's candles pass validation (or fail it: nothing bad is carried forward).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import polars as pl

from quant_core.data.schema import to_epoch_ms


class FetchResume:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, market_key: str, start: datetime) -> Path:
        return self.root / f"{market_key}.{to_epoch_ms(start)}.parquet"

    def load(self, market_key: str, start: datetime, end: datetime) -> pl.DataFrame | None:
        """The candles kept for a range of this market starting at `start` (those before `end`), or None."""
        path = self._path(market_key, start)
        if not path.exists():
            return None
        frame = pl.read_parquet(path).filter(pl.col("timestamp") < end)
        return frame if frame.height else None

    def keep(self, market_key: str, start: datetime, frame: pl.DataFrame) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(market_key, start)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, path)
        return path

    def clear(self, market_key: str, start: datetime) -> None:
        self._path(market_key, start).unlink(missing_ok=True)
