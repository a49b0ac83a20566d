"""Every tunable behind one face: `tunable_for(spec)` gives the pool rule's or the CEX strategy's
implementation of `quant_core.contract.Tunable` for a run spec."""

from __future__ import annotations

from quant_core.contract import Evaluation, Tunable
from quant_core.spec import RunSpec, StrategySpec
from quant_core.tunables.pool import PoolTunable
from quant_core.tunables.strategy import StrategyTunable

__all__ = ["Evaluation", "PoolTunable", "StrategyTunable", "Tunable", "tunable_for"]


def tunable_for(spec: RunSpec) -> Tunable:
    """The tunable a run spec trains: its `strategy` (a StrategySpec) or its pool `rule` (a PoolSpec)."""
    return StrategyTunable(spec) if isinstance(spec, StrategySpec) else PoolTunable(spec)
