"""Method `cma_es`: CMA-ES (quant_core.train.cma_es) on any tunable, one restart per parameter set.

Differentiable pool rules: the reference's setting. The fixed objective of quant_core.train.fixed_windows
(mean return_val over fixed windows of the training part) in gradient descent's unconstrained space,
restarts from gradient descent's starting sets, sigma0 in that space; each generation's candidates of
every restart are scored by one jitted, vmapped call.

CEX strategies and pool rules without gradients go through the tunable's search problem, as grid and
random search do: the axes of `search_settings.parameter_space` (the schema's ranges by default), each
mapped to a coordinate in [0, 1] (a range linearly, or in log on a log scale; whole numbers rounded; a list
of values or choices cut into equal parts), a coordinate outside [0, 1] reflected back in, so the search
space is all of R^d; sigma0 is in these coordinates. Restart 0 starts at the run's initial parameters,
restarts 1.. add N(0, noise_scale^2) to every coordinate. The score is the problem's training-part
return_val (-inf for a candidate that fails a guard such as strategy_settings.min_trades); a generation is
one batched evaluator call.

The result (both paths) is the best point each restart evaluated (its start included); the restart with the best
early_stopping_metric on the validation part (training part without one) is selected, as for `bfgs`.
n_configurations counts every candidate scored, as for random search (the best is a maximum over them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jax.numpy as jnp
import numpy as np

from quant_core.spec import RunSpec
from quant_core.train.cma_es import CmaRun, default_population, minimise_cma_es
from quant_core.train.fixed_windows import (
    FixedWindowObjective,
    MethodOutcome,
    score_record,
    select,
    selection_metrics,
    to_lists,
    with_seed,
)
from quant_core.train.grid import candidate_params
from quant_core.train.method_settings import CmaEsSettings, cma_es_settings, hessian_trace_settings
from quant_core.train.problem import SearchAxis


class Box:
    """Searched axes <-> coordinates in R^d (module docstring)."""

    def __init__(self, axes: list[SearchAxis]) -> None:
        self.axes = axes

    @staticmethod
    def _reflect(x: np.ndarray) -> np.ndarray:
        t = np.mod(x, 2.0)
        return np.where(t > 1.0, 2.0 - t, t)

    def decode(self, x: np.ndarray) -> np.ndarray:
        """[N, d] coordinates -> [N, d] axis values."""
        y = self._reflect(np.asarray(x, dtype=np.float64))
        out = np.empty_like(y)
        for j, a in enumerate(self.axes):
            if a.values is not None:
                idx = np.minimum((y[:, j] * len(a.values)).astype(np.int64), len(a.values) - 1)
                out[:, j] = np.asarray(a.values, dtype=np.float64)[idx]
                continue
            if a.log_scale:
                v = np.exp(np.log(a.low) + y[:, j] * (np.log(a.high) - np.log(a.low)))
            else:
                v = a.low + y[:, j] * (a.high - a.low)
            out[:, j] = np.clip(np.round(v), np.ceil(a.low), np.floor(a.high)) if a.kind == "int" else v
        return out

    def encode(self, base: dict[str, np.ndarray]) -> np.ndarray:
        """[d]: the coordinates of the problem's base (initial) parameters."""
        x = np.empty(len(self.axes))
        for j, a in enumerate(self.axes):
            vals = np.asarray(base[a.name], dtype=np.float64).reshape(-1)
            v = float(vals[0] if a.token is None else vals[a.token])
            if a.values is not None:
                i = int(np.argmin(np.abs(np.asarray(a.values, dtype=np.float64) - v)))
                x[j] = (i + 0.5) / len(a.values)
            elif a.log_scale:
                x[j] = (np.log(max(v, a.low)) - np.log(a.low)) / (np.log(a.high) - np.log(a.low))
            else:
                x[j] = (v - a.low) / (a.high - a.low)
        return np.clip(x, 0.0, 1.0)


def population_size(settings: CmaEsSettings, dim: int, n_windows: int, n_restarts: int) -> int:
    """population_size, else the default raised to fill memory_budget (the reference's rule: lambda =
    max(default, budget // windows), here per restart as all restarts run together), else the default."""
    if settings.population_size is not None:
        return settings.population_size
    lam = default_population(dim)
    if settings.memory_budget is not None:
        lam = max(lam, settings.memory_budget // max(n_windows * n_restarts, 1))
    return lam


def _history(run: CmaRun, first: dict, last: dict) -> list[dict]:
    """Gradient descent's shape: 'iteration' (generation), 'objective' per restart (best so far, maximised)."""
    rows = [first]
    for h in run.history:
        rows.append({"iteration": h["generation"], "objective": [-v for v in h["best_so_far"]],
                     "generation_best": [-v for v in h["best"]], "generation_median": [-v for v in h["median"]],
                     "sigma": h["sigma"], "running": h["running"]})
    rows[-1] = {**rows[-1], **last}
    return rows


def _padded(x: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), axis=0)]) if len(x) < rows else x


