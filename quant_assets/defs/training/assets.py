"""Per universe and retrain week: its data -> trained parameters -> walk-forward report -> configuration.

One factory for every universe, a pool or a CEX strategy alike: it asks the universe's tunable
(`quant_core.tunables.tunable_for`) for everything that differs (what its data is and is called, how it
plots itself, how it stores its parameters). Every asset is partitioned by retrain week (keyed by its Monday). Week
W's retrain moves the universe's run spec so its last window ends where W ends, searches with the seed of
(universe, W) unless the registry or the launchpad sets one (`quant_core.retrain.retrain_spec`), and reads
exactly the candle partitions of its markets over its lookback (`quant_assets.partitions.retrain_candle_keys`),
every one checked present before any work. Training steps share the `training` concurrency pool so a
backfill cannot oversubscribe the machine. The trained parameters and the walk-forward report are graphs of
steps (the search's parts: `quant_assets.defs.training.search_steps`; one step per fold:
`quant_assets.defs.training.folds`), so an executor can spread them over workers.
"""

import time

import dagster as dg

from quant_assets.defs.live.assets import candle_source
from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.defs.training.common import (
    TrainConfig,
    configuration_metadata,
    parameters_plot,
    retrain_job,
    store_configuration,
    trades_md,
    week_spec,
)
from quant_assets.defs.training.folds import build_walk_forward_report
from quant_assets.defs.training.jobs import run_heartbeat
from quant_assets.defs.training.search_steps import build_trained_parameters
from quant_assets.io import CandleIOManager
from quant_assets.metadata import markdown_table, number
from quant_assets.partitions import candles_of_period, retrain_candle_keys, retrain_days, retrain_partitions
from quant_assets.resources import ConfigurationStoreResource
from quant_core.configuration import build_configuration
from quant_core.spec import RunSpec
from quant_core.train.trainer import TrainedParameters
from quant_core.tunables import tunable_for
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport


def build_universe_assets(registry: Registry, universe: Universe) -> dg.Definitions:
    name = universe.name
    base_spec = universe.spec
    tunable = tunable_for(base_spec)
    data_key = [name, tunable.data_name]
    markets = {t: registry.market(universe.markets[t]).market for t in base_spec.tokens}
    partitions = retrain_partitions(registry, universe)
    tags = {"quant/kind": "retrain", "quant/universe": name}

    def window_spec(context, config: TrainConfig | None = None) -> RunSpec:
        return week_spec(base_spec, name, context.partition_time_window.end, config)  # the week's windows and seed

    @dg.asset(
        key=data_key,
        group_name=name,
        partitions_def=partitions,
        deps=[dg.AssetDep(OHLCV_KEY, partition_mapping=candles_of_period())],
        kinds={"numpy"},
        description=f"{tunable.data_name.replace('_', ' ')} of {', '.join(universe.markets.values())} over the "
        "retrain's lookback (warm-up + training + hold-out).",
        check_specs=[dg.AssetCheckSpec("complete_data", asset=data_key, blocking=True,
                                       description="the data cover the retrain window and its warm-up")],
    )
    def market_data(context: dg.AssetExecutionContext,
                    ohlcv_io_manager: dg.ResourceParam[CandleIOManager]) -> dg.Output:
        spec = window_spec(context)
        keys = retrain_candle_keys(universe, context.partition_key)
        began = time.monotonic()
        frames = candle_source(ohlcv_io_manager).frames_of(keys, [m.key for m in registry.markets],
                                                             f"{name} week {context.partition_key}")
        days = retrain_days(universe, context.partition_key)
        context.log.info(f"read {len(keys):,} candle partitions ({len(frames)} markets x {len(days)} days, "
                         f"{days[0]} .. {days[-1]}) in {time.monotonic() - began:.1f} s")
        data = tunable.load_data(markets, frames)
        try:
            tunable.validate_data(data, spec.start, spec.end_test or spec.end)
            complete, why = True, "the data cover warm-up + window"
        except ValueError as exc:
            complete, why = False, str(exc)
        described = tunable.describe_data(data)
        yield dg.Output(data, metadata={
            "dagster/row_count": described.pop("rows"),
            **{k: (markdown_table([v]) if isinstance(v, dict) and k == "last_prices" else v)
               for k, v in described.items()},
            "window": f"{spec.startDateString[:10]} .. {(spec.endTestDateString or spec.endDateString)[:10]}",
            "candle_partitions": len(keys),
            "data_hash": tunable.data_hash(data),
        })
        yield dg.AssetCheckResult(check_name="complete_data", passed=complete, metadata={"detail": why})

    trained_parameters = build_trained_parameters(universe, partitions, data_key, tags)
    walk_forward_report = build_walk_forward_report(universe, partitions, data_key, tags)

    @dg.asset(
        key=[name, "configuration"],
        group_name=name,
        partitions_def=partitions,
        ins={"data": dg.AssetIn(key=data_key), "trained": dg.AssetIn(key=[name, "trained_parameters"]),
             "report": dg.AssetIn(key=[name, "walk_forward_report"])},
        kinds={"sql"},
        tags=tags,
        description="The week's immutable configuration version, written to the store; it goes live if it passes "
        "the universe's live gate and beats the live champion on its hold-out (paired test), else it is stored "
        "as a candidate with the reason.",
    )
    def configuration(context: dg.AssetExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
                      ohlcv_io_manager: dg.ResourceParam[CandleIOManager], data, trained: TrainedParameters,
                      report: WalkForwardReport) -> dg.MaterializeResult:
        spec = window_spec(context, config)
        t = tunable_for(spec)
        week_universe = universe.model_copy(update={"spec": spec})
        in_sample = t.evaluate(data, [trained.params], spec.start, spec.end, benchmarks=False)
        holdout = (t.evaluate(data, [trained.params], spec.end, spec.end_test, benchmarks=False, trades=t.trades)
                   if spec.end_test else None)
        new = build_configuration(registry, week_universe, t.data_hash(data), trained, in_sample.metrics[0],
                                  holdout.metrics[0] if holdout else None, report,
                                  orchestrator_run_id=context.run.run_id)
        with run_heartbeat(config_store, context):
            stored, live, why, url = store_configuration(context, config_store, candle_source(ohlcv_io_manager),
                                                         registry, universe, new)
        summary = ("in_sample", in_sample), ("holdout", holdout)
        return dg.MaterializeResult(metadata={
            **configuration_metadata(stored, live, why, url),
            "in_sample_sharpe": number(in_sample.metrics[0]["daily_log_sharpe"]),
            "oos_sharpe": number(report.oos_sharpe),
            **{part: markdown_table([{"metric": k, "value": v} for k, v in ev.metrics[0].items()])
               for part, ev in summary if ev is not None},
            **({"holdout_trades": trades_md(holdout.trades[0])} if holdout and holdout.trades is not None else {}),
            **({"oos_trades": trades_md(report.trades)} if tunable.trades else {}),
            **parameters_plot(context, name, spec, data, trained.params,
                              f"{name}: configuration {stored.id} ({stored.lifecycle_stage})", "configuration.png"),
        })

    assets = [market_data, trained_parameters, walk_forward_report, configuration]
    return dg.Definitions.merge(dg.Definitions(assets=assets), retrain_job(universe, partitions, tags, assets))
