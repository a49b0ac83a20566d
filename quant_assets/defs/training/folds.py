"""The walk-forward report of a retrain week as a graph of steps, so its folds can run on different workers.

    plan_folds ──► run_fold[0] ─┐
               ├─► run_fold[1] ─┼─► combine_folds ──► walk_forward_report (+ its checks)
               └─► run_fold[…] ─┘

`plan_folds` checks the data cover the folds and emits one dynamic output per fold (mapping key: the fold's
index); each `run_fold` retrains on its fold's training window and evaluates in and out of sample
(`quant_core.validate.walk_forward.run_fold`), in the `training` concurrency pool; `combine_folds` stitches
the outcomes into the report (`combine_folds`, the same numbers as the in-process `walk_forward`) and yields the
asset's metadata and check results. Step keys: `<universe>__walk_forward_report.plan_folds`,
`….run_fold[<fold index>]`, `….combine_folds`. Fold and outcome objects pass between steps through the IO
manager (pickled).

The launchpad config (TrainConfig) stays where it was: `ops: {<universe>__walk_forward_report: {config: …}}`;
the graph's config mapping hands it to each of its ops.
"""

from collections.abc import Callable

import dagster as dg
import numpy as np

from quant_assets.defs.training.common import (
    TRAINING_POOL,
    Method,
    Metric,
    TrainConfig,
    significance_table,
    threshold_check,
    trades_md,
    week_spec,
)
from quant_assets.defs.training.jobs import run_heartbeat
from quant_assets.executor import training_step_tags
from quant_assets.metadata import folds_markdown, number, plot_metadata
from quant_assets.resources import ConfigurationStoreResource, JaxResource
from quant_core.jsonsafe import json_safe
from quant_core.plots import BENCHMARK_LABELS, walk_forward_plot
from quant_core.spec import RunSpec
from quant_core.tunables import tunable_for
from quant_core.universe import Universe
from quant_core.validate.folds import Fold
from quant_core.validate.walk_forward import (
    FoldOutcome,
    WalkForwardReport,
    combine_folds,
    plan_folds,
    run_fold,
    walk_forward_span,
)

OPS = ("plan_folds", "run_fold", "combine_folds")  # node names inside the graph (the step keys' second part)
CHECKS = ("finite_oos_metrics", "oos_thresholds")


def train_config_mapping(ops: tuple[str, ...] = OPS) -> dg.ConfigMapping:
    """The graph takes TrainConfig, as the single-step asset did, and passes it to each op. The mapping sees
    config values processed (an enum choice as its value: daily_var_95%); the ops' schema takes the choice's
    name again (daily_var_95pct)."""

    def to_ops(config: dict) -> dict:
        raw = dict(config)
        for field, enum in (("method", Method), ("metric", Metric)):
            value = raw.get(field)
            if value is not None and value not in enum.__members__:
                raw[field] = enum(value).name
        return {op: {"config": raw} for op in ops}

    return dg.ConfigMapping(config_fn=to_ops, config_schema=TrainConfig.to_config_schema())


def report_metadata(context, universe: Universe, report: WalkForwardReport) -> dict:
    tunable = tunable_for(universe.spec)
    benchmark = BENCHMARK_LABELS.get(tunable.benchmark, tunable.benchmark)
    return {
        "folds": folds_markdown(report, benchmark, trades=bool(tunable.trades)),
        "oos_sharpe": number(report.oos_sharpe),
        f"oos_{report.benchmark}_sharpe": number(report.oos_benchmark_sharpe),
        **{f"oos_{k}_sharpe": number(b["sharpe"]) for k, b in report.other_benchmarks.items()},
        "mean_is_sharpe": number(report.mean_is_sharpe),
        "mean_oos_sharpe": number(report.mean_oos_sharpe),
        # Pardo's walk-forward efficiency: mean and worst over folds (NaN where a fold's IS Sharpe <= 0)
        "walk_forward_efficiency": number(report.mean_walk_forward_efficiency),
        "worst_walk_forward_efficiency": number(report.worst_walk_forward_efficiency),
        "sample_size": report.sample_size,
        "sample_unit": report.sample_unit,
        **({"oos_trades": trades_md(report.trades)} if tunable.trades else {}),
        "significance": significance_table(report),
        "report": dg.MetadataValue.json(json_safe(report.to_dict() | {"folds": len(report.folds),
                                                                      "trades": len(report.trades)})),
        **plot_metadata(walk_forward_plot(report, what=tunable.name), "walk-forward", universe.name,
                        context.partition_key, "walk_forward_report.png"),
    }


