"""Retrain windows: a universe's run spec moved to end where a retrain partition ends.

A universe's spec fixes the *lengths* of its windows (training [start, end), test [end, end_test));
a retrain for the window ending at T keeps those lengths and ends the last one at T, so it reads
only data before T. The lookback it needs is the spec's whole span plus the estimator warm-up
(max_memory_days, rounded up to whole days).
"""

from __future__ import annotations

import math
from datetime import datetime

from quant_core.spec import RunSpec


def span_days(spec: RunSpec) -> int:
    """Days from startDateString to the last window's end (endTestDateString, else endDateString)."""
    return math.ceil(((spec.end_test or spec.end) - spec.start).total_seconds() / 86400)


def lookback_days(spec: RunSpec) -> int:
    """Days of data before a retrain window's end that the retrain reads (warm-up included)."""
    return span_days(spec) + math.ceil(spec.max_memory_days)


def spec_ending_at(spec: RunSpec, window_end: datetime) -> RunSpec:
    """The spec with every date moved by the same amount so its last window ends at `window_end`."""
    shift = window_end - (spec.end_test or spec.end)
    return spec.with_window(spec.start + shift, spec.end + shift, spec.end_test + shift if spec.end_test else None)
