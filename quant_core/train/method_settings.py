"""Settings of the training methods `bfgs` and `cma_es` and of training on the Hessian trace.

The run spec keys follow the reference's run fingerprint (`optimisation_settings.bfgs_settings`,
`optimisation_settings.cma_es_settings`, `optimisation_settings.train_on_hessian_trace`) with its defaults;
`hessian_trace_settings` holds what the reference fixes in code (the trace's weight 1e-4, the exact trace).
Every number is checked finite and in range, the message naming the key and the fix.

This module imports pydantic only, so the run spec model can hold these models without importing JAX.
`check_method_settings(spec)` checks what involves other keys (the method, the spec's kind, price noise,
turnover_penalty, a bounded__ rule's learnable_bounds_settings.freeze_bounds)
and is run by the trainer before any work.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BFGS = "optimisation_settings.bfgs_settings"
CMA = "optimisation_settings.cma_es_settings"
HESSIAN = "optimisation_settings.hessian_trace_settings"
# methods whose objective is the differentiable pool objective the trace penalty is added to
HESSIAN_METHODS = ("gradient_descent", "bfgs", "cma_es")


class _Settings(BaseModel):
    # floats are checked by _finite below (finite and in range, naming the key and the fix)
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _finite(where: str, v: float, *, low: float, strict: bool, example: str) -> float:
    bad = not math.isfinite(v) or (v <= low if strict else v < low)
    if bad:
        raise ValueError(f"{where} must be a finite number {'>' if strict else '>='} {low:g} (got {v}); set it "
                         f"to e.g. {example} or remove it for the default")
    return v


def _at_least(where: str, v: int | None, low: int, example: str) -> int | None:
    if v is not None and v < low:
        raise ValueError(f"{where} must be a whole number >= {low} (got {v}); set it to e.g. {example} or remove "
                         "it for the default")
    return v


class BfgsSettings(_Settings):
    """Method `bfgs` (quant_core.train.bfgs): BFGS from every parameter set on the mean objective over fixed
    evaluation windows of the training part."""

    maxiter: int = Field(100, description="BFGS iterations per parameter set at most")
    tol: float = Field(1e-6, description="stop when the objective's gradient (max-abs) falls below it")
    n_evaluation_points: int = Field(20, description="random window starts drawn (plus as many evenly spaced)")
    memory_budget: int | None = Field(None, description="most forward passes at once: caps n_parameter_sets at "
                                      "memory_budget // evaluation windows")
    compute_dtype: Literal["float32", "float64"] = Field(
        "float32", description="the reference's precision switch; simulations here always run in float64")

    @field_validator("maxiter")
    @classmethod
    def _maxiter(cls, v: int) -> int:
        return _at_least(f"{BFGS}.maxiter", v, 1, "100")

    @field_validator("n_evaluation_points")
    @classmethod
    def _points(cls, v: int) -> int:
        return _at_least(f"{BFGS}.n_evaluation_points", v, 1, "20")

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, v: int | None) -> int | None:
        return _at_least(f"{BFGS}.memory_budget", v, 1, "10000")

    @field_validator("tol")
    @classmethod
    def _tol(cls, v: float) -> float:
        return _finite(f"{BFGS}.tol", v, low=0.0, strict=True, example="1e-6")


class CmaEsSettings(_Settings):
    """Method `cma_es` (quant_core.train.cma_es): CMA-ES from every parameter set, each generation's
    population of every restart scored in one batched call."""

    population_size: int | None = Field(None, description="lambda; default 4 + floor(3 ln n) for n parameters")
    memory_budget: int | None = Field(None, description="most forward passes at once: raises the default "
                                      "lambda to memory_budget // (evaluation windows x restarts)")
    n_generations: int = Field(300, description="generations per restart at most")
    sigma0: float = Field(0.5, description="initial step size, in the training space (pools: the unconstrained "
                          "parameters; strategies: each searched range mapped to [0, 1])")
    tol: float = Field(1e-8, description="stop a restart when sigma x sqrt(largest eigenvalue of C) falls below it")
    n_evaluation_points: int = Field(20, description="random window starts drawn (plus as many evenly spaced)")
    compute_dtype: Literal["float32", "float64"] = Field(
        "float32", description="the reference's precision switch; simulations here always run in float64")

    @field_validator("population_size")
    @classmethod
    def _lam(cls, v: int | None) -> int | None:
        return _at_least(f"{CMA}.population_size", v, 2, "16 (or null for the default)")

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, v: int | None) -> int | None:
        return _at_least(f"{CMA}.memory_budget", v, 1, "10000")

    @field_validator("n_generations")
    @classmethod
    def _gens(cls, v: int) -> int:
        return _at_least(f"{CMA}.n_generations", v, 1, "300")

    @field_validator("n_evaluation_points")
    @classmethod
    def _points(cls, v: int) -> int:
        return _at_least(f"{CMA}.n_evaluation_points", v, 1, "20")

    @field_validator("sigma0")
    @classmethod
    def _sigma0(cls, v: float) -> float:
        return _finite(f"{CMA}.sigma0", v, low=0.0, strict=True, example="0.5")

    @field_validator("tol")
    @classmethod
    def _tol(cls, v: float) -> float:
        return _finite(f"{CMA}.tol", v, low=0.0, strict=False, example="1e-8")


class HessianTraceSettings(_Settings):
    """With `train_on_hessian_trace: true` the maximised pool objective becomes
    objective + weight * trace(Hessian of the objective on the training part's first window), as the
    reference (quant_core.train.hessian_trace): at a maximum the trace is negative, so the penalty favours
    flat maxima."""

    weight: float = Field(1e-4, description="the trace's weight (the reference's 1e-4)")
    estimator: Literal["exact", "hutchinson"] = Field(
        "exact", description="exact: the Hessian's diagonal (the reference); hutchinson: mean of z'Hz over "
        "n_probes fixed Rademacher vectors z (cheaper with many parameters)")
    n_probes: int = Field(16, description="hutchinson: probe vectors")

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        return _finite(f"{HESSIAN}.weight", v, low=0.0, strict=True, example="1e-4")

    @field_validator("n_probes")
    @classmethod
    def _probes(cls, v: int) -> int:
        return _at_least(f"{HESSIAN}.n_probes", v, 1, "16")


def bfgs_settings(opt: Any) -> BfgsSettings:
    """The run's BFGS settings (defaults when the spec holds none)."""
    return _as(getattr(opt, "bfgs_settings", None), BfgsSettings)


def cma_es_settings(opt: Any) -> CmaEsSettings:
    return _as(getattr(opt, "cma_es_settings", None), CmaEsSettings)


def hessian_trace_settings(opt: Any) -> HessianTraceSettings | None:
    """The trace penalty's settings when `train_on_hessian_trace` is on, else None."""
    if not getattr(opt, "train_on_hessian_trace", False):
        return None
    return _as(getattr(opt, "hessian_trace_settings", None), HessianTraceSettings)


def _as(value: Any, model: type[BaseModel]) -> Any:
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else value
    return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})