def build_walk_forward_report(universe: Universe, partitions: dg.PartitionsDefinition, data_key: list[str],
                              tags: dict) -> dg.AssetsDefinition:
    name = universe.name
    key = [name, "walk_forward_report"]
    tunable = tunable_for(universe.spec)
    benchmark = BENCHMARK_LABELS.get(tunable.benchmark, tunable.benchmark)
    check_specs = [
        dg.AssetCheckSpec(CHECKS[0], asset=key, blocking=True),
        dg.AssetCheckSpec(CHECKS[1], asset=key,
                          description="out-of-sample evidence meets the universe's MATURE thresholds"),
    ]

    def window_spec(context, config: TrainConfig) -> RunSpec:
        return week_spec(universe.spec, name, context.partition_time_window.end, config)

    # op definitions are named per universe (a job may hold several universes' graphs); inside the graph they
    # are aliased to OPS, so step keys read `<universe>__walk_forward_report.run_fold[3]`
    @dg.op(name=f"{name}__plan_folds", out=dg.DynamicOut(Fold),
           description="checks the data cover the walk-forward folds; one output per fold")
    def plan_folds_op(context: dg.OpExecutionContext, config: TrainConfig, data):
        spec = window_spec(context, config)
        start, end = walk_forward_span(spec)
        folds = plan_folds(data, spec, universe.walk_forward, start, end)
        context.log.info(f"{len(folds)} folds over {start:%Y-%m-%d}..{end:%Y-%m-%d}")
        for fold in folds:
            yield dg.DynamicOutput(fold, mapping_key=str(fold.index))

    @dg.op(name=f"{name}__run_fold", pool=TRAINING_POOL, tags=training_step_tags(),
           description="retrains on one fold's training window; evaluates it in and out of sample")
    def run_fold_op(context: dg.OpExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
                    jax_settings: JaxResource, data, fold: Fold) -> FoldOutcome:
        spec = window_spec(context, config)
        jax_settings.setup()
        with run_heartbeat(config_store, context):  # the run's trained job awaits this step: it is alive
            return run_fold(data, spec, fold, seed=config.seed, log=context.log.info)

    @dg.op(name=f"{name}__combine_folds", pool=TRAINING_POOL, tags=training_step_tags(),
           out={"result": dg.Out(WalkForwardReport), **{c: dg.Out(dagster_type=None) for c in CHECKS}},
           description="the folds' outcomes stitched into the walk-forward report, with its checks")
    def combine_folds_op(context: dg.OpExecutionContext, config: TrainConfig,
                         config_store: ConfigurationStoreResource, jax_settings: JaxResource, data,
                         outcomes: list[FoldOutcome]):
        spec = window_spec(context, config)
        jax_settings.setup()
        start, end = walk_forward_span(spec)
        with run_heartbeat(config_store, context):
            report = combine_folds(data, spec, outcomes, start, end, log=context.log.info)
        yield dg.Output(report, output_name="result", metadata=report_metadata(context, universe, report))
        finite = all(np.isfinite(f.out_of_sample["daily_log_sharpe"]) for f in report.folds)
        yield dg.AssetCheckResult(check_name=CHECKS[0], passed=bool(finite and np.isfinite(report.oos_sharpe)))
        yield threshold_check(universe, report)

    @dg.graph_asset(
        key=key,
        group_name=name,
        partitions_def=partitions,
        ins={"data": dg.AssetIn(key=data_key)},
        config=train_config_mapping(),
        kinds={"jax"},
        tags=tags,
        description=f"Walk-forward validation: retrain per fold (one step each), in- vs out-of-sample against "
        f"{benchmark}, significance; sample size = {tunable.sample_unit}.",
        check_specs=check_specs,
    )
    def walk_forward_report(data):
        fold: Callable = run_fold_op.alias(OPS[1])
        outcomes = plan_folds_op.alias(OPS[0])(data).map(lambda f: fold(data, f))
        report, finite, thresholds = combine_folds_op.alias(OPS[2])(data, outcomes.collect())
        return {"result": report, **{s.get_python_identifier(): out
                                     for s, out in zip(check_specs, (finite, thresholds), strict=True)}}

    return walk_forward_report
