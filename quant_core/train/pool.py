"""Train a pool's parameters on one window with the method its run spec names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from quant_core.data.panel import PricePanel
from quant_core.spec import RunSpec
from quant_core.train.objective import PoolObjective
from quant_core.train.search import SearchResult, optuna_search

IMPLEMENTED_METHODS = ("optuna",)


@dataclass
class TrainedPool:
    params: dict[str, list[float]]  # user units, alphabetical token order
    objective: float  # the training metric at params on the training window
    metric: str
    method: str
    seed: int
    start: datetime
    end: datetime
    search: SearchResult


def train_pool(
    panel: PricePanel,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedPool:
    """Maximise spec.return_val over [start, end) (default: the spec's training window)."""
    method = spec.optimisation_settings.method
    if method not in IMPLEMENTED_METHODS:
        raise NotImplementedError(
            f"optimisation_settings.method {method!r} is not available yet; use one of {IMPLEMENTED_METHODS}"
        )
    start, end = start or spec.start, end or spec.end
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    objective = PoolObjective(panel, spec, start, end)
    result = optuna_search(objective, spec, seed=seed, n_trials=n_trials, log=log)
    return TrainedPool(
        params=result.best_params,
        objective=result.best_value,
        metric=objective.metric_name,
        method=method,
        seed=seed,
        start=start,
        end=end,
        search=result,
    )
