"""Train a pool's parameters on one window with the method its run spec names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from quant_core.data.panel import PricePanel
from quant_core.sim.pool import get_pool
from quant_core.spec import RunSpec
from quant_core.train.problem import SearchProblem

METHODS = ("gradient_descent", "optuna", "grid", "random")


def pool_problem(panel: PricePanel, spec: RunSpec, start: datetime | None = None,
                 end: datetime | None = None) -> SearchProblem:
    """The pool as a gradient-free search problem: segments of one continuous pass over [start, end)."""
    from quant_core.sim.simulate import resolve_params
    from quant_core.train.grid import TABLE_METRICS, search_axes
    from quant_core.train.objective import PoolEvaluator
    from quant_core.train.search import search_space, study_segments
    from quant_core.train.split import plan_split

    split = plan_split(panel, spec, start, end)

    def evaluator(metrics: tuple[str, ...], n_sub_periods: int) -> PoolEvaluator:
        return PoolEvaluator(panel, spec, split.start, split.end, metrics=metrics,
                             segments=study_segments(split, n_sub_periods))

    return SearchProblem(base=resolve_params(spec), tokens=spec.sorted_tokens, has_validation=split.val_steps > 0,
                         axes=lambda points: search_axes(spec, points), dimensions=lambda: search_space(spec),
                         evaluator=evaluator, table_metrics=TABLE_METRICS)


@dataclass
class TrainedPool:
    # user units: pools {name: [per token, alphabetical]} (ensemble__: one list per member);
    # CEX strategies {name: number}
    params: dict[str, list] | dict[str, float]
    objective: float  # the score the method selected on (gradient descent: the monitored validation metric)
    metric: str
    method: str
    seed: int
    start: datetime
    end: datetime
    n_evaluations: int  # iterations (gradient descent), trials (optuna) or candidates (grid / random)
    seconds: float
    history: list[dict] = field(default_factory=list)
    # configurations the method weighed, best first (user units): evidence for the overfitting statistics
    candidates: list[dict] = field(default_factory=list)
    n_configurations: int = 1  # independent configurations tried (GD: parameter sets; search: trials)
    details: dict = field(default_factory=dict)  # method specifics: split, best set, top-k, checkpoints, timings


def train_pool(
    panel: PricePanel,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    iterations_per_print: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedPool:
    """Maximise spec.return_val over [start, end) (default: the spec's training window).

    `n_trials` overrides the method's budget: iterations (gradient descent), trials (optuna) or random
    candidates (random; a grid's size is its own)."""
    method = spec.optimisation_settings.method
    start, end = start or spec.start, end or spec.end
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    common = {"params": None, "metric": spec.return_val, "method": method, "seed": seed, "start": start, "end": end}
    if method == "gradient_descent":
        from quant_core.train.gradient import train_gradient

        g = train_gradient(panel, spec, start=start, end=end, seed=seed, n_iterations=n_trials,
                           iterations_per_print=iterations_per_print, log=log)
        ckpt = [p for c in g.checkpoints for p in c["params"]]
        common.update(params=g.params, objective=g.monitored, n_evaluations=g.n_iterations,
                      candidates=g.candidates + ckpt, n_configurations=len(g.candidates),
                      seconds=g.timings["total_s"], history=g.history,
                      details={"best_set": g.best_set, "best_iteration": g.best_iteration,
                               "stopped_early": g.stopped_early, "split": g.split, "timings": g.timings,
                               "checkpoints": g.checkpoints,
                               "selected_on": "validation" if g.split["validation_steps"] else "train"})
    elif method == "optuna":
        from quant_core.train.search import optuna_search

        r = optuna_search(panel, spec, start=start, end=end, seed=seed, n_trials=n_trials, log=log)
        common.update(params=r.best_params, objective=r.best_value, n_evaluations=r.n_trials, seconds=r.seconds,
                      candidates=r.candidates, n_configurations=r.n_trials,
                      history=r.history, details={"stopped_early": r.stopped_early, "study_name": r.study_name,
                                                  "sampler": spec.optimisation_settings.optuna_settings.sampler})
    elif method in ("grid", "random"):
        from quant_core.train.grid import grid_search

        r = grid_search(panel, spec, start=start, end=end, seed=seed, n_samples=n_trials, log=log)
        common.update(params=r.best_params, objective=r.best_value, n_evaluations=r.n_evaluations,
                      seconds=r.seconds, history=r.table, candidates=r.candidates, n_configurations=r.n_evaluations,
                      details={"top": r.top, "evaluations_per_second": r.evaluations_per_second,
                               "batch_size": r.batch_size})
    else:  # the spec model admits only METHODS
        raise ValueError(f"optimisation_settings.method {method!r}: use one of {METHODS}")
    # report the parameters the pool reads under this spec (e.g. memory_days_2 only with use_alt_lamb)
    pool = get_pool(spec.rule)
    active = {p.name for p in pool.params if p.active(spec)}
    common["params"] = {k: v for k, v in common["params"].items() if k in active}
    common["candidates"] = [{k: v for k, v in c.items() if k in active} for c in common["candidates"]]
    return TrainedPool(**common)
