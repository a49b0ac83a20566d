"""Per universe and retrain week: price panel -> trained parameters -> walk-forward report -> configuration.

Every asset is partitioned by (universe, week). Week W's retrain moves the universe's run spec so its
last window ends where W ends (`quant_core.retrain.spec_ending_at`) and reads exactly the candle
partitions of its markets over its lookback (`quant_assets.partitions.candles_for_retrain`). Asset
bodies are thin: they call quant_core and record what a user wants to see in the UI. Training steps
share the `training` concurrency pool so a backfill cannot oversubscribe the machine.
"""


import dagster as dg
import numpy as np

from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.defs.training.common import (
    TRAINING_POOL,
    TrainConfig,
    configuration_metadata,
    frames_by_market,
    retrain_job,
    significance_table,
    store_configuration,
    threshold_check,
    training_job,
)
from quant_assets.metadata import markdown_table, plot_metadata
from quant_assets.partitions import candles_for_retrain, retrain_partitions
from quant_assets.resources import ConfigurationStoreResource, SimulatorResource
from quant_core.configuration import build_configuration
from quant_core.data.panel import PricePanel, build_numeraire_panel
from quant_core.plots import pool_plot, walk_forward_plot
from quant_core.retrain import spec_ending_at
from quant_core.sim.simulate import plan_window, simulate
from quant_core.spec import RunSpec
from quant_core.train.api import json_safe
from quant_core.train.pool import TrainedPool, train_pool
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport, walk_forward


def _params_rows(params: dict[str, list], tokens: list[str]) -> list[dict]:
    rows = []
    for k, v in params.items():
        arr = np.asarray(v, dtype=np.float64)
        cells = arr.T.tolist() if arr.ndim == 2 else arr.tolist()  # ensemble__: per token, one value per member
        rows.append({"parameter": k, **dict(zip(tokens, cells, strict=True))})
    return rows


