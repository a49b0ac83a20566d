"""Per universe: price panel -> trained parameters -> walk-forward report -> stored configuration.

Asset bodies are thin: they call quant_core and record what a user wants to see in the UI.
"""


import dagster as dg
import numpy as np
from pydantic import Field

from quant_assets.defs.market_data.assets import CANDLES_KEY
from quant_assets.metadata import markdown_table, plot_metadata
from quant_assets.resources import CandleStoreResource, ConfigurationStoreResource
from quant_core.configuration import build_configuration
from quant_core.data.panel import PricePanel, build_numeraire_panel
from quant_core.lifecycle import LifecycleStage
from quant_core.plots import pool_plot, walk_forward_plot
from quant_core.sim.simulate import simulate
from quant_core.train.api import json_safe
from quant_core.train.pool import TrainedPool, train_pool
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport, walk_forward


class TrainConfig(dg.Config):
    """Launchpad overrides; unset fields use the universe's run spec."""

    n_trials: int | None = Field(None, description="budget: iterations (gradient_descent), trials (optuna) or "
                                 "candidates (random); default: the run spec's")
    seed: int | None = Field(None, description="random seed (default: optimisation_settings.initial_random_key)")


def _check_positive(cfg: TrainConfig) -> None:
    if cfg.n_trials is not None and cfg.n_trials < 1:
        raise dg.Failure(f"n_trials must be >= 1, got {cfg.n_trials}: set it to a positive number or leave it unset")


def _params_rows(params: dict[str, list[float]], tokens: list[str]) -> list[dict]:
    return [{"parameter": k, **{t: float(x) for t, x in zip(tokens, v, strict=True)}} for k, v in params.items()]


