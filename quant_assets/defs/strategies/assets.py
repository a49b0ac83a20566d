"""Per CEX-strategy universe and retrain week: candles -> trained parameters -> walk-forward report ->
configuration.

A strategy universe trades one market. Week W moves its run spec to end where W ends and reads that
market's candle partitions over the lookback (spec span + max_memory_days of warm-up). The UI shows
each step's trades and equity curve: the trained parameters over training + hold-out, the out-of-sample
trades of every walk-forward fold, and the stored configuration's hold-out trades.
"""

import hashlib
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl

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
from quant_core.plots import strategy_plot, walk_forward_plot
from quant_core.retrain import spec_ending_at
from quant_core.spec import RunSpec
from quant_core.strategies.backtest import BacktestError, BacktestResult
from quant_core.strategies.market import strategy_bars
from quant_core.strategies.walk_forward import run_backtest, walk_forward_strategy
from quant_core.train.api import json_safe
from quant_core.train.pool import TrainedPool
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport

MAX_TRADE_ROWS = 50
SUMMARY = ("net_profit", "returns", "n_trades", "win_rate", "avg_win", "avg_loss", "profit_factor", "expectancy",
           "daily_log_sharpe", "sharpe_per_trade", "sortino", "max_drawdown", "calmar", "exposure")


def candles_hash(frame: pl.DataFrame) -> str:
    """Content hash of the candles a retrain read (stored with the configuration)."""
    digest = hashlib.sha256()
    for col in ("timestamp", "open", "high", "low", "close", "volume"):
        digest.update(frame[col].cast(pl.Int64 if col == "timestamp" else pl.Float64).to_numpy().tobytes())
    return digest.hexdigest()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def trade_rows(trades: list[dict], limit: int = MAX_TRADE_ROWS) -> list[dict]:
    """The last `limit` trades as table rows (times UTC, return in percent)."""
    return [{**({"fold": t["fold"]} if "fold" in t else {}), "entry": _iso(t["entry_time"]),
             "exit": _iso(t["exit_time"]), "side": t["side"], "entry_price": t["entry_price"],
             "exit_price": t["exit_price"], "return_%": 100 * t["return"], "pnl": t["pnl"],
             "exit_reason": t["exit_reason"]}
            for t in trades[-limit:]]


def _trades_md(trades: list[dict]) -> dg.MetadataValue:
    shown = f" (last {MAX_TRADE_ROWS} of {len(trades)})" if len(trades) > MAX_TRADE_ROWS else ""
    table = markdown_table(trade_rows(trades)).value
    return dg.MetadataValue.md(f"{len(trades)} trades{shown}\n\n{table}")


def _summary_md(result: BacktestResult) -> dg.MetadataValue:
    return markdown_table([{"metric": k, "value": float(result.metrics[k][0])} for k in SUMMARY])


