"""A universe's live settings: the gate a new version must pass to go live, and how a challenger must beat the
champion. Declared per universe in the registry (`live:`), checked when the registry loads."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: What the live gate may read: the walk-forward's stitched out-of-sample total return or Sharpe (after costs).
GATE_METRICS: dict[str, str] = {
    "oos_return": "total out-of-sample return over the walk-forward's test folds, after costs",
    "oos_sharpe": "annualised Sharpe of the out-of-sample daily log returns, after costs",
}


def _finite(name: str, v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    return v


class GateSettings(BaseModel):
    """A version may go live only if its out-of-sample `metric` beats `against` by more than `margin`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["oos_return", "oos_sharpe"] = Field(
        "oos_return", description="; ".join(f"{k}: {v}" for k, v in GATE_METRICS.items()))
    against: Literal["auto", "benchmark", "flat"] = Field(
        "auto", description="benchmark: the same metric of its benchmark over the same days (HODL of the pool's "
        "tokens; the market's buy-and-hold for a strategy); flat: zero (not trading); auto: benchmark for pools, "
        "flat for strategies")
    margin: float = Field(0.0, description="required excess, in the metric's unit")

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float) -> float:
        return _finite("margin", v)

    def against_for(self, kind: str) -> str:
        return ("benchmark" if kind == "pool" else "flat") if self.against == "auto" else self.against


class ChallengerSettings(BaseModel):
    """A challenger replaces the live champion only if, on the challenger's hold-out days, its daily log returns
    beat the champion's by more than `margin` per day in a one-sided paired t-test with p below `p_value`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    margin: float = Field(0.0, ge=0, description="mean daily log-return advantage required (0.0005 = 5 bp a day)")
    p_value: float = Field(0.05, gt=0, le=1, description="significance of the paired test")
    min_days: int = Field(20, ge=2, description="fewer paired days than this: the challenger stays a candidate")

    @field_validator("margin", "p_value")
    @classmethod
    def _fin(cls, v: float, info) -> float:
        return _finite(info.field_name, v)


class LiveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gate: GateSettings = Field(default_factory=GateSettings)
    challenger: ChallengerSettings = Field(default_factory=ChallengerSettings)
    candidates: int = Field(1, ge=0, le=10, description="how many of the newest candidates (besides the live "
                            "configuration) are run forward each day, for comparison")
