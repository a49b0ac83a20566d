"""Partitions: candles per (market, day); retrains per week (each universe has assets of its own); forward runs per
day.

Markets come from the registry as a static dimension rebuilt whenever the code location loads
(adding a market to the registry needs no code; reloading the location in the UI or restarting the
code server picks it up): the registry is the one list of markets, so no run has to add them.

Retrain weeks run Monday 00:00 to Monday 00:00 UTC, keyed by their Monday ("2024-12-16": what the UI's partition
bars and metadata plots show). A universe's first week is the first whose lookback (spec span + estimator warm-up,
`quant_core.retrain.lookback_days`) fits after `partitions_start`. The candles a week reads are its markets over
that lookback (`retrain_candle_keys`); Dagster 1.13 has no mapping from a (market, day) asset to a single weekly
dimension with an offset, so the Dagster-level dependency says only what lineage needs (the period's own days,
`candles_of_period`) and the retrain checks and reads the exact partitions itself (quant_assets.io.PartitionCandles).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg

from quant_core.data.schema import to_utc
from quant_core.retrain import lookback_days
from quant_core.universe import Registry, Universe

MARKET_DIM, DATE_DIM = "market", "date"
WEEK_DAY_OFFSET = 1  # weeks start on Monday


def market_partitions(registry: Registry) -> dg.StaticPartitionsDefinition:
    """One key per registered market: exchange.BASE-QUOTE.timeframe (path-safe)."""
    return dg.StaticPartitionsDefinition([m.key for m in registry.markets])


def day_partitions(registry: Registry) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=to_utc(registry.partitions_start).strftime("%Y-%m-%d"),
                                        timezone="UTC")


def ohlcv_partitions(registry: Registry) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({MARKET_DIM: market_partitions(registry), DATE_DIM: day_partitions(registry)})


def first_retrain_week(registry: Registry, universe: Universe) -> str:
    """The first Monday whose week's candle lookback (lookback_weeks whole weeks before it) starts on or
    after partitions_start, so every candle partition a retrain maps to exists."""
    t = to_utc(registry.partitions_start) + timedelta(days=7 * lookback_weeks(universe))
    return (t + timedelta(days=(7 - t.weekday()) % 7)).strftime("%Y-%m-%d")


def retrain_partitions(registry: Registry, universe: Universe) -> dg.WeeklyPartitionsDefinition:
    return dg.WeeklyPartitionsDefinition(start_date=first_retrain_week(registry, universe),
                                         day_offset=WEEK_DAY_OFFSET, timezone="UTC")


def lookback_weeks(universe: Universe) -> int:
    return math.ceil(lookback_days(universe.spec) / 7)


@contextlib.contextmanager
def beta_api() -> Iterator[None]:
    """Around a use of a Dagster API marked beta (the partition mappings this platform is built on): Dagster warns
    once per universe, tens of lines in every run's output that say nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield


def candles_of_period() -> dg.MultiToSingleDimensionPartitionMapping:
    """The lineage of a retrain week or a forward day in Dagster: that period's days of the candles, every market."""
    with beta_api():
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIM)


def retrain_days(universe: Universe, week: str) -> list[str]:
    """The UTC days the retrain of `week` (its Monday) reads: the lookback_weeks whole weeks before it, and its own."""
    first = date.fromisoformat(week) - timedelta(days=7 * lookback_weeks(universe))
    return [(first + timedelta(days=i)).isoformat() for i in range(7 * (lookback_weeks(universe) + 1))]


def retrain_candle_keys(universe: Universe, week: str) -> set[str]:
    """The candle partitions (date|market keys) the retrain of `week` reads: its markets over retrain_days."""
    markets = sorted(set(universe.markets.values()))
    return {str(dg.MultiPartitionKey({MARKET_DIM: m, DATE_DIM: d})) for d in retrain_days(universe, week)
            for m in markets}


def latest_retrain_week(registry: Registry, universe: Universe, now) -> str | None:
    """The universe's last complete retrain week at `now` (its Monday, YYYY-MM-DD), None before the first."""
    with dg.partition_loading_context(effective_dt=now):
        return retrain_partitions(registry, universe).get_last_partition_key()
