"""The platform's Dagster definitions, built from the market/universe registry."""

from __future__ import annotations

import dagster as dg

from quant_assets.defs.market_data.assets import build_market_data
from quant_assets.defs.training.assets import build_universe_assets
from quant_assets.registry import current_registry
from quant_assets.resources import CandleStoreResource, ConfigurationStoreResource


def build_definitions() -> dg.Definitions:
    registry = current_registry()
    return dg.Definitions.merge(
        build_market_data(registry),
        *(build_universe_assets(registry, u) for u in registry.universes),
        dg.Definitions(
            resources={
                "candle_store": CandleStoreResource(),
                "config_store": ConfigurationStoreResource(),
            }
        ),
    )


defs = build_definitions()
