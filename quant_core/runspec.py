"""Loading a run spec completely: its kind's model (quant_core.spec), then what its pool rule or CEX
strategy accepts (the tunable's `check`: the rule or strategy exists, `parameters` and search ranges fit
its schema, `return_val` is one of its metrics). Every public entry (the CLI, the registry, the launchpad,
the Python API) loads specs through here, so a bad spec fails before any work, naming the field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quant_core.spec import RunSpec, RunSpecError, SpecBase, parse_run_spec
from quant_core.tunables import tunable_for


def check_spec(spec: RunSpec) -> RunSpec:
    """The spec, or RunSpecError naming what its tunable refuses."""
    try:
        tunable_for(spec).check()
    except (ValueError, KeyError) as exc:
        raise RunSpecError(f"invalid run spec:\n- {exc.args[0] if exc.args else exc}") from None
    return spec


def load_run_spec(source: dict[str, Any] | str | Path | SpecBase) -> RunSpec:
    """Validate a fingerprint dict, a YAML/JSON file or a spec (module docstring)."""
    return check_spec(parse_run_spec(source))


def with_training(spec: RunSpec, *, method: str | None = None, budget: int | None = None, seed: int | None = None,
                  metric: str | None = None) -> RunSpec:
    """A copy with run-time training overrides (CLI flags, the Dagster launchpad), validated as a whole.

    `budget` is the method's: iterations (gradient_descent), trials (optuna) or candidates (random); a grid's
    size is its own. Raises RunSpecError naming the bad override."""
    if budget is not None and budget < 1:
        raise RunSpecError(f"budget must be >= 1, got {budget}: set a positive number or leave it unset")
    if metric is not None:
        valid = tunable_for(spec).metric_names
        if metric not in valid:
            raise RunSpecError(f"metric {metric!r} is not a metric; use one of {sorted(valid)}")
    opt = spec.optimisation_settings
    updates: dict[str, Any] = {}
    if method:
        updates["method"] = method
    if seed is not None:
        updates["initial_random_key"] = seed
    chosen = method or opt.method
    if budget is not None:
        if chosen == "gradient_descent":
            updates["n_iterations"] = budget
        elif chosen == "optuna":
            updates["optuna_settings"] = opt.optuna_settings.model_copy(update={"n_trials": budget})
        elif chosen == "random":
            updates["search_settings"] = opt.search_settings.model_copy(update={"n_samples": budget})
    data = spec.model_copy(update={"optimisation_settings": opt.model_copy(update=updates)}).model_dump()
    if metric:
        data["return_val"] = metric
    return load_run_spec(data)
