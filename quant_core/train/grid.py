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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from quant_core.signs import natural_value
from quant_core.spec import RunSpec
from quant_core.train.problem import NoFiniteCandidate, SearchAxis, SearchProblem
from quant_core.train.threads import search_threads

MAX_GRID = 10_000_000


@dataclass
class GridResult:
    best_params: dict[str, list[float]]
    best_value: float
    # one row per candidate: parameters and metrics, the metrics in natural signs (quant_core.signs), as every
    # report shows them (flipped here by columns: a grid has 10^5 rows); top: the best top_k rows
    table: list[dict] = field(default_factory=list)
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


def _column(a: SearchAxis, tokens: list[str]) -> str:
    """A search axis' column in the table: its name, with the token for a per-token parameter."""
    return a.name if a.token is None else f"{a.name}[{tokens[a.token]}]"


def search_points(problem: SearchProblem, spec: RunSpec, *, seed: int | None = None,
                  n_samples: int | None = None) -> tuple[list[SearchAxis], np.ndarray]:
    """The axes and the [C, axes] candidates of a grid or random search (deterministic given the seed)."""
    settings = spec.optimisation_settings.search_settings
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    if spec.optimisation_settings.method == "grid":
        axes = problem.axes("grid")
        return axes, grid_points(axes)
    axes = problem.axes("random")
    return axes, random_points(axes, n_samples or settings.n_samples, seed)


def batch_size(spec: RunSpec, n_candidates: int) -> int:
    """Candidates per vmapped call (padded): one compiled function serves every batch."""
    return min(spec.optimisation_settings.search_settings.batch_size, n_candidates)


def metric_names(problem: SearchProblem, spec: RunSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys((spec.return_val, *problem.table_metrics)))


def score_points(problem: SearchProblem, spec: RunSpec, axes: list[SearchAxis], points: np.ndarray, lo: int,
                 hi: int, *, log=None, threads: int | None = None) -> np.ndarray:
    """Scores [hi - lo, metrics, segments] of candidates lo..hi-1, in batches of batch_size(spec, len(points))
    counted from candidate 0, so a range that starts on a batch boundary is scored exactly as the whole search
    scores it (the same padded batches, bit for bit). `threads` batches are scored at once (default
    quant_core.train.threads.search_threads())."""
    batch = batch_size(spec, len(points))
    if lo % batch:
        raise ValueError(f"score_points: lo={lo} is not on a batch boundary (batch size {batch})")
    evaluator = problem.evaluator(metric_names(problem, spec), 0)
    method = spec.optimisation_settings.method
    starts = list(range(lo, hi, batch))
    threads = min(search_threads() if threads is None else threads, len(starts))  # checked before any work

    def score(b: int) -> np.ndarray:
        chunk = points[b : min(b + batch, hi)]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])
        return evaluator.scores(candidate_params(axes, padded, problem.base))[: len(chunk)]

    def done(b: int) -> None:
        if log:
            log(f"{method} search: {min(b + batch, hi) - lo}/{hi - lo} candidates"
                + (f" (of {lo}..{hi - 1} in {len(points)})" if (lo, hi) != (0, len(points)) else ""))

    scores = []
    if threads > 1:  # concurrent first calls compile once: JAX shares one compilation between them
        with ThreadPoolExecutor(threads) as pool:
            for b, s in zip(starts, pool.map(score, starts), strict=True):  # in order, each as it completes
                scores.append(s)
                done(b)
    else:
        for b in starts:
            scores.append(score(b))
            done(b)
    return np.concatenate(scores)


def run_grid(problem: SearchProblem, spec: RunSpec, *, seed: int | None = None, n_samples: int | None = None,
             log=None) -> GridResult:
    """Score the problem's grid or n_samples random candidates in padded, vmapped batches."""
    axes, points = search_points(problem, spec, seed=seed, n_samples=n_samples)
    began = time.perf_counter()
    scores = score_points(problem, spec, axes, points, 0, len(points), log=log)
    return grid_result(problem, spec, axes, points, scores, time.perf_counter() - began)


def grid_result(problem: SearchProblem, spec: RunSpec, axes: list[SearchAxis], points: np.ndarray,
                scores: np.ndarray, seconds: float) -> GridResult:
    """The search's table, best candidate and top-k from every candidate's scores [C, metrics, segments]."""
    settings = spec.optimisation_settings.search_settings
    names = metric_names(problem, spec)
    base = problem.base
    tokens = problem.tokens
    # the table built by columns (a grid has 10^5 rows): candidate, the axes, then per metric train (validation)
    columns = {"candidate": range(len(points)),
               **{_column(a, tokens): points[:, j].astype(float).tolist() for j, a in enumerate(axes)}}
    for m, name in enumerate(names):
        columns[f"train_{name}"] = natural_value(name, scores[:, m, 0].astype(float)).tolist()
        if problem.has_validation:
            columns[f"validation_{name}"] = natural_value(name, scores[:, m, 1].astype(float)).tolist()
    keys = tuple(columns)
    table = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
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
        batch_size=batch_size(spec, len(points)),
    )
