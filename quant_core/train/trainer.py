"""One trainer for every tunable: the method the run spec names, on a window of the tunable's data.

`gradient_descent` trains differentiable pool rules (quant_core.train.gradient), `bfgs` too
(quant_core.train.bfgs); `cma_es` trains any tunable (quant_core.train.cma_search); `optuna`, `grid` and
`random` search any tunable's `SearchProblem` (quant_core.train.search, quant_core.train.grid). The
result is one type, `TrainedParameters`, with the parameters as the tunable reports them (pools: one
value per token; strategies: one number each). The method settings are checked against the rest of the
spec (quant_core.train.method_settings) before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quant_core.provenance import numerical_environment
from quant_core.signs import NATURAL, NEGATED, SIGNS_KEY, natural_value
from quant_core.sim.native_build import check_switches
from quant_core.spec import METHODS, RunSpec
from quant_core.train.method_settings import check_method_settings
from quant_core.tunables import tunable_for


@dataclass
class TrainedParameters:
    # user units: pools {name: [per token, alphabetical]} (ensemble__: one list per member);
    # CEX strategies {name: number}
    params: dict[str, Any]
    objective: float  # the score the method selected on (gradient descent: the monitored validation metric)
    metric: str
    method: str
    seed: int
    start: datetime
    end: datetime
    n_evaluations: int  # iterations (gradient descent, bfgs), trials (optuna) or candidates (grid, random, cma_es)
    seconds: float
    history: list[dict] = field(default_factory=list)
    # configurations the method weighed, best first (user units): evidence for the overfitting statistics
    candidates: list[dict] = field(default_factory=list)
    n_configurations: int = 1  # independent configurations tried (GD: parameter sets; search: trials)
    details: dict = field(default_factory=dict)  # method specifics: split, best set, top-k, checkpoints, timings
    # the numerical stack and JAX backend the training ran on (quant_core.provenance.numerical_environment)
    environment: dict = field(default_factory=dict)


def train(
    data: Any,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    iterations_per_print: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedParameters:
    """Maximise spec.return_val over [start, end) (default: the spec's training window) of `data` (a
    PricePanel for a pool, MarketCandles for a CEX strategy).

    `n_trials` overrides the method's budget: iterations (gradient descent, bfgs), trials (optuna),
    generations (cma_es) or random candidates (random; a grid's size is its own)."""
    check_switches()
    tunable = tunable_for(spec)
    method = spec.optimisation_settings.method
    start, end = start or spec.start, end or spec.end
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    check_method_settings(spec, differentiable=tunable.differentiable)
    tunable.validate_data(data, start, end)
    common: dict[str, Any] = {"metric": spec.return_val, "method": method, "seed": seed, "start": start, "end": end}
    if method == "gradient_descent":
        if not tunable.differentiable:
            raise ValueError(f"{tunable.kind} {tunable.name!r} is not differentiable in its parameters, so gradient "
                             "descent cannot train it: set optimisation_settings.method to optuna, grid or random")
        from quant_core.train.gradient import train_gradient  # optax and its compile only when asked for

        g = train_gradient(data, spec, start=start, end=end, seed=seed, n_iterations=n_trials,
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
        from quant_core.train.search import run_study  # optuna only when asked for

        common.update(study_fields(run_study(tunable.problem(data, start, end), spec, seed=seed, n_trials=n_trials,
                                             log=log), spec))
    elif method in ("grid", "random"):
        from quant_core.train.grid import run_grid

        common.update(grid_fields(run_grid(tunable.problem(data, start, end), spec, seed=seed, n_samples=n_trials,
                                           log=log)))
    elif method in ("bfgs", "cma_es"):
        if method == "bfgs":
            from quant_core.train.bfgs import train_bfgs  # JAX compiles only when asked for

            r = train_bfgs(data, spec, start=start, end=end, seed=seed, maxiter=n_trials, log=log,
                           iterations_per_print=iterations_per_print)
        else:
            from quant_core.train.cma_search import train_cma_es

            r = train_cma_es(tunable, data, spec, start=start, end=end, seed=seed, n_generations=n_trials, log=log,
                             iterations_per_print=iterations_per_print)
        common.update(params=r.params, objective=r.objective, n_evaluations=r.n_evaluations, seconds=r.seconds,
                      history=r.history, candidates=r.candidates, n_configurations=r.n_configurations,
                      details=r.details)
    else:  # the spec model admits only METHODS
        raise ValueError(f"optimisation_settings.method {method!r}: use one of {list(METHODS)}")
    return finish(tunable, common)


def finish(tunable: Any, fields: dict[str, Any]) -> TrainedParameters:
    """The result in the tunable's units and natural signs, with the numerical environment it ran on."""
    fields["params"] = tunable.user_params(fields["params"])
    fields["candidates"] = [tunable.user_params(c) for c in fields["candidates"]]
    if fields.pop(SIGNS_KEY, None) != NATURAL:  # a grid's table comes in natural signs (GridResult)
        fields["history"] = natural_rows(fields["history"])
        if "top" in fields["details"]:
            fields["details"]["top"] = natural_rows(fields["details"]["top"])
    fields["environment"] = numerical_environment()
    return TrainedParameters(**fields)


def study_fields(r: Any, spec: RunSpec) -> dict[str, Any]:
    """TrainedParameters fields of an Optuna study's SearchResult."""
    return dict(params=r.best_params, objective=r.best_value, n_evaluations=r.n_trials, seconds=r.seconds,
                candidates=r.candidates, n_configurations=r.n_trials, history=r.history,
                details={"stopped_early": r.stopped_early, "study_name": r.study_name,
                         "sampler": spec.optimisation_settings.optuna_settings.sampler})


def grid_fields(r: Any) -> dict[str, Any]:
    """TrainedParameters fields of a grid or random search's GridResult."""
    return dict(params=r.best_params, objective=r.best_value, n_evaluations=r.n_evaluations, seconds=r.seconds,
                history=r.table, candidates=r.candidates, n_configurations=r.n_evaluations,
                details={"top": r.top, "evaluations_per_second": r.evaluations_per_second,
                         "batch_size": r.batch_size}, **{SIGNS_KEY: NATURAL})


def _negated_columns(keys: tuple[str, ...]) -> list[tuple[str, str]]:
    """(key, metric) of the per-metric columns (train_<metric>, validation_<metric>) whose metric is negated."""
    out = []
    for key in keys:
        for part in ("train_", "validation_"):
            if key.startswith(part) and key[len(part):] in NEGATED:
                out.append((key, key[len(part):]))
                break
    return out


def natural_rows(rows: list[dict]) -> list[dict]:
    """History rows with their per-metric columns (train_<metric>, validation_<metric>) in natural signs, as every
    report shows metrics (new dicts; the negated columns found once per set of keys). 'objective' / 'value'
    entries stay what the method maximised."""
    def natural(name: str, v: Any) -> Any:
        return [natural_value(name, x) for x in v] if isinstance(v, list) else natural_value(name, v)

    by_keys: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    out = []
    for row in rows:
        keys = tuple(row)
        negated = by_keys.get(keys)
        if negated is None:
            negated = by_keys[keys] = _negated_columns(keys)
        out.append({**row, **{key: natural(name, row[key]) for key, name in negated}} if negated else dict(row))
    return out
