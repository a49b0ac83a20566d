"""What a gradient-free search needs of the thing it tunes, so grid, random and Optuna search serve
TFMM pools and CEX strategies alike.

A `SearchProblem` gives the starting parameters (user units, {name: [n]}), the search axes (grid and
random search) and dimensions (Optuna), and an evaluator factory: `evaluator(metrics, n_sub_periods)`
scores a batch {name: [B, n]} in one call as [B, metrics, segments], the segments being the training
part, optionally `n_sub_periods` equal sub-periods of it, then the validation part when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


class NoFiniteCandidate(RuntimeError):
    """Every candidate of a search scored a non-finite objective (bad data, or none met a guard such as
    strategy_settings.min_trades)."""


class BatchEvaluator(Protocol):
    def scores(self, params: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Axis:
    """One searched dimension of a grid/random search: a parameter (token index None = every token)
    and its values (a grid or a list to draw from) or a range to draw from."""

    name: str
    token: int | None
    values: np.ndarray | None
    low: float = 0.0
    high: float = 0.0
    log_scale: bool = False
    integer: bool = False  # draws are rounded to whole numbers


@dataclass(frozen=True)
class SearchDimension:
    """One Optuna dimension; `scalar` = one value for every token; `choices` for a categorical one."""

    name: str
    low: float
    high: float
    log_scale: bool
    scalar: bool
    kind: Literal["float", "int", "choice"] = "float"
    choices: tuple[float, ...] = ()


def expand_around(low: float, high: float, log_scale: bool, x0: float) -> tuple[float, float]:
    """optuna_settings.expand_around: [x0/4, 4 x0] on a log scale, x0 +- a quarter of the range otherwise,
    within [low, high] (the whole range when that leaves nothing)."""
    if log_scale:
        lo, hi = max(low, x0 / 4), min(high, x0 * 4)
    else:
        quarter = (high - low) / 4
        lo, hi = max(low, x0 - quarter), min(high, x0 + quarter)
    return (lo, hi) if lo < hi else (low, high)


@dataclass(frozen=True)
class SearchProblem:
    base: dict[str, np.ndarray]  # {name: [n]}: the values of parameters a search leaves alone
    tokens: list[str]  # the n per-token columns (alphabetical); one entry for a CEX strategy
    has_validation: bool
    axes: Callable[[str], list[Axis]]  # "grid" | "random" -> axes
    dimensions: Callable[[], list[SearchDimension]]
    evaluator: Callable[[tuple[str, ...], int], BatchEvaluator]  # (metrics, n_sub_periods)
    table_metrics: tuple[str, ...]  # reported per candidate besides the objective
