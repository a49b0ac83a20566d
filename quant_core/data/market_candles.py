"""One market's candles with their timeframe: what a CEX strategy reads, as a PricePanel is what a pool reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, eq=False)
class MarketCandles:
    """Candles (timestamp, open, high, low, close, volume) of one market at `timeframe` (e.g. '1h')."""

    frame: pl.DataFrame
    timeframe: str
    _hash: list = field(default_factory=list, repr=False)  # memo: the frame is never modified

    @property
    def data_hash(self) -> str:
        """Content hash of the candles (stored with every configuration trained on them)."""
        if not self._hash:
            digest = hashlib.sha256()
            for col in CANDLE_COLUMNS:
                digest.update(self.frame[col].cast(pl.Int64 if col == "timestamp" else pl.Float64)
                              .to_numpy().tobytes())
            self._hash.append(digest.hexdigest())
        return self._hash[0]
