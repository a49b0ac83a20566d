"""Partitions shared by several domains."""

from __future__ import annotations

import dagster as dg

from quant_core.universe import Registry


def market_partitions(registry: Registry) -> dg.StaticPartitionsDefinition:
    """One candle partition per registered market (key: exchange.BASE-QUOTE.timeframe)."""
    return dg.StaticPartitionsDefinition([m.key for m in registry.markets])
