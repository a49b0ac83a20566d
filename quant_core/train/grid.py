"""Grid and random search: candidates scored in batches, one vmapped forward pass per batch.

The parameter space comes from `optimisation_settings.search_settings.parameter_space` (user units):
a list of values, or a range {low, high, log_scale, n} (grid: n points, geometric when log_scale;
random: drawn uniformly, log-uniformly when log_scale). A parameter absent from it searches the
rule's schema range with `default_points` grid points. `scalar: true` (the default) gives every token
the same value; `scalar: false` searches each token separately (grid axes multiply).

Candidates are scored with `PoolEvaluator` on the training part (and the validation part, when
val_fraction > 0, as the same pool continued). Batches are padded to `batch_size`, so one compiled
function serves every batch. The result holds the whole table, the top-k by the training objective
and evaluations per second.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from quant_core.spec import RunSpec
from quant_core.train.problem import NoFiniteCandidate, SearchAxis, SearchProblem

MAX_GRID = 10_000_000


@dataclass
class GridResult:
    best_params: dict[str, list[float]]
    best_value: float
    table: list[dict] = field(default_factory=list)  # one row per candidate: parameters and metrics
    top: list[dict] = field(default_factory=list)
    n_evaluations: int = 0
    seconds: float = 0.0
    evaluations_per_second: float = 0.0
    batch_size: int = 0
    candidates: list[dict] = field(default_factory=list)  # parameters of the top-k, best first


def grid_points(axes: list[SearchAxis]) -> np.ndarray:
    size = math.prod(len(a.values) for a in axes)
    if size > MAX_GRID:
        raise ValueError(f"the grid has {size:,} points (over {MAX_GRID:,}): use fewer values per parameter, "
                         "scalar: true, or method: random")
    return np.array(list(itertools.product(*(a.values for a in axes))), dtype=np.float64).reshape(size, len(axes))


def random_points(axes: list[SearchAxis], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = []
    for a in axes:
        if a.values is not None:
            cols.append(rng.choice(a.values, n))
        elif a.log_scale:
            cols.append(np.exp(rng.uniform(np.log(a.low), np.log(a.high), n)))
        else:
            cols.append(rng.uniform(a.low, a.high, n))
        if a.kind == "int":
            cols[-1] = np.round(cols[-1])
    return np.stack(cols, axis=1)


def candidate_params(axes: list[SearchAxis], points: np.ndarray, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: [C, n]} user units: the base (initial) parameters with the searched entries replaced."""
    c = points.shape[0]
    out = {k: np.broadcast_to(v, (c, *v.shape)).copy() for k, v in base.items()}
    for j, a in enumerate(axes):
        if a.token is None:
            out[a.name][:] = points[:, j].reshape((c,) + (1,) * (out[a.name].ndim - 1))
        else:
            out[a.name][..., a.token] = points[:, j].reshape((c,) + (1,) * (out[a.name].ndim - 2))
    return out


def _row(axes: list[SearchAxis], point: np.ndarray, tokens: list[str]) -> dict:
    return {(a.name if a.token is None else f"{a.name}[{tokens[a.token]}]"): float(v)
            for a, v in zip(axes, point, strict=True)}


def run_grid(problem: SearchProblem, spec: RunSpec, *, seed: int | None = None, n_samples: int | None = None,
             log=None) -> GridResult:
    """Score the problem's grid or n_samples random candidates in padded, vmapped batches."""
    method = spec.optimisation_settings.method
    settings = spec.optimisation_settings.search_settings
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    axes = problem.axes("grid" if method == "grid" else "random")
    points = grid_points(axes) if method == "grid" else random_points(axes, n_samples or settings.n_samples, seed)
    names = tuple(dict.fromkeys((spec.return_val, *problem.table_metrics)))
    evaluator = problem.evaluator(names, 0)
    base = problem.base
    batch = min(settings.batch_size, len(points))
    began = time.perf_counter()
    scores = []
    for lo in range(0, len(points), batch):
        chunk = points[lo : lo + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])
        scores.append(evaluator.scores(candidate_params(axes, padded, base))[: len(chunk)])
        if log:
            log(f"{method} search: {min(lo + batch, len(points))}/{len(points)} candidates")
    seconds = time.perf_counter() - began
    scores = np.concatenate(scores)  # [C, metrics, segments]
    tokens = problem.tokens
    table = []
    for i, point in enumerate(points):
        row = {"candidate": i, **_row(axes, point, tokens)}
        for m, name in enumerate(names):
            row[f"train_{name}"] = float(scores[i, m, 0])
            if problem.has_validation:
                row[f"validation_{name}"] = float(scores[i, m, 1])
        table.append(row)
    objective = scores[:, 0, 0]
    if not np.isfinite(objective).any():
        raise NoFiniteCandidate("every candidate produced a non-finite objective; check the prices and the search space"
                           + (" (or lower strategy_settings.min_trades)" if spec.kind == "strategy" else ""))
    order = np.argsort(-objective, kind="stable")
    best = int(order[0])
    # the best top_k that could be evaluated at all: one with no finite score anywhere (it broke a constraint
    # between parameters) is no configuration; one that only failed a guard (min_trades) stays as evidence
    scored = np.isfinite(scores).reshape(len(points), -1).any(axis=1)
    top = [i for i in order[: settings.top_k] if scored[i]]
    top_params = candidate_params(axes, points[top], base)
    candidates = [{k: v[i].tolist() for k, v in top_params.items()} for i in range(len(top))]
    return GridResult(
        best_params=candidates[0],
        candidates=candidates,
        best_value=float(objective[best]),
        table=table,
        top=[table[i] for i in order[: settings.top_k]],
        n_evaluations=len(points),
        seconds=seconds,
        evaluations_per_second=len(points) / seconds if seconds > 0 else float("inf"),
        batch_size=batch,
    )
