"""A pool's parameters and initial weights in user units, from the run spec and the caller's overrides."""

from __future__ import annotations

import numpy as np

from quant_core.sim.pool import BOUND_PARAMS, check_bounds, get_pool
from quant_core.spec import RunSpec


def initial_weights(spec: RunSpec) -> np.ndarray:
    """Initial weights (alphabetical token order): `initial_weights`, else softmax of the logits."""
    n = len(spec.tokens)
    if spec.initial_weights is not None:
        return np.asarray(spec.initial_weights, dtype=np.float64)
    logits = np.broadcast_to(np.asarray(spec.initial_weights_logits, dtype=np.float64), (n,))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def resolve_params(spec: RunSpec, overrides: dict | None = None) -> dict[str, np.ndarray]:
    """Pool parameters in user units, one value per token (alphabetical order); with the
    `ensemble__` hook a leading member axis [M, n] where given so.

    Precedence: `overrides` > the spec's `parameters` > the spec's `initial_*` keys."""
    pool = get_pool(spec.rule)
    n = len(spec.tokens)
    given = {**(spec.parameters or {}), **(overrides or {})}
    out: dict[str, np.ndarray] = {}
    for name, value in given.items():
        p = pool.param(name)  # raises with the valid names
        arr = np.asarray(value, dtype=np.float64)
        if name in (spec.parameters or {}) and name not in (overrides or {}):
            p.check(arr)  # finite and inside the parameter's domain (a user's number, not a search candidate)
        members_ok = pool.has("ensemble") and p.name not in BOUND_PARAMS and arr.ndim == 2 and arr.shape[1] == n
        if not members_ok and (arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n)):
            shape = " or [members x tokens] values (ensemble__)" if pool.has("ensemble") else ""
            raise ValueError(f"parameters.{name} must be a number or {n} values{shape}, got shape {arr.shape}")
        out[p.name] = arr.copy() if members_ok else np.broadcast_to(arr, (n,)).copy()
    defaults = pool.initial_params(spec)
    for p in pool.params:
        if p.name not in out:
            out[p.name] = np.asarray(defaults[p.name], dtype=np.float64)
    if pool.has("bounded"):
        check_bounds(out[BOUND_PARAMS[0]], out[BOUND_PARAMS[1]])
    if pool.has("ensemble"):
        members = {v.shape[0] for v in out.values() if v.ndim == 2}
        if len(members) > 1:
            raise ValueError(f"ensemble__ parameters disagree on the number of members: {sorted(members)}")
        m = members.pop() if members else spec.optimisation_settings.n_ensemble_members
        out = {k: (v if v.ndim == 2 or k in BOUND_PARAMS else np.broadcast_to(v, (m, n)).copy())
               for k, v in out.items()}
    return out