def build_universe_assets(registry: Registry, universe: Universe) -> dg.Definitions:
    name = universe.name
    spec = universe.spec
    group = name
    tokens_sorted = spec.sorted_tokens

    @dg.asset(
        key=[name, "price_panel"],
        group_name=group,
        deps=[dg.AssetDep(CANDLES_KEY)],
        kinds={"numpy"},
        description=f"Aligned [time x token] close prices of {', '.join(spec.tokens)} for {name}.",
    )
    def price_panel(context: dg.AssetExecutionContext, candle_store: CandleStoreResource) -> PricePanel:
        store = candle_store.open()
        markets = [registry.market(universe.markets[t]).market for t in spec.tokens]
        timeframe = markets[0].timeframe
        # priced in USD: pairs quoted in another asset are converted through the universe's other
        # markets, USD stablecoin quotes pinned at 1 (each stated in the panel's `pricing` metadata)
        panel = build_numeraire_panel({m: store.read(m) for m in markets}, spec.tokens, timeframe)
        first, last = panel.timestamps[0], panel.timestamps[-1]
        context.add_output_metadata(
            {
                "dagster/row_count": int(panel.prices.shape[0]),
                "tokens": list(panel.tokens),
                "first": str(first),
                "last": str(last),
                "step_minutes": panel.step_minutes,
                "data_hash": panel.data_hash,
                "pricing": panel.metadata["pricing"],
                "last_prices": markdown_table(
                    [{t: float(p) for t, p in zip(panel.tokens, panel.prices[-1], strict=True)}]
                ),
            }
        )
        return panel

    @dg.asset(
        key=[name, "trained_parameters"],
        group_name=group,
        ins={"panel": dg.AssetIn(key=[name, "price_panel"])},
        kinds={"jax", "optuna"},
        description=f"{spec.rule} parameters trained on {spec.startDateString[:10]} .. {spec.endDateString[:10]} "
        f"by {spec.optimisation_settings.method}, maximising {spec.return_val}.",
        check_specs=[dg.AssetCheckSpec("finite_objective", asset=[name, "trained_parameters"], blocking=True)],
    )
    def trained_parameters(
        context: dg.AssetExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
        panel: PricePanel,
    ):
        _check_positive(config)
        store = config_store.open()
        try:
            # recorded before training starts, so a failed retrain leaves a trace (and the stored
            # configuration stays as it was)
            job_id = store.record_job_start(
                universe_key=name, method=spec.optimisation_settings.method,
                settings={"n_trials": config.n_trials, "seed": config.seed, "data_hash": panel.data_hash},
                orchestrator_run_id=context.run.run_id,
            )
            try:
                trained = train_pool(panel, spec, seed=config.seed, n_trials=config.n_trials, log=context.log.info)
            except Exception as exc:
                store.record_job_end(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
                raise
            store.record_job_end(job_id, status="trained")
        finally:
            store.dispose()
        end = spec.end_test or spec.end
        sim = simulate(panel, spec, trained.params, end=end)
        hodl = simulate(panel, spec.model_copy(update={"rule": "hodl", "parameters": None}), end=end)
        png = pool_plot(sim.timestamps, sim.values, hodl.values, sim.weights, sim.tokens,
                        f"{name}: trained pool vs HODL (dashed: end of training)", split=spec.end.replace(tzinfo=None))
        yield dg.Output(
            trained,
            metadata={
                "parameters": markdown_table(_params_rows(trained.params, tokens_sorted)),
                "objective": dg.MetadataValue.float(float(trained.objective)),
                "metric": trained.metric,
                "method": trained.method,
                "n_evaluations": trained.n_evaluations,
                "seed": trained.seed,
                "search_seconds": dg.MetadataValue.float(round(trained.seconds, 3)),
                "train_window": f"{trained.start:%Y-%m-%d} .. {trained.end:%Y-%m-%d}",
                "data_hash": panel.data_hash,
                **plot_metadata(png, "pool value vs HODL and weights", name, "trained_parameters.png"),
            },
        )
        yield dg.AssetCheckResult(
            check_name="finite_objective",
            passed=bool(np.isfinite(trained.objective)),
            metadata={"objective": float(trained.objective)},
        )

    @dg.asset(
        key=[name, "walk_forward_report"],
        group_name=group,
        ins={"panel": dg.AssetIn(key=[name, "price_panel"])},
        kinds={"jax"},
        description="Walk-forward validation: retrain per fold, in-sample vs out-of-sample metrics.",
        check_specs=[dg.AssetCheckSpec("finite_oos_metrics", asset=[name, "walk_forward_report"], blocking=True)],
    )
    def walk_forward_report(context: dg.AssetExecutionContext, config: TrainConfig, panel: PricePanel):
        _check_positive(config)
        report = walk_forward(panel, spec, universe.walk_forward, seed=config.seed, n_trials=config.n_trials,
                              log=context.log.info)
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
                "mean_is_sharpe": dg.MetadataValue.float(report.mean_is_sharpe),
                "mean_oos_sharpe": dg.MetadataValue.float(report.mean_oos_sharpe),
                "oos_uniform_sharpe": dg.MetadataValue.float(report.oos_uniform_sharpe),
                "sample_size": report.sample_size,
                "significance": markdown_table([{"statistic": k, "value": v} for k, v in report.significance.items()
                                                if not isinstance(v, list)]),
                "report": dg.MetadataValue.json(json_safe(report.to_dict() | {"folds": len(report.folds)})),
                **plot_metadata(walk_forward_plot(report), "walk-forward", name, "walk_forward_report.png"),
            },
        )
        finite = all(np.isfinite(f.out_of_sample["daily_log_sharpe"]) for f in report.folds)
        yield dg.AssetCheckResult(
            check_name="finite_oos_metrics", passed=bool(finite and np.isfinite(report.oos_sharpe))
        )

    @dg.asset(
        key=[name, "configuration"],
        group_name=group,
        ins={
            "panel": dg.AssetIn(key=[name, "price_panel"]),
            "trained": dg.AssetIn(key=[name, "trained_parameters"]),
            "report": dg.AssetIn(key=[name, "walk_forward_report"]),
        },
        kinds={"sql"},
        description="The lifecycle-staged configuration written to the store (one row per universe + window).",
    )
    def configuration(
        context: dg.AssetExecutionContext,
        config_store: ConfigurationStoreResource,
        panel: PricePanel,
        trained: TrainedPool,
        report: WalkForwardReport,
    ) -> dg.MaterializeResult:
        store = config_store.open()
        try:
            existing = [c for c in store.list_configurations(universe_key=name) if c.train_end < spec.end]
            previous = LifecycleStage(existing[-1].lifecycle_stage) if existing else None
            is_sim = simulate(panel, spec, trained.params)
            in_sample = is_sim.summary()
            holdout = None
            if spec.end_test:
                ho = simulate(panel, spec, trained.params, start=spec.end, end=spec.end_test)
                holdout = ho.summary()
            new = build_configuration(registry, universe, panel, trained, in_sample, holdout, report, previous,
                                      orchestrator_run_id=context.run.run_id)
            stored = store.upsert_configuration(new)
            for job in store.list_training_jobs(universe_key=name):
                if job.orchestrator_run_id == context.run.run_id and job.status == "trained":
                    store.record_job_end(job.id, status="stored", configuration_id=stored.id)
        finally:
            store.dispose()
        return dg.MaterializeResult(
            metadata={
                "configuration_id": stored.id,
                "lifecycle_stage": str(stored.lifecycle_stage),
                "stage_reason": stored.stage_reason,
                "sample_size": stored.sample_size,
                "in_sample_sharpe": dg.MetadataValue.float(in_sample["daily_log_sharpe"]),
                "oos_sharpe": dg.MetadataValue.float(report.oos_sharpe),
                "parameters": dg.MetadataValue.json(stored.parameters),
                "store": store.url,
            }
        )

    return dg.Definitions(assets=[price_panel, trained_parameters, walk_forward_report, configuration])
