"""The platform's Dagster definitions, built from the market/universe registry."""

from __future__ import annotations

import dagster as dg

from quant_assets.defs.automation import build_automation
from quant_assets.defs.live.assets import build_forward_assets, build_live_overview
from quant_assets.defs.market_data.assets import build_market_data
from quant_assets.defs.training.assets import build_universe_assets
from quant_assets.defs.training.jobs import build_job_reconciliation
from quant_assets.executor import executor_from_env
from quant_assets.io import CandleIOManagerFactory
from quant_assets.registry import current_registry
from quant_assets.resources import ConfigurationStoreResource, ExchangeResource, JaxResource
from quant_core.train.threads import configured_threads


def build_definitions() -> dg.Definitions:
    configured_threads()  # QUANT_SEARCH_THREADS, checked here so a bad value fails the load, not a training step
    registry = current_registry()
    universes = [build_universe_assets(registry, u) for u in registry.universes]
    forward = [build_forward_assets(registry, u) for u in registry.universes]
    live = build_live_overview(registry)
    retrain_jobs = [job for d in universes for job in d.jobs]
    forward_jobs = [job for d in forward for job in d.jobs]
    return dg.Definitions.merge(
        build_market_data(registry),
        *universes,
        *forward,
        live,
        build_automation(registry, retrain_jobs, forward_jobs, next(iter(live.jobs or []), None)),
        build_job_reconciliation(),
        dg.Definitions(
            executor=executor_from_env(),  # QUANT_EXECUTOR: multiprocess (default) or celery (deploy/celery/)
            resources={
                "ohlcv_io_manager": CandleIOManagerFactory(),
                "exchange": ExchangeResource(),
                "config_store": ConfigurationStoreResource(),
                "jax_settings": JaxResource(),
            }
        ),
    )


defs = build_definitions()