def build_universe_assets(registry: Registry, universe: Universe) -> dg.Definitions:
    name = universe.name
    base_spec = universe.spec
    group = name
    tokens_sorted = base_spec.sorted_tokens
    partitions = retrain_partitions(registry, universe)
    tags = {"quant/kind": "retrain", "quant/universe": name}

    def window_spec(context, config: TrainConfig | None = None) -> RunSpec:
        spec = config.apply(base_spec) if config is not None else base_spec
        return spec_ending_at(spec, context.partition_time_window.end)

    @dg.asset(
        key=[name, "price_panel"],
        group_name=group,
        partitions_def=partitions,
        ins={"candles": dg.AssetIn(key=OHLCV_KEY, partition_mapping=candles_for_retrain(universe))},
        kinds={"numpy"},
        description=f"Aligned [time x token] close prices of {', '.join(base_spec.tokens)} over the lookback.",
        check_specs=[dg.AssetCheckSpec("complete_panel", asset=[name, "price_panel"], blocking=True,
                                       description="the panel covers the retrain window and its warm-up")],
    )
    def price_panel(context: dg.AssetExecutionContext, candles) -> dg.Output:
        spec = window_spec(context)
        frames = frames_by_market(candles)
        markets = {t: registry.market(universe.markets[t]).market for t in spec.tokens}
        timeframe = next(iter(markets.values())).timeframe
        # priced in USD: pairs quoted in another asset are converted through the universe's other
        # markets, USD stablecoin quotes pinned at 1 (each stated in the panel's `pricing` metadata)
        panel = build_numeraire_panel({markets[t]: frames[markets[t].key] for t in spec.tokens}, spec.tokens,
                                      timeframe)
        try:
            window = plan_window(panel, spec, spec.start, spec.end_test or spec.end)
            complete, why = True, f"{window.end_row - window.first_row} rows cover warm-up + window"
        except ValueError as exc:
            complete, why = False, str(exc)
        yield dg.Output(panel, metadata={
            "dagster/row_count": int(panel.prices.shape[0]),
            "tokens": list(panel.tokens),
            "first": str(panel.timestamps[0]),
            "last": str(panel.timestamps[-1]),
            "window": f"{spec.startDateString[:10]} .. {(spec.endTestDateString or spec.endDateString)[:10]}",
            "candle_partitions": len(candles),
            "step_minutes": panel.step_minutes,
            "data_hash": panel.data_hash,
            "pricing": panel.metadata["pricing"],
            "last_prices": markdown_table([{t: float(p) for t, p in zip(panel.tokens, panel.prices[-1], strict=True)}]),
        })
        yield dg.AssetCheckResult(check_name="complete_panel", passed=complete, metadata={"detail": why})

    @dg.asset(
        key=[name, "trained_parameters"],
        group_name=group,
        partitions_def=partitions,
        ins={"panel": dg.AssetIn(key=[name, "price_panel"])},
        kinds={"jax", "optuna"},
        pool=TRAINING_POOL,
        tags=tags,
        description=f"{base_spec.rule} parameters trained by {base_spec.optimisation_settings.method} (launchpad: "
        f"method, budget, seed, metric), maximising {base_spec.return_val} over the week's training window.",
        check_specs=[dg.AssetCheckSpec("finite_objective", asset=[name, "trained_parameters"], blocking=True)],
    )
    def trained_parameters(
        context: dg.AssetExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
        simulator: SimulatorResource, panel: PricePanel,
    ):
        spec = window_spec(context, config)
        backend = simulator.setup()
        with training_job(config_store, context, name, spec, config, panel.data_hash):
            trained = train_pool(panel, spec, seed=config.seed, log=context.log.info,
                                 iterations_per_print=max(1, spec.optimisation_settings.n_iterations // 10))
        end = spec.end_test or spec.end
        sim = simulate(panel, spec, trained.params, end=end)
        hodl = simulate(panel, spec.model_copy(update={"rule": "hodl", "parameters": None}), end=end)
        png = pool_plot(sim.timestamps, sim.values, hodl.values, sim.weights, sim.tokens,
                        f"{name}: trained pool vs HODL (dashed: end of training)", split=spec.end.replace(tzinfo=None))
        summary = sim.summary()
        yield dg.Output(
            trained,
            metadata={
                "parameters": markdown_table(_params_rows(trained.params, tokens_sorted)),
                "objective": dg.MetadataValue.float(float(trained.objective)),
                "metric": trained.metric,
                "method": trained.method,
                "n_evaluations": trained.n_evaluations,
                "seed": trained.seed,
                "backend": backend,
                "search_seconds": dg.MetadataValue.float(round(trained.seconds, 3)),
                "train_window": f"{trained.start:%Y-%m-%d} .. {trained.end:%Y-%m-%d}",
                "metrics": markdown_table([{"metric": k, "value": v} for k, v in summary.items()]),
                "data_hash": panel.data_hash,
                **plot_metadata(png, "pool value vs HODL and weights", name, context.partition_key.replace("|", "_"),
                                "trained_parameters.png"),
            },
        )
        yield dg.AssetCheckResult(check_name="finite_objective", passed=bool(np.isfinite(trained.objective)),
                                  metadata={"objective": float(trained.objective)})

    @dg.asset(
        key=[name, "walk_forward_report"],
        group_name=group,
        partitions_def=partitions,
        ins={"panel": dg.AssetIn(key=[name, "price_panel"])},
        kinds={"jax"},
        pool=TRAINING_POOL,
        tags=tags,
        description="Walk-forward validation: retrain per fold, in-sample vs out-of-sample, significance.",
        check_specs=[
            dg.AssetCheckSpec("finite_oos_metrics", asset=[name, "walk_forward_report"], blocking=True),
            dg.AssetCheckSpec("oos_thresholds", asset=[name, "walk_forward_report"],
                              description="out-of-sample evidence meets the universe's MATURE thresholds"),
        ],
    )
    def walk_forward_report(context: dg.AssetExecutionContext, config: TrainConfig, panel: PricePanel):
        spec = window_spec(context, config)
        report = walk_forward(panel, spec, universe.walk_forward, seed=config.seed, log=context.log.info)
        rows = [
            {
                "fold": f.fold.index,
                "train": f"{f.fold.train_start:%Y-%m-%d}..{f.fold.train_end:%Y-%m-%d}",
                "test": f"{f.fold.test_start:%Y-%m-%d}..{f.fold.test_end:%Y-%m-%d}",
                "IS sharpe": f.in_sample["daily_log_sharpe"],
                "OOS sharpe": f.out_of_sample["daily_log_sharpe"],
                "OOS return": f.out_of_sample["returns"],
                "HODL OOS return": f.oos_hodl["returns"],
            }
            for f in report.folds
        ]
        yield dg.Output(
            report,
            metadata={
                "folds": markdown_table(rows),
                "oos_sharpe": dg.MetadataValue.float(report.oos_sharpe),
                "oos_hodl_sharpe": dg.MetadataValue.float(report.oos_hodl_sharpe),
                "oos_uniform_sharpe": dg.MetadataValue.float(report.oos_uniform_sharpe),
                "mean_is_sharpe": dg.MetadataValue.float(report.mean_is_sharpe),
                "mean_oos_sharpe": dg.MetadataValue.float(report.mean_oos_sharpe),
                "sample_size": report.sample_size,
                "significance": significance_table(report),
                "report": dg.MetadataValue.json(json_safe(report.to_dict() | {"folds": len(report.folds)})),
                **plot_metadata(walk_forward_plot(report), "walk-forward", name,
                                context.partition_key.replace("|", "_"), "walk_forward_report.png"),
            },
        )
        finite = all(np.isfinite(f.out_of_sample["daily_log_sharpe"]) for f in report.folds)
        yield dg.AssetCheckResult(check_name="finite_oos_metrics",
                                  passed=bool(finite and np.isfinite(report.oos_sharpe)))
        yield threshold_check(universe, report)

    @dg.asset(
        key=[name, "configuration"],
        group_name=group,
        partitions_def=partitions,
        ins={
            "panel": dg.AssetIn(key=[name, "price_panel"]),
            "trained": dg.AssetIn(key=[name, "trained_parameters"]),
            "report": dg.AssetIn(key=[name, "walk_forward_report"]),
        },
        kinds={"sql"},
        tags=tags,
        description="The lifecycle-staged configuration written to the store (one row per universe + window).",
    )
    def configuration(
        context: dg.AssetExecutionContext,
        config: TrainConfig,
        config_store: ConfigurationStoreResource,
        panel: PricePanel,
        trained: TrainedPool,
        report: WalkForwardReport,
    ) -> dg.MaterializeResult:
        spec = window_spec(context, config)
        week_universe = universe.model_copy(update={"spec": spec})
        in_sample = simulate(panel, spec, trained.params).summary()
        holdout = None
        if spec.end_test:
            holdout = simulate(panel, spec, trained.params, start=spec.end, end=spec.end_test).summary()
        stored, url = store_configuration(
            context, config_store, universe, spec,
            lambda previous: build_configuration(registry, week_universe, panel.data_hash, trained, in_sample,
                                                 holdout, report, previous, orchestrator_run_id=context.run.run_id))
        return dg.MaterializeResult(
            metadata={
                **configuration_metadata(stored, url),
                "in_sample_sharpe": dg.MetadataValue.float(in_sample["daily_log_sharpe"]),
                "oos_sharpe": dg.MetadataValue.float(report.oos_sharpe),
            }
        )

    assets = [price_panel, trained_parameters, walk_forward_report, configuration]
    return dg.Definitions.merge(dg.Definitions(assets=assets), retrain_job(universe, partitions, tags))
