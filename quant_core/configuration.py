"""Assemble the stored configuration of a trained pool or CEX strategy from its evidence."""

from __future__ import annotations

import math

import numpy as np

from quant_core.lifecycle import LifecycleStage, StageEvidence, assign_stage
from quant_core.provenance import code_version, numerical_environment
from quant_core.signs import NATURAL, SIGNS_KEY, natural_value, scored_metric
from quant_core.store import NewConfiguration
from quant_core.train.trainer import TrainedParameters
from quant_core.tunables import tunable_for
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport


def _finite(d: dict) -> dict:
    """NaN/inf cannot be stored as JSON: record them as None."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in d.items()}


def stage_evidence(report: WalkForwardReport, previous_stage: LifecycleStage | None = None) -> StageEvidence:
    """What a walk-forward report says against the MATURE criteria (the oos_thresholds asset check)."""
    return StageEvidence(sample_size=report.sample_size, oos_sharpe=report.oos_sharpe, previous_stage=previous_stage,
                         p_value=report.significance.get("deflated_sharpe_p_value"),
                         pbo=report.significance.get("pbo"))


def creation_stage(report: WalkForwardReport) -> StageEvidence:
    """A new version's stage evidence: stages come from forward data (none yet), with the walk-forward's
    deflated-Sharpe p-value and PBO (quant_core.live.timeline restages it day by day)."""
    return StageEvidence(sample_size=0, oos_sharpe=math.nan, p_value=report.significance.get("deflated_sharpe_p_value"),
                         pbo=report.significance.get("pbo"))


def _total_return(equity: list[float]) -> float:
    """The walk-forward's equity curves are growth from 1 (exp of the cumulative daily log returns)."""
    return equity[-1] - 1.0 if equity else math.nan


def trade_statistics(trades: list[dict]) -> dict[str, float]:
    """Out-of-sample trade statistics (returns are fractions of each trade's notional)."""
    r = np.asarray([t["return"] for t in trades], dtype=np.float64)
    wins, losses = r[r > 0], r[r <= 0]
    gross_loss = -float(np.sum([t["pnl"] for t in trades if t["return"] <= 0]))
    gross_win = float(np.sum([t["pnl"] for t in trades if t["return"] > 0]))
    return {
        "oos_trades": float(r.size),
        "oos_win_rate": float(wins.size / r.size) if r.size else math.nan,
        "oos_avg_win": float(wins.mean()) if wins.size else math.nan,
        "oos_avg_loss": float(losses.mean()) if losses.size else math.nan,
        "oos_expectancy": float(r.mean()) if r.size else math.nan,
        "oos_profit_factor": gross_win / gross_loss if gross_loss > 0 else math.nan,
        "oos_net_profit": float(np.sum([t["pnl"] for t in trades])),
        "oos_long_trades": float(sum(t["side"] == "long" for t in trades)),
    }


def build_configuration(
    registry: Registry,
    universe: Universe,
    data_hash: str,
    trained: TrainedParameters,
    in_sample: dict[str, float],
    holdout: dict[str, float] | None,
    report: WalkForwardReport,
    orchestrator_run_id: str | None = None,
) -> NewConfiguration:
    """The immutable version a retrain writes: parameters, evidence (what the live gate reads) and its first
    stage (DISCOVERY until forward data say otherwise)."""
    spec = universe.spec
    tunable = tunable_for(spec)
    decision = assign_stage(creation_stage(report), universe.stage_thresholds.thresholds())
    markets = [registry.market(universe.markets[t]) for t in spec.tokens]
    end_test = spec.end_test or spec.end
    walk_forward = {
        "oos_sharpe": report.oos_sharpe,
        "oos_benchmark_sharpe": report.oos_benchmark_sharpe,
        "oos_return": _total_return(report.oos_equity),
        "oos_benchmark_return": _total_return(report.oos_benchmark_equity),
        "mean_is_sharpe": report.mean_is_sharpe,
        "mean_oos_sharpe": report.mean_oos_sharpe,
        "oos_is_ratio": report.oos_is_ratio,
        "walk_forward_efficiency": report.mean_walk_forward_efficiency,
        "worst_walk_forward_efficiency": report.worst_walk_forward_efficiency,
        **{f"oos_{name}_sharpe": b["sharpe"] for name, b in report.other_benchmarks.items()},
        "n_folds": float(len(report.folds)),
    }
    if tunable.trades:  # trade statistics of the out-of-sample trades, all folds together
        walk_forward.update(trade_statistics(report.trades))
    return NewConfiguration(
        universe_key=universe.name,
        strategy=tunable.name,
        method=trained.method,
        exchanges=sorted({m.exchange for m in markets}),
        symbols=[m.symbol for m in markets],
        timeframe=markets[0].timeframe,
        parameters=tunable.stored_params(trained.params),
        metrics={
            "in_sample": _finite(in_sample),
            "holdout": _finite(holdout or {}),
            "walk_forward": _finite(walk_forward),
            "benchmark": report.benchmark,
            "significance": _finite({k: v for k, v in report.significance.items() if not isinstance(v, list)}),
            # the method's best score in the metric's natural sign (the search maximised it negated if a risk)
            "training_objective": natural_value(scored_metric(trained.method, trained.metric,
                                                              spec.optimisation_settings.early_stopping_metric),
                                                trained.objective),
            SIGNS_KEY: NATURAL,  # every metric here in its natural sign (quant_core.signs)
        },
        lifecycle_stage=decision.stage,
        stage_reason=f"no forward data yet: {decision.reason}",
        stage_evidence=_finite(decision.evidence),
        sample_size=report.sample_size,
        train_start=spec.start,
        train_end=spec.end,
        test_start=spec.end,
        test_end=end_test,
        data_hash=data_hash,
        code_version=code_version(),
        seed=trained.seed,
        # where the training ran (a TrainedParameters pickled before it carried one: this process)
        environment=getattr(trained, "environment", None) or numerical_environment(),
        run_spec=spec.model_dump(mode="json"),
        circuit_breakers=universe.effective_circuit_breakers,
        orchestrator_run_id=orchestrator_run_id,
    )
