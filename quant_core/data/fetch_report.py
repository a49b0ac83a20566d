"""The account of one exchange fetch (`FetchReport`): requests, retries, rows kept and the uncovered window.

Shared by the ccxt source that writes it and the incremental ingestion that collects it, so neither
has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quant_core.data.schema import Market
from quant_core.data.validation import ValidationReport


@dataclass
class FetchReport:
    """What one `fetch` did: requests made, rows kept, open candles dropped, the parts of the requested
    window the exchange could not serve (`head_gap`, `tail_gap`: half-open [from, to)), and the exchange's
    clock at its last answer (`exchange_time`: which candle was open is judged by it too)."""

    market: Market
    start: datetime | None
    end: datetime
    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    dropped_open: int = 0
    head_gap: tuple[datetime, datetime] | None = None
    tail_gap: tuple[datetime, datetime] | None = None
    notes: list[str] = field(default_factory=list)
    validation: ValidationReport | None = None
    exchange_time: datetime | None = None

    @property
    def complete(self) -> bool:
        """Whether every closed candle of the window the exchange should have was asked for and served."""
        return self.head_gap is None and self.tail_gap is None

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary for asset metadata and logs."""

        def gap(g: tuple[datetime, datetime] | None) -> list[str] | None:
            return [g[0].isoformat(), g[1].isoformat()] if g else None

        return {
            "market": self.market.key,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "requests": self.requests,
            "retries": self.retries,
            "pages": self.pages,
            "rows": self.rows,
            "dropped_open": self.dropped_open,
            "complete": self.complete,
            "head_gap": gap(self.head_gap),
            "tail_gap": gap(self.tail_gap),
            "notes": list(self.notes),
            "exchange_time": self.exchange_time.isoformat() if self.exchange_time else None,
            "validation": self.validation.as_metadata() if self.validation else None,
        }
