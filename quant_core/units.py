"""Units and time formats every layer shares: one place for minutes per day and epoch-ms text.

This module imports nothing from the project, so anything may depend on it.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTES_PER_DAY = 1440
MS_PER_MINUTE = 60_000


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC ('2024-01-01T05:00:00+00:00'): machine-readable results."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat()


def short_utc(ms: int) -> str:
    """Epoch milliseconds as 'YYYY-MM-DD HH:MM' (UTC): tables people read."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M")
