"""The account of an import: what each file held (`ImportedFile`) and what became of it (`ImportResult`).

Kept apart from the readers so the CLI, logs and asset metadata can use the report without the
import machinery, and so the report's wording lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from quant_core.data.gaps import Gap, format_gap
from quant_core.data.import_files import FileFormat
from quant_core.data.validation import ValidationReport


@dataclass
class ImportedFile:
    """What was read from one file, before rejection and repair."""

    path: str
    format: FileFormat
    rows: int
    first: datetime | None
    last: datetime | None
    timeframe: str
    time_unit: str | None = None

    def describe(self) -> str:
        unit = f", {self.time_unit} timestamps" if self.time_unit else ""
        span = f", {_fmt(self.first)} .. {_fmt(self.last)}" if self.first else ""
        return f"{Path(self.path).name} ({self.format} {self.timeframe}{unit}): {self.rows} row(s){span}"


@dataclass
class ImportResult:
    """Imported candles and the account of how they were made: read, rejected, repaired, filled.

    `rejected` counts dropped rows per reason (unreadable_timestamp, missing_value, non_positive_price,
    negative_volume, off_grid) with one example-bearing line each in `rejected_notes`; `repaired` is
    validation's count per repair (sorted, exact_duplicates_dropped, high_widened, low_widened);
    `filled_gaps` lists the gaps the policy filled with flat zero-volume candles; `gaps` the ones left.
    """

    candles: pl.DataFrame
    timeframe: str
    source_timeframe: str
    files: list[ImportedFile]
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_notes: list[str] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)
    filled_gaps: list[Gap] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    validation: ValidationReport | None = None

    @property
    def rows_read(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def filled_candles(self) -> int:
        return sum(n for _, _, n in self.filled_gaps)

    def report(self) -> str:
        """The human-readable account, for the CLI and logs."""
        c = self.candles
        span = f" from {_fmt(c['timestamp'][0])} to {_fmt(c['timestamp'][-1])}" if c.height else ""
        resampled = f" (resampled from {self.source_timeframe})" if self.source_timeframe != self.timeframe else ""
        lines = [f"imported {c.height} {self.timeframe} candle(s){resampled}{span} from {len(self.files)} file(s)"]
        lines.append(f"read {self.rows_read} row(s):")
        lines += [f"  - {f.describe()}" for f in self.files]
        if self.rejected:
            lines.append(f"rejected {self.rows_rejected} row(s):")
            lines += [f"  - {note}" for note in self.rejected_notes]
        else:
            lines.append("rejected: nothing")
        if self.repaired:
            lines.append("repaired:")
            lines += [f"  - {key}: {n}" for key, n in self.repaired.items()]
        else:
            lines.append("repaired: nothing")
        if self.filled_gaps:
            lines.append(
                f"filled {len(self.filled_gaps)} gap(s) ({self.filled_candles} flat zero-volume candle(s)): "
                + "; ".join(format_gap(g) for g in self.filled_gaps[:10])
                + (" ..." if len(self.filled_gaps) > 10 else "")
            )
        if self.gaps:
            lines.append(
                f"left {len(self.gaps)} gap(s) missing: "
                + "; ".join(format_gap(g) for g in self.gaps[:10])
                + (" ..." if len(self.gaps) > 10 else "")
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary, for asset metadata."""

        def gaps(gs: list[Gap]) -> list[list[Any]]:
            return [[s.isoformat(), e.isoformat(), n] for s, e, n in gs[:20]]

        return {
            "timeframe": self.timeframe,
            "source_timeframe": self.source_timeframe,
            "rows": self.candles.height,
            "files": [
                {"path": f.path, "format": f.format, "rows": f.rows, "timeframe": f.timeframe, "time_unit": f.time_unit}
                for f in self.files
            ],
            "rows_read": self.rows_read,
            "rejected": dict(self.rejected),
            "rejected_notes": list(self.rejected_notes),
            "repaired": dict(self.repaired),
            "filled_gaps": gaps(self.filled_gaps),
            "filled_candles": self.filled_candles,
            "gaps": gaps(self.gaps),
        }


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%MZ") if value is not None else "-"
