"""Partitions: candles per (market, day); retrains per (universe, week), mapped to exactly the candle
partitions a retrain reads.

Markets come from the registry as a static dimension rebuilt whenever the code location loads
(adding a market to the registry needs no code; reloading the location in the UI or restarting the
code server picks it up). We use a static rather than a dynamic dimension because only static
dimensions can be mapped market -> universe (StaticPartitionMapping over a dynamic dimension passes
validation but fails at run time in Dagster 1.13), and that mapping is what lets each retrain read
only its own markets.

Retrain weeks run Monday 00:00 to Monday 00:00 UTC. A universe's first week is the first whose lookback
(spec span + estimator warm-up, `quant_core.retrain.lookback_days`) fits after `partitions_start`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from quant_core.data.schema import to_utc
from quant_core.retrain import lookback_days
from quant_core.universe import Registry, Universe

MARKET_DIM, DATE_DIM = "market", "date"
UNIVERSE_DIM, WEEK_DIM = "universe", "week"
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


def retrain_partitions(registry: Registry, universe: Universe) -> dg.MultiPartitionsDefinition:
    weeks = dg.WeeklyPartitionsDefinition(start_date=first_retrain_week(registry, universe),
                                          day_offset=WEEK_DAY_OFFSET, timezone="UTC")
    return dg.MultiPartitionsDefinition({UNIVERSE_DIM: dg.StaticPartitionsDefinition([universe.name]),
                                         WEEK_DIM: weeks})


def lookback_weeks(universe: Universe) -> int:
    return math.ceil(lookback_days(universe.spec) / 7)


@contextlib.contextmanager
def beta_api() -> Iterator[None]:
    """Around a use of a Dagster API marked beta (the partition mappings this platform is built on): Dagster warns
    once per universe, tens of lines in every run's output that say nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield


def candles_for_retrain(universe: Universe) -> dg.MultiPartitionMapping:
    """Week W of the universe reads the days of W and of the lookback_weeks before it, for its markets only."""
    markets = sorted(set(universe.markets.values()))
    with beta_api():
        return _retrain_mapping(universe, markets)


def _retrain_mapping(universe: Universe, markets: list[str]) -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping({
        MARKET_DIM: dg.DimensionPartitionMapping(UNIVERSE_DIM, dg.StaticPartitionMapping(
            {m: universe.name for m in markets})),
        DATE_DIM: dg.DimensionPartitionMapping(WEEK_DIM, dg.TimeWindowPartitionMapping(
            start_offset=-lookback_weeks(universe))),
    })


def latest_retrain_week(registry: Registry, universe: Universe, now) -> str | None:
    """The universe's last complete retrain week at `now` (a MultiPartitionKey string), None before the first."""
    with dg.partition_loading_context(effective_dt=now):
        return retrain_partitions(registry, universe).get_last_partition_key()
