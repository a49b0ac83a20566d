"""`optimisation_settings.force_scalar: true`: every parameter of the pool's rule holds one value shared by
all tokens while it is trained or searched.

The reference reads the flag in the parameter initialisation of the momentum family and the channel rules
(momentum, anti_momentum, which inherits it, power_channel, mean_reversion_channel and
triple_threat_mean_reversion_channel): each of their per-token parameters starts with one column instead of
one per token, so training moves one number that the rule broadcasts over the tokens. Every trained
parameter of those rules is shared (initial_weights_logits never is; here the initial weights are not
trained at all). Hook parameters keep their own shape (bounded__ bounds per token, the momentum_fee__ ones
are pool-wide anyway); with ensemble__ each member has its own shared value.

Here the shared parameters become `scalar` parameters (`quant_core.params.Param.scalar`), the mechanism
pool-wide parameters already use, so gradient descent, bfgs and cma_es train one value
(`quant_core.train.params.ParamLayout`) and grid, random and Optuna search one axis per parameter (as a
`scalar: true` range; force_scalar wins over `scalar: false`). Results are reported as the per-token lists
the simulator reads, every token holding the same value.

Refused: force_scalar with a rule whose reference initialisation does not read it (difference_momentum,
min_variance, the index rules, the static and two-token pools), and starting values under `parameters`
that differ across tokens (one value per token of a shared parameter must be one value).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from quant_core.params import Param

if TYPE_CHECKING:
    from quant_core.sim.pool import Pool

# the rules whose reference initialisation reads optimisation_settings.force_scalar
FORCE_SCALAR_RULES = ("momentum", "anti_momentum", "power_channel", "mean_reversion_channel",
                      "triple_threat_mean_reversion_channel")


def forced(spec: Any) -> bool:
    return bool(getattr(spec.optimisation_settings, "force_scalar", False))


def shared_params(pool: Pool, spec: Any) -> tuple[Param, ...]:
    """The pool's parameters, the rule's own ones made pool-wide (`scalar`) when force_scalar is set."""
    if not forced(spec):
        return pool.params
    names = {p.name for p in pool.rule.params}
    return tuple(dataclasses.replace(p, scalar=True) if p.name in names else p for p in pool.params)


def check_force_scalar(spec: Any, pool: Pool, initial: dict[str, np.ndarray]) -> None:
    """ValueError when force_scalar is set for a rule that does not honour it, or a shared parameter's
    starting values (user units, [n] or [members, n]) differ across tokens."""
    if not forced(spec):
        return
    base = pool.rule.name
    if base not in FORCE_SCALAR_RULES:
        raise ValueError(
            f"optimisation_settings.force_scalar: true is not honoured by rule {base!r}: the reference shares one "
            f"value across tokens only for {', '.join(FORCE_SCALAR_RULES)}. Set force_scalar: false (give one "
            "number per parameter under `parameters` and search it with `scalar: true` ranges for the same effect)")
    for p in pool.rule.params:
        if not p.active(spec) or p.name not in initial:
            continue
        v = np.asarray(initial[p.name], dtype=np.float64)
        if v.ndim and not np.allclose(v, v[..., :1], rtol=1e-12, atol=0.0):
            each = " for each ensemble member" if v.ndim == 2 else ""
            raise ValueError(
                f"parameters.{p.name}: optimisation_settings.force_scalar trains one value of {p.name} shared by "
                f"every token, but the starting values differ across tokens ({v.tolist()}): give one number{each}, "
                "or set force_scalar: false")
