"""Gradient-free search with Optuna, evaluating trials in batches.

Optuna proposes trials one by one, but the simulator is fastest scoring many parameter sets in
one vmapped call, so we ask `n_jobs` trials, score them together and tell Optuna the results.
Batches are padded to a fixed size so one compiled function serves the whole study.

Search ranges come from the rule's parameter schema, overridden per parameter by
`optuna_settings.parameter_config` (low, high, log_scale, scalar). `scalar: true` searches one
value shared by all tokens. With `expand_around: true` the range narrows to a window around the
initial value: [initial/4, initial*4] on log-scale parameters, initial +- a quarter of the range
otherwise, intersected with [low, high].
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna

from quant_core.sim.pool import get_pool
from quant_core.sim.simulate import resolve_params
from quant_core.spec import OptunaSettings, ParameterRange, RunSpec


@dataclass(frozen=True)
class SearchDimension:
    name: str
    low: float
    high: float
    log_scale: bool
    scalar: bool


@dataclass
class SearchResult:
    best_params: dict[str, list[float]]  # user units, alphabetical token order
    best_value: float
    n_trials: int
    history: list[dict] = field(default_factory=list)  # per trial: number, value, params
    stopped_early: bool = False
    seconds: float = 0.0


def search_space(spec: RunSpec) -> list[SearchDimension]:
    rule = get_pool(spec.rule)
    settings = spec.optimisation_settings.optuna_settings
    overrides: dict[str, ParameterRange] = {}
    for key, rng in settings.parameter_config.items():
        overrides[rule.param(key).name] = rng  # raises naming the valid parameters
    initial = resolve_params(spec)
    dims = []
    for p in rule.params:
        if not p.trainable or not p.active(spec):
            continue
        rng = overrides.get(p.name, ParameterRange(low=p.low, high=p.high, log_scale=p.log_scale, scalar=p.scalar))
        low, high = rng.low, rng.high
        if settings.expand_around:
            x0 = float(np.mean(initial[p.name]))
            if rng.log_scale:
                low, high = max(low, x0 / 4), min(high, x0 * 4)
            else:
                quarter = (high - low) / 4
                low, high = max(low, x0 - quarter), min(high, x0 + quarter)
            if not low < high:
                low, high = rng.low, rng.high
        dims.append(SearchDimension(p.name, low, high, rng.log_scale, rng.scalar))
    return dims


def _sampler(settings: OptunaSettings, seed: int) -> optuna.samplers.BaseSampler:
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def optuna_search(
    objective: Callable[[dict[str, np.ndarray]], np.ndarray],
    spec: RunSpec,
    *,
    seed: int | None = None,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Maximise `objective` (batched: {name: [B, n]} -> [B]) over the spec's search space."""
    settings = spec.optimisation_settings.optuna_settings
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    n_trials = n_trials or settings.n_trials
    n_tokens = len(spec.tokens)
    dims = search_space(spec)
    batch = max(1, min(settings.n_jobs, n_trials))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = settings.storage.url if settings.storage.url else None
    study = optuna.create_study(
        direction="maximize",
        sampler=_sampler(settings, seed),
        storage=storage,
        study_name=settings.study_name,
        load_if_exists=bool(storage and settings.study_name),
    )
    began = time.monotonic()
    history: list[dict] = []
    best, since_best, stopped = -math.inf, 0, False
    while len(history) < n_trials:
        trials, proposals = [], []
        for _ in range(min(batch, n_trials - len(history))):
            trial = study.ask()
            proposal = {}
            for d in dims:
                if d.scalar:
                    v = trial.suggest_float(d.name, d.low, d.high, log=d.log_scale)
                    proposal[d.name] = [v] * n_tokens
                else:
                    proposal[d.name] = [
                        trial.suggest_float(f"{d.name}_{i}", d.low, d.high, log=d.log_scale)
                        for i in range(n_tokens)
                    ]
            trials.append(trial)
            proposals.append(proposal)
        padded = proposals + [proposals[0]] * (batch - len(proposals))
        scores = objective({d.name: np.array([p[d.name] for p in padded]) for d in dims})
        for trial, proposal, score in zip(trials, proposals, scores[: len(proposals)], strict=True):
            value = float(score)
            if math.isfinite(value):
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            history.append({"number": trial.number, "value": value, "params": proposal})
            margin = settings.early_stopping.min_improvement * abs(best) if math.isfinite(best) else 0.0
            if value > best + margin:
                best, since_best = value, 0
            else:
                since_best += 1
        if log:
            log(f"trials {len(history)}/{n_trials}: best {settings.sampler} value {best:.4f}")
        if settings.early_stopping.enabled and since_best >= settings.early_stopping.patience:
            stopped = True
            break
        if settings.timeout and time.monotonic() - began > settings.timeout:
            stopped = True
            break
    finite = [h for h in history if math.isfinite(h["value"])]
    if not finite:
        raise RuntimeError("every trial produced a non-finite objective; check the prices and search ranges")
    top = max(finite, key=lambda h: h["value"])
    return SearchResult(
        best_params=top["params"],
        best_value=top["value"],
        n_trials=len(history),
        history=history,
        stopped_early=stopped,
        seconds=time.monotonic() - began,
    )
