"""Lifecycle stages of a trained configuration, decided by a pure function of its evidence.

Why a pure function: live trading must be able to ask "why is this MATURE?" and get the same
answer from the stored evidence alone. `assign_stage` never reads a clock or a database.

Default rules (overridable per universe through `StageThresholds`):

- DISCOVERY  when sample_size < 30
- VALIDATION when 30 <= sample_size <= 100, or when a larger sample misses a MATURE criterion
- MATURE     when sample_size > 100, out-of-sample Sharpe > 1.5, the deflated-Sharpe p-value (when
             known) < 0.05, and no overfitting flag (set by the caller, or by a probability of backtest
             overfitting above `mature_max_pbo` = 0.5: the in-sample winner is more often than not
             below the out-of-sample median)
- RETIRED    when a previously promoted configuration's latest out-of-sample Sharpe falls below
             `retire_below_sharpe` (or a circuit breaker tripped); supersession is recorded by the store.

Sample size: number of trades for trade-based strategies; number of out-of-sample daily returns
for pools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class LifecycleStage(StrEnum):
    DISCOVERY = "DISCOVERY"
    VALIDATION = "VALIDATION"
    MATURE = "MATURE"
    RETIRED = "RETIRED"


@dataclass(frozen=True)
class StageThresholds:
    discovery_below: int = 30
    mature_above: int = 100
    mature_min_oos_sharpe: float = 1.5
    mature_max_p_value: float = 0.05
    mature_max_pbo: float = 0.5
    retire_below_sharpe: float = 0.0


@dataclass(frozen=True)
class StageEvidence:
    """What the stage is decided from (all out-of-sample)."""

    sample_size: int
    oos_sharpe: float
    p_value: float | None = None  # deflated-Sharpe p-value
    overfitting_flag: bool = False
    circuit_breaker_tripped: bool = False
    previous_stage: LifecycleStage | None = None
    pbo: float | None = None  # probability of backtest overfitting (CSCV)


@dataclass(frozen=True)
class StageDecision:
    stage: LifecycleStage
    reason: str
    evidence: dict = field(default_factory=dict)


#: Circuit-breaker defaults every configuration carries for live trading (seed plan values).
DEFAULT_CIRCUIT_BREAKERS: dict[str, float] = {
    "max_daily_loss": 0.02,
    "max_correlation_spike": 0.8,
    "unusual_market_threshold": 3.0,
    "latency_threshold_ms": 500,
    "consecutive_losses_limit": 5,
    "max_adverse_selection": 0.6,
    "regime_break_threshold": 0.3,
}


def mature_misses(ev: StageEvidence, th: StageThresholds) -> list[str]:
    """The MATURE criteria besides sample size that the evidence misses (empty: all met). One place for
    them: the stage decision and the platform's out-of-sample threshold check both read it."""
    missing = []
    if not math.isfinite(ev.oos_sharpe) or ev.oos_sharpe <= th.mature_min_oos_sharpe:
        missing.append(f"out-of-sample Sharpe {ev.oos_sharpe:.3f} <= {th.mature_min_oos_sharpe}")
    if ev.p_value is not None and not ev.p_value < th.mature_max_p_value:
        missing.append(f"p-value {ev.p_value:.3g} >= {th.mature_max_p_value}")
    if ev.overfitting_flag:
        missing.append("overfitting flag set")
    if ev.pbo is not None and ev.pbo > th.mature_max_pbo:
        missing.append(f"probability of backtest overfitting {ev.pbo:.2f} > {th.mature_max_pbo}")
    return missing


def assign_stage(ev: StageEvidence, th: StageThresholds | None = None) -> StageDecision:
    """Stage of a configuration from its out-of-sample evidence (see module docstring)."""
    th = th or StageThresholds()
    evidence = {
        "sample_size": ev.sample_size,
        "oos_sharpe": ev.oos_sharpe,
        "p_value": ev.p_value,
        "overfitting_flag": ev.overfitting_flag,
        "pbo": ev.pbo,
        "circuit_breaker_tripped": ev.circuit_breaker_tripped,
        "previous_stage": ev.previous_stage.value if ev.previous_stage else None,
    }
    if ev.sample_size < 0:
        raise ValueError(f"sample_size must be >= 0, got {ev.sample_size}")
    sharpe_ok = math.isfinite(ev.oos_sharpe)
    promoted_before = ev.previous_stage in (LifecycleStage.VALIDATION, LifecycleStage.MATURE)

    if promoted_before and ev.circuit_breaker_tripped:
        return StageDecision(LifecycleStage.RETIRED, "a circuit breaker tripped", evidence)
    if promoted_before and (not sharpe_ok or ev.oos_sharpe < th.retire_below_sharpe):
        return StageDecision(
            LifecycleStage.RETIRED,
            f"out-of-sample Sharpe {ev.oos_sharpe:.3f} < retire threshold {th.retire_below_sharpe}",
            evidence,
        )
    if ev.sample_size < th.discovery_below:
        return StageDecision(
            LifecycleStage.DISCOVERY, f"sample size {ev.sample_size} < {th.discovery_below}", evidence
        )
    if ev.sample_size <= th.mature_above:
        return StageDecision(
            LifecycleStage.VALIDATION,
            f"sample size {ev.sample_size} in [{th.discovery_below}, {th.mature_above}]",
            evidence,
        )
    missing = mature_misses(ev, th)
    if missing:
        return StageDecision(
            LifecycleStage.VALIDATION,
            f"sample size {ev.sample_size} > {th.mature_above} but " + "; ".join(missing),
            evidence,
        )
    return StageDecision(
        LifecycleStage.MATURE,
        f"sample size {ev.sample_size} > {th.mature_above}, out-of-sample Sharpe "
        f"{ev.oos_sharpe:.3f} > {th.mature_min_oos_sharpe}",
        evidence,
    )
