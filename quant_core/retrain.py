"""Retrain windows: a universe's run spec moved to end where a retrain partition ends.

A universe's spec fixes the *lengths* of its windows (training [start, end), test [end, end_test));
a retrain for the window ending at T keeps those lengths and ends the last one at T, so it reads
only data before T. The lookback it needs is the spec's whole span plus the estimator warm-up
(max_memory_days, rounded up to whole days).

Each universe and week searches with its own seed (`week_seed`), unless the universe's registry entry sets
optimisation_settings.initial_random_key (or the launchpad a seed), which is honoured as given: with one seed
for all, every universe drew the same random candidates, and the same ones won on different markets.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

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


def week_seed(universe: str, window_end: datetime) -> int:
    """The search seed of `universe`'s retrain ending at `window_end`: from SHA-256 of both, so it is the same in
    every process, machine and rerun (Python's hash() of a str is salted per process). 31 bits, which numpy,
    optuna and JAX all accept."""
    end = window_end.replace(tzinfo=UTC) if window_end.tzinfo is None else window_end.astimezone(UTC)
    digest = hashlib.sha256(f"{universe}|{end:%Y-%m-%dT%H:%M}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def explicit_seed(spec: RunSpec) -> bool:
    """Whether the spec sets optimisation_settings.initial_random_key itself, as a registry entry may. Ask the
    spec as written: one rebuilt from a dump (runspec.with_training) lists every field as set."""
    return "initial_random_key" in spec.optimisation_settings.model_fields_set


def retrain_spec(spec: RunSpec, universe: str, window_end: datetime, *, keep_seed: bool) -> RunSpec:
    """`universe`'s spec for the retrain ending at `window_end`: its windows moved there and, unless `keep_seed`
    (a seed set in the registry entry or at launch), the week's seed, which the trainer searches with and the
    stored configuration records (its `seed` and run spec)."""
    moved = spec_ending_at(spec, window_end)
    if keep_seed:
        return moved
    opt = moved.optimisation_settings
    return moved.model_copy(update={"optimisation_settings": opt.model_copy(
        update={"initial_random_key": week_seed(universe, window_end)})})