def build_strategy_assets(registry: Registry, universe: Universe) -> dg.Definitions:
    name = universe.name
    base_spec = universe.spec
    (token, market_key), = universe.markets.items()
    timeframe = registry.market(market_key).market.timeframe
    partitions = retrain_partitions(registry, universe)
    tags = {"quant/kind": "retrain", "quant/universe": name}

    def window_spec(context, config: TrainConfig | None = None) -> RunSpec:
        spec = config.apply(base_spec) if config is not None else base_spec
        return spec_ending_at(spec, context.partition_time_window.end)

    def equity_plot(context, spec: RunSpec, candles: pl.DataFrame, params: dict, title: str, file: str):
        """Backtest of `params` over training + hold-out (one run, split marked) with its trades."""
        end = spec.end_test or spec.end
        res = run_backtest(candles, timeframe, spec, [params], spec.start, end, trades=True)
        bars = strategy_bars(candles, timeframe, spec.start, end, 0)
        png = strategy_plot(res.bar_timestamps, res.bar_equity[0], bars.close[bars.window], res.trades[0], title,
                            split=spec.end.replace(tzinfo=None) if spec.end_test else None)
        return res, plot_metadata(png, title, name, context.partition_key.replace("|", "_"), file)

    @dg.asset(
        key=[name, "candles"],
        group_name=name,
        partitions_def=partitions,
        ins={"ohlcv": dg.AssetIn(key=OHLCV_KEY, partition_mapping=candles_for_retrain(universe))},
        kinds={"polars"},
        description=f"{market_key} candles over the retrain's lookback (warm-up + training + hold-out).",
        check_specs=[dg.AssetCheckSpec("complete_window", asset=[name, "candles"], blocking=True,
                                       description="every bar of the retrain window is present")],
    )
    def candles(context: dg.AssetExecutionContext, ohlcv) -> dg.Output:
        spec = window_spec(context)
        frame = frames_by_market(ohlcv)[market_key]
        try:
            bars = strategy_bars(frame, timeframe, spec.start, spec.end_test or spec.end, spec.max_memory_days)
            complete = True
            why = f"{bars.n_days} days x {bars.bars_per_day} bars after {bars.window_start} warm-up bars"
        except BacktestError as exc:
            complete, why = False, str(exc)
        yield dg.Output(frame, metadata={
            "dagster/row_count": frame.height,
            "market": market_key,
            "first": str(frame["timestamp"].min()),
            "last": str(frame["timestamp"].max()),
            "window": f"{spec.startDateString[:10]} .. {(spec.endTestDateString or spec.endDateString)[:10]}",
            "candle_partitions": len(ohlcv),
            "data_hash": candles_hash(frame),
        })
        yield dg.AssetCheckResult(check_name="complete_window", passed=complete, metadata={"detail": why})

    @dg.asset(
        key=[name, "trained_parameters"],
        group_name=name,
        partitions_def=partitions,
        ins={"candles": dg.AssetIn(key=[name, "candles"])},
        kinds={"jax", "optuna"},
        pool=TRAINING_POOL,
        tags=tags,
        description=f"{base_spec.strategy} parameters on {market_key} by {base_spec.optimisation_settings.method} "
        f"search (launchpad: method, budget, seed, metric), maximising {base_spec.return_val}.",
        check_specs=[dg.AssetCheckSpec("finite_objective", asset=[name, "trained_parameters"], blocking=True)],
    )
    def trained_parameters(context: dg.AssetExecutionContext, config: TrainConfig,
                           config_store: ConfigurationStoreResource, simulator: SimulatorResource,
                           candles: pl.DataFrame):
        from quant_core.strategies.train import train_strategy

        spec = window_spec(context, config)
        backend = simulator.setup()
        with training_job(config_store, context, name, spec, config, candles_hash(candles)):
            trained = train_strategy(candles, timeframe, spec, seed=config.seed, log=context.log.info)
        res, plot = equity_plot(context, spec, candles, trained.params,
                                f"{name}: trained parameters (dashed: end of training)", "trained_parameters.png")
        yield dg.Output(trained, metadata={
            "parameters": markdown_table([{"parameter": k, "value": v} for k, v in trained.params.items()]),
            "objective": dg.MetadataValue.float(float(trained.objective)),
            "metric": trained.metric,
            "method": trained.method,
            "n_evaluations": trained.n_evaluations,
            "evaluations_per_second": dg.MetadataValue.float(float(trained.n_evaluations / max(trained.seconds, 1e-9))),
            "seed": trained.seed,
            "backend": backend,
            "search_seconds": dg.MetadataValue.float(round(trained.seconds, 3)),
            "train_window": f"{trained.start:%Y-%m-%d} .. {trained.end:%Y-%m-%d}",
            "metrics": _summary_md(res),
            "trades": _trades_md(res.trades[0]),
            **plot,
        })
        yield dg.AssetCheckResult(check_name="finite_objective", passed=bool(np.isfinite(trained.objective)),
                                  metadata={"objective": float(trained.objective)})

    @dg.asset(
        key=[name, "walk_forward_report"],
        group_name=name,
        partitions_def=partitions,
        ins={"candles": dg.AssetIn(key=[name, "candles"])},
        kinds={"jax"},
        pool=TRAINING_POOL,
        tags=tags,
        description="Walk-forward validation: retrain per fold, out-of-sample trades, significance; sample size = "
        "out-of-sample trades.",
        check_specs=[
            dg.AssetCheckSpec("finite_oos_metrics", asset=[name, "walk_forward_report"], blocking=True),
            dg.AssetCheckSpec("oos_thresholds", asset=[name, "walk_forward_report"],
                              description="out-of-sample evidence meets the universe's MATURE thresholds"),
        ],
    )
    def walk_forward_report(context: dg.AssetExecutionContext, config: TrainConfig, candles: pl.DataFrame):
        spec = window_spec(context, config)
        report = walk_forward_strategy(candles, timeframe, spec, universe.walk_forward, seed=config.seed,
                                       log=context.log.info)
        rows = [{"fold": f.fold.index,
                 "train": f"{f.fold.train_start:%Y-%m-%d}..{f.fold.train_end:%Y-%m-%d}",
                 "test": f"{f.fold.test_start:%Y-%m-%d}..{f.fold.test_end:%Y-%m-%d}",
                 "IS trades": f.in_sample["n_trades"], "IS sharpe": f.in_sample["daily_log_sharpe"],
                 "OOS trades": f.out_of_sample["n_trades"], "OOS sharpe": f.out_of_sample["daily_log_sharpe"],
                 "OOS return": f.out_of_sample["returns"], "buy&hold OOS return": f.oos_hodl["returns"]}
                for f in report.folds]
        png = walk_forward_plot(report, what=base_spec.strategy, benchmark="buy and hold")
        yield dg.Output(report, metadata={
            "folds": markdown_table(rows),
            "oos_sharpe": dg.MetadataValue.float(report.oos_sharpe),
            "oos_buy_and_hold_sharpe": dg.MetadataValue.float(report.oos_hodl_sharpe),
            "mean_is_sharpe": dg.MetadataValue.float(report.mean_is_sharpe),
            "mean_oos_sharpe": dg.MetadataValue.float(report.mean_oos_sharpe),
            "sample_size": report.sample_size,
            "oos_trades": _trades_md(report.trades),
            "significance": significance_table(report),
            "report": dg.MetadataValue.json(json_safe(report.to_dict() | {"folds": len(report.folds),
                                                                          "trades": len(report.trades)})),
            **plot_metadata(png, "walk-forward", name, context.partition_key.replace("|", "_"),
                            "walk_forward_report.png"),
        })
        finite = all(np.isfinite(f.out_of_sample["daily_log_sharpe"]) for f in report.folds)
        yield dg.AssetCheckResult(check_name="finite_oos_metrics",
                                  passed=bool(finite and np.isfinite(report.oos_sharpe)))
        yield threshold_check(universe, report)

    @dg.asset(
        key=[name, "configuration"],
        group_name=name,
        partitions_def=partitions,
        ins={"candles": dg.AssetIn(key=[name, "candles"]), "trained": dg.AssetIn(key=[name, "trained_parameters"]),
             "report": dg.AssetIn(key=[name, "walk_forward_report"])},
        kinds={"sql"},
        tags=tags,
        description="The lifecycle-staged configuration written to the store, with its trades and equity curve.",
    )
    def configuration(context: dg.AssetExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
                      candles: pl.DataFrame, trained: TrainedPool, report: WalkForwardReport) -> dg.MaterializeResult:
        spec = window_spec(context, config)
        week_universe = universe.model_copy(update={"spec": spec})
        in_sample = run_backtest(candles, timeframe, spec, [trained.params], spec.start, spec.end)
        holdout = None
        if spec.end_test:
            holdout = run_backtest(candles, timeframe, spec, [trained.params], spec.end, spec.end_test, trades=True)
        summary = {k: float(v[0]) for k, v in in_sample.metrics.items()}
        held = {k: float(v[0]) for k, v in holdout.metrics.items()} if holdout else None
        stored, url = store_configuration(
            context, config_store, universe, spec,
            lambda previous: build_configuration(registry, week_universe, candles_hash(candles), trained, summary,
                                                 held, report, previous, orchestrator_run_id=context.run.run_id))
        _, plot = equity_plot(context, spec, candles, trained.params,
                              f"{name}: configuration {stored.id} ({stored.lifecycle_stage})", "configuration.png")
        return dg.MaterializeResult(metadata={
            **configuration_metadata(stored, url),
            "oos_sharpe": dg.MetadataValue.float(report.oos_sharpe),
            "in_sample": _summary_md(in_sample),
            **({"holdout": _summary_md(holdout), "holdout_trades": _trades_md(holdout.trades[0])} if holdout else {}),
            "oos_trades": _trades_md(report.trades),
            **plot,
        })

    assets = [candles, trained_parameters, walk_forward_report, configuration]
    return dg.Definitions.merge(dg.Definitions(assets=assets), retrain_job(universe, partitions, tags))