def _pool_path(data, spec: RunSpec, settings: CmaEsSettings, n_generations: int, start, end, log, every):
    from quant_core.train.objective import PoolEvaluator
    from quant_core.train.params import initial_sets, parameter_layout
    from quant_core.train.split import plan_split

    opt = spec.optimisation_settings
    hessian = hessian_trace_settings(opt)
    layout = parameter_layout(spec)
    split = plan_split(data, spec, start, end)
    names = selection_metrics(spec)
    objective = FixedWindowObjective(data, spec, split, layout, settings.n_evaluation_points, hessian)
    evaluator = PoolEvaluator(data, spec, split.start, split.end, metrics=names, segments=split.segments)
    x0 = objective.flatten(initial_sets(layout, spec))
    lam = population_size(settings, objective.dim, objective.n_windows, len(x0))
    if log:
        log(f"cma_es: {len(x0)} restart(s) of {objective.dim} parameters, lambda {lam}, "
            f"{objective.n_windows} evaluation windows")
    with objective.device():
        def evaluate(x: np.ndarray) -> np.ndarray:
            return np.asarray(objective.population(jnp.asarray(x)))

        f0 = evaluate(_padded(x0, len(x0) * lam))[: len(x0)]
        run = minimise_cma_es(evaluate, x0, sigma0=settings.sigma0, n_generations=n_generations, tol=settings.tol,
                              seed=opt.initial_random_key, lam=lam, f0=f0, log=log, log_every=every)
    user0, user1 = objective.user_sets(x0), objective.user_sets(run.best_x)
    scores0, scores1 = evaluator.scores(user0), evaluator.scores(user1)
    params = [to_lists(user1, i) for i in range(len(x0))]
    extra = {"evaluation_offsets": objective.offsets.tolist(), "n_windows": objective.n_windows,
             "hessian_trace": hessian is not None,
             "split": {"train_steps": split.train_steps, "validation_steps": split.val_steps,
                       "window_steps": split.window_steps, "offset_range": split.offset_range}}
    return run, f0, scores0, scores1, params, names, split.val_steps > 0, extra


def _problem_path(tunable: Any, data, spec: RunSpec, settings: CmaEsSettings, n_generations: int, start, end,
                  log, every):
    opt = spec.optimisation_settings
    problem = tunable.problem(data, start, end)
    axes = problem.axes("random")
    box = Box(axes)
    names = selection_metrics(spec)
    evaluator = problem.evaluator(names, 0)
    rng = np.random.default_rng(np.random.SeedSequence([opt.initial_random_key, 2]))
    x0 = np.broadcast_to(box.encode(problem.base), (opt.n_parameter_sets, len(axes))).copy()
    x0[1:] += opt.noise_scale * rng.standard_normal(x0[1:].shape)
    lam = population_size(settings, len(axes), 1, len(x0))
    if log:
        log(f"cma_es: {len(x0)} restart(s) over {len(axes)} searched axes, lambda {lam}")

    def scores(x: np.ndarray) -> np.ndarray:
        return evaluator.scores(candidate_params(axes, box.decode(x), problem.base))

    def evaluate(x: np.ndarray) -> np.ndarray:
        f = -scores(x)[:, 0, 0]
        return np.where(np.isfinite(f), f, np.inf)

    f0 = evaluate(_padded(x0, len(x0) * lam))[: len(x0)]
    run = minimise_cma_es(evaluate, x0, sigma0=settings.sigma0, n_generations=n_generations, tol=settings.tol,
                          seed=opt.initial_random_key, lam=lam, f0=f0, log=log, log_every=every)
    rows = len(x0) * lam
    scores0 = scores(_padded(x0, rows))[: len(x0)]
    scores1 = scores(_padded(run.best_x, rows))[: len(x0)]
    found = candidate_params(axes, box.decode(run.best_x), problem.base)
    params = [{k: v[i].tolist() for k, v in found.items()} for i in range(len(x0))]
    extra = {"axes": [a.label for a in axes]}
    return run, f0, scores0, scores1, params, names, problem.has_validation, extra


def train_cma_es(
    tunable: Any,
    data: Any,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_generations: int | None = None,
    settings: CmaEsSettings | None = None,
    log: Callable[[str], None] | None = None,
    iterations_per_print: int | None = None,
) -> MethodOutcome:
    """Maximise spec.return_val over [start, end) of the tunable's data by CMA-ES (module docstring)."""
    began = time.perf_counter()
    spec = with_seed(spec, seed)
    opt = spec.optimisation_settings
    settings = settings or cma_es_settings(opt)
    n_generations = n_generations or settings.n_generations
    start, end = start or spec.start, end or spec.end
    if tunable.kind == "pool" and tunable.differentiable:
        out = _pool_path(data, spec, settings, n_generations, start, end, log, iterations_per_print or 0)
    else:
        out = _problem_path(tunable, data, spec, settings, n_generations, start, end, log, iterations_per_print or 0)
    run, f0, scores0, scores1, params, names, has_val, extra = out
    order, monitored = select(scores1, names, has_val, opt.early_stopping_metric)
    best = int(order[0])
    first = score_record({"iteration": 0, "objective": (-f0).tolist()}, scores0, names, has_val)
    last = score_record({"generations": run.generations.tolist(), "stopped": run.stopped.tolist()}, scores1, names,
                        has_val)
    total = time.perf_counter() - began
    if log:
        log(f"cma_es: restart {best} selected, {opt.early_stopping_metric} {monitored[best]:.4f} on the "
            f"{'validation' if has_val else 'training'} part, {run.n_evaluations} candidates scored")
    return MethodOutcome(
        params=params[best], objective=float(monitored[best]), n_evaluations=run.n_evaluations,
        n_configurations=run.n_evaluations, seconds=total, history=_history(run, first, last),
        candidates=[params[int(i)] for i in order],
        details={"best_set": best, "selected_on": "validation" if has_val else "train", "population_size": run.lam,
                 "monitored_per_set": monitored.tolist(), "objective_per_set": (-run.best_f).tolist(),
                 "initial_objective_per_set": (-f0).tolist(), "generations_per_set": run.generations.tolist(),
                 "final_sigma_per_set": run.sigma.tolist(), "timings": {"total_s": total}, **extra},
    )
