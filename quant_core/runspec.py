"""Loading a run spec completely: its kind's model (quant_core.spec), then what its pool rule or CEX
strategy accepts (the tunable's `check`: the rule or strategy exists, `parameters` and search ranges fit
its schema, `return_val` is one of its metrics). Every public entry (the CLI, the registry, the launchpad,
the Python API) loads specs through here, so a bad spec fails before any work, naming the field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quant_core.sim.settings import protocol_fee_applies
from quant_core.spec import (
    RunSpec,
    RunSpecError,
    SpecBase,
    emit_notices,
    is_reference_default_range,
    parse_run_spec,
)
from quant_core.tunables import tunable_for


def _without_reference_default_ranges(spec: RunSpec, names: set[str]) -> RunSpec:
    """The spec without the optuna parameter_config entries that equal the reference's default entry and name
    no parameter of the run's rule or strategy: the reference merges its default table into every fingerprint
    and reads only the entries of its pool's parameters, so a pasted default changes nothing
    (quant_core.spec_sections.REFERENCE_PARAMETER_CONFIG)."""
    opt = spec.optimisation_settings
    config = opt.optuna_settings.parameter_config
    kept = {k: v for k, v in config.items() if k in names or not is_reference_default_range(k, v)}
    if len(kept) == len(config):
        return spec
    optuna = opt.optuna_settings.model_copy(update={"parameter_config": kept})
    return spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"optuna_settings": optuna})})


def _pool_notices(spec: RunSpec, pool) -> list[str]:
    """Notices that depend on the rule's pool (spec.spec_notices has the rest)."""
    if spec.protocol_fee_split > 0 and spec.fees > 0 and not protocol_fee_applies(pool):
        return [f"protocol_fee_split = {spec.protocol_fee_split!r} has no effect on results here: rule {spec.rule!r} "
                "is neither a TFMM (dynamic-weight G3M) pool nor a reCLAMM pool, the only ones the reference applies "
                "the split to"]
    return []


def check_spec(spec: RunSpec) -> RunSpec:
    """The spec, or RunSpecError naming what its tunable refuses."""
    try:
        tunable = tunable_for(spec)
        names = {n for p in tunable.params() for n in (p.name, *p.aliases)}
        spec = _without_reference_default_ranges(spec, names)
        tunable = tunable_for(spec)
        tunable.check()
    except (ValueError, KeyError) as exc:
        raise RunSpecError(f"invalid run spec:\n- {exc.args[0] if exc.args else exc}") from None
    pool = getattr(tunable, "pool", None)
    if pool is not None:
        emit_notices(_pool_notices(spec, pool))
    return spec


def load_run_spec(source: dict[str, Any] | str | Path | SpecBase) -> RunSpec:
    """Validate a fingerprint dict, a YAML/JSON file or a spec (module docstring)."""
    return check_spec(parse_run_spec(source))


def with_training(spec: RunSpec, *, method: str | None = None, budget: int | None = None, seed: int | None = None,
                  metric: str | None = None) -> RunSpec:
    """A copy with run-time training overrides (CLI flags, the Dagster launchpad), validated as a whole.

    `budget` is the method's: iterations (gradient_descent, bfgs), generations (cma_es), trials (optuna) or
    candidates (random); a grid's size is its own. Raises RunSpecError naming the bad override."""
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
        elif chosen == "bfgs":
            updates["bfgs_settings"] = opt.bfgs_settings.model_copy(update={"maxiter": budget})
        elif chosen == "cma_es":
            updates["cma_es_settings"] = opt.cma_es_settings.model_copy(update={"n_generations": budget})
    data = spec.model_copy(update={"optimisation_settings": opt.model_copy(update=updates)}).model_dump()
    if metric:
        data["return_val"] = metric
    return load_run_spec(data)