def check_method_settings(spec: Any, *, differentiable: bool | None = None) -> None:
    """What the method settings need of the rest of the spec; ValueError naming the key and the fix.

    `differentiable`: whether the tunable's objective has gradients (default: a pool spec does)."""
    opt = spec.optimisation_settings
    method = opt.method
    strategy = getattr(spec, "kind", "pool") == "strategy"
    if differentiable is None:
        differentiable = not strategy
    if method == "bfgs" and not differentiable:
        what = f"strategy {spec.strategy!r}" if strategy else f"rule {getattr(spec, 'rule', '?')!r}"
        raise ValueError(f"optimisation_settings.method 'bfgs' follows the objective's gradient, and {what} is not "
                         "differentiable in its parameters: use cma_es, optuna, grid or random")
    if getattr(opt, "train_on_hessian_trace", False):
        if strategy or not differentiable:
            raise ValueError("optimisation_settings.train_on_hessian_trace needs second derivatives of the "
                             "objective, which a non-differentiable tunable has not: set it to false")
        if method not in HESSIAN_METHODS:
            raise ValueError(f"optimisation_settings.train_on_hessian_trace penalises the differentiable training "
                             f"objective of {list(HESSIAN_METHODS)}, not the scores of method {method!r}: use one of "
                             "those methods or set train_on_hessian_trace: false")
    if getattr(spec, "turnover_penalty", 0) > 0 and (strategy or method not in HESSIAN_METHODS):
        what = "a CEX strategy" if strategy else f"method {method!r}"
        raise ValueError(f"turnover_penalty subtracts the pool's daily turnover from the differentiable training "
                         f"objective of {list(HESSIAN_METHODS)}; the scores of {what} do not take it: use one of "
                         "those methods on a pool, or set turnover_penalty: 0")
    if method in ("bfgs", "cma_es") and differentiable and getattr(spec, "price_noise_sigma", 0) > 0:
        raise ValueError(f"price_noise_sigma adds fresh noise to every gradient step; method {method!r} needs a "
                         "fixed objective: set price_noise_sigma: 0 or use gradient_descent")
    _check_bounds_learning(spec, method)


SEARCHES = {"optuna": "optuna_settings.parameter_config", "grid": "search_settings.parameter_space",
            "random": "search_settings.parameter_space"}


def _check_bounds_learning(spec: Any, method: str) -> None:
    """freeze_bounds false asks for a bounded__ rule's bounds to be learned. gradient_descent, bfgs and cma_es
    train them (quant_core.train.learnable_bounds); a search moves only what its ranges list, so it is refused
    rather than left to keep the bounds fixed unasked (the reference's Optuna cannot run bounded__ pools)."""
    rule, lbs = getattr(spec, "rule", None), getattr(spec, "learnable_bounds_settings", None)
    if (method not in SEARCHES or lbs is None or lbs.freeze_bounds or not isinstance(rule, str)
            or "bounded" not in rule.split("__")[:-1]):
        return
    opt = spec.optimisation_settings
    table = opt.optuna_settings.parameter_config if method == "optuna" else opt.search_settings.parameter_space
    if "min_weights_per_asset" in table or "max_weights_per_asset" in table:
        return
    raise ValueError(f"learnable_bounds_settings.freeze_bounds is false, so the bounded__ bounds are to be learned, "
                     f"and method {method!r} searches only what its ranges list: list min_weights_per_asset and/or "
                     f"max_weights_per_asset under optimisation_settings.{SEARCHES[method]}, set freeze_bounds: true "
                     "to keep the bounds at their starting values, or use gradient_descent, bfgs or cma_es (which "
                     "learn them)")
