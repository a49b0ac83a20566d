"""A training search cut into parts that can run as separate steps (on different workers), combined into the
result one in-process `train` gives.

- grid / random: the candidates (deterministic given the seed) are cut into ranges that start on batch
  boundaries; each part scores its range (`grid.score_points`) and combining concatenates the scores, so the
  result equals `run_grid`'s bit for bit.
- optuna with more than one part: the study lives in a storage every part reaches (PostgreSQL when the parts run
  on several machines); each part is a worker that asks its share of the trials with its own sampler seed (seed +
  part index) and sees every worker's trials; the result is read back from the storage. Like any parallel
  Optuna study, which trials it proposes depends on how the workers interleave.
- gradient_descent, bfgs, cma_es, and a one-part optuna study: one part, the whole `train`.

Everything a part needs (the candidate range, the seed, the budget, the study) is in its `SearchPart`, so a
part rebuilds its search from the data and the spec alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from quant_core.spec import RunSpec
from quant_core.spec_sections import SPLITTABLE_METHODS
from quant_core.train.method_settings import check_method_settings
from quant_core.train.trainer import TrainedParameters, finish, grid_fields, study_fields, train
from quant_core.tunables import tunable_for

CANDIDATES_PER_PART = 50_000  # grid/random candidates per part when the caller does not choose the parts
MAX_PARTS = 256


@dataclass(frozen=True)
class SearchPart:
    index: int
    n_parts: int
    kind: str  # "whole" (one train call), "candidates" (grid/random range) or "worker" (shared optuna study)
    seed: int
    budget: int | None = None  # train's n_trials: iterations, trials, generations or random candidates
    lo: int = 0  # candidates: lo..hi-1 of the search's candidates
    hi: int = 0
    n_trials: int = 0  # worker: the trials it asks
    storage: str | None = None  # worker: the shared study's storage URL and name
    study_name: str | None = None
    job_id: int | None = None  # the caller's record of the training (quant_core.store training_jobs)

    def describe(self) -> str:
        if self.kind == "candidates":
            return f"part {self.index + 1}/{self.n_parts}: candidates {self.lo}..{self.hi - 1}"
        if self.kind == "worker":
            return f"part {self.index + 1}/{self.n_parts}: {self.n_trials} trials of study {self.study_name}"
        return "the whole search"


@dataclass
class PartOutcome:
    part: SearchPart
    seconds: float
    trained: TrainedParameters | None = None  # whole
    scores: np.ndarray | None = None  # candidates: [hi - lo, metrics, segments]
    n_trials: int = 0  # worker: trials run


def plan_search(data: Any, spec: RunSpec, *, seed: int | None = None, budget: int | None = None,
                n_parts: int | None = None, storage: str | None = None,
                study_name: str | None = None) -> list[SearchPart]:
    """The parts of the search the spec asks for, after checking the method settings and the data (before any
    long work). n_parts None: grid/random one part per CANDIDATES_PER_PART candidates, every other method one
    part. More than one optuna part needs `storage` (a database every part reaches) and `study_name`."""
    tunable = tunable_for(spec)
    method = spec.optimisation_settings.method
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    check_method_settings(spec, differentiable=tunable.differentiable)
    tunable.validate_data(data, spec.start, spec.end)
    if n_parts is not None and not 1 <= n_parts <= MAX_PARTS:
        raise ValueError(f"search_steps={n_parts}: use 1 to {MAX_PARTS}")
    if n_parts not in (None, 1) and method not in SPLITTABLE_METHODS:
        raise ValueError(f"search_steps={n_parts}: method {method} trains one path and cannot be split; split "
                         f"{', '.join(SPLITTABLE_METHODS)} searches only, or leave search_steps unset")
    whole = [SearchPart(0, 1, "whole", seed, budget)]
    if method in ("grid", "random"):
        from quant_core.train.grid import batch_size, search_points

        _, points = search_points(tunable.problem(data, spec.start, spec.end), spec, seed=seed, n_samples=budget)
        batch = batch_size(spec, len(points))
        batches = math.ceil(len(points) / batch)
        wanted = n_parts or math.ceil(len(points) / CANDIDATES_PER_PART)
        per = math.ceil(batches / min(wanted, batches)) * batch
        ranges = [(lo, min(lo + per, len(points))) for lo in range(0, len(points), per)]
        return [SearchPart(i, len(ranges), "candidates", seed, budget, lo=lo, hi=hi)
                for i, (lo, hi) in enumerate(ranges)]
    if method == "optuna" and (n_parts or 1) > 1:
        if not storage or not study_name:
            raise ValueError(f"search_steps={n_parts} with optuna shares one study between the steps: it needs a "
                             "database every step reaches (optimisation_settings.optuna_settings.storage.url, or "
                             "the configuration store's PostgreSQL) and a study name")
        from quant_core.train.search import create_shared_study

        trials = budget or spec.optimisation_settings.optuna_settings.n_trials
        n = min(n_parts, trials)
        create_shared_study(spec, storage=storage, study_name=study_name, seed=seed)
        return [SearchPart(i, n, "worker", seed, budget, n_trials=trials // n + (i < trials % n), storage=storage,
                           study_name=study_name) for i in range(n)]
    return whole


def run_part(data: Any, spec: RunSpec, part: SearchPart, *,
             log: Callable[[str], None] | None = None) -> PartOutcome:
    """Run one part of the search (any process, any machine with the data and the spec)."""
    began = time.perf_counter()
    if part.kind == "whole":
        trained = train(data, spec, seed=part.seed, n_trials=part.budget, log=log,
                        iterations_per_print=max(1, spec.optimisation_settings.n_iterations // 10))
        return PartOutcome(part, time.perf_counter() - began, trained=trained)
    problem = tunable_for(spec).problem(data, spec.start, spec.end)
    if part.kind == "candidates":
        from quant_core.train.grid import score_points, search_points

        axes, points = search_points(problem, spec, seed=part.seed, n_samples=part.budget)
        scores = score_points(problem, spec, axes, points, part.lo, part.hi, log=log)
        return PartOutcome(part, time.perf_counter() - began, scores=scores)
    from quant_core.train.search import run_study_worker

    n = run_study_worker(problem, spec, storage=str(part.storage), study_name=str(part.study_name),
                         seed=part.seed + part.index, n_trials=part.n_trials, log=log)
    return PartOutcome(part, time.perf_counter() - began, n_trials=n)


def combine_parts(data: Any, spec: RunSpec, outcomes: Sequence[PartOutcome]) -> TrainedParameters:
    """The trained parameters from every part's outcome (in any order)."""
    ordered = sorted(outcomes, key=lambda o: o.part.index)
    n = ordered[0].part.n_parts if ordered else 0
    if [o.part.index for o in ordered] != list(range(n)) or n == 0:
        raise ValueError(f"combine_parts: outcomes of parts {[o.part.index for o in ordered]}, expected 0..{n - 1}")
    first = ordered[0].part
    if first.kind == "whole":
        return ordered[0].trained
    tunable = tunable_for(spec)
    problem = tunable.problem(data, spec.start, spec.end)
    seconds = sum(o.seconds for o in ordered)  # step time summed: the search's cost, whatever ran in parallel
    common: dict[str, Any] = {"metric": spec.return_val, "method": spec.optimisation_settings.method,
                              "seed": first.seed, "start": spec.start, "end": spec.end}
    if first.kind == "candidates":
        from quant_core.train.grid import grid_result, search_points

        axes, points = search_points(problem, spec, seed=first.seed, n_samples=first.budget)
        scores = np.concatenate([o.scores for o in ordered])
        common.update(grid_fields(grid_result(problem, spec, axes, points, scores, seconds)))
    else:
        from quant_core.train.search import shared_study_result

        stopped = any(o.n_trials < o.part.n_trials for o in ordered)  # a worker's early stopping or timeout
        common.update(study_fields(shared_study_result(problem, spec, storage=str(first.storage),
                                                       study_name=str(first.study_name), stopped=stopped,
                                                       seconds=seconds), spec))
    common["details"]["parts"] = [{"part": o.part.index, "seconds": round(o.seconds, 3)} for o in ordered]
    return finish(tunable, common)


def with_job(parts: list[SearchPart], job_id: int) -> list[SearchPart]:
    return [replace(p, job_id=job_id) for p in parts]
