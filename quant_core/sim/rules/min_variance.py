"""Minimum variance (diagonal): target weights proportional to each asset's inverse return variance.

    target_i = (1/var_i) / sum_j (1/var_j)
var is the EWMA variance of chunk returns with memory_days (`ewma_return_variance`; rows 0 and 1,
before any spread is seen, give equal weights). The simulator blends the target into the weights,
raw = lambda2 W + (1 - lambda2) target, with lambda2 the EWMA decay of memory_days_2.

Row c holds the return into chunk c (up to the price at chunk c's start). As in the reference, the pool
starts at the guardrailed row 1 of the bout and ramps in chunk c towards row c+1: both have seen the
price at the end of the chunk they act in (one chunk of look-ahead). The run spec's
target_weights_start = "initial_weights" runs it one chunk later instead (quant_core.sim.engines).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quant_core.sim.estimators import ewma_return_variance
from quant_core.sim.rules.common import MEMORY_DAYS_1, MEMORY_DAYS_2, Aux, Params
from quant_core.sim.schema import PoolRule, RuleContext

# a return series with exactly zero spread would give 1/0; this floor only changes such rows
_VARIANCE_FLOOR = 1e-300


def min_variance_targets(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """Target weights [C, n], each row (1/var) normalised to sum 1."""
    var = ewma_return_variance(chunk_prices, ctx.lamb(params["memory_days"]), ctx.method)
    precision = 1.0 / jnp.maximum(var, _VARIANCE_FLOOR)
    return precision / jnp.sum(precision, axis=-1, keepdims=True)


def min_variance_blend(params: Params, ctx: RuleContext) -> jax.Array:
    """lambda2: how much of the previous weights each chunk keeps (from memory_days_2, capped)."""
    return ctx.lamb(params["memory_days_2"])


MIN_VARIANCE = PoolRule(
    "min_variance", "dynamic",
    (
        dataclasses.replace(MEMORY_DAYS_1, description="memory in days of the EWMA variance of returns"),
        dataclasses.replace(
            MEMORY_DAYS_2,
            description="smoothing memory in days: each chunk keeps lambda(memory_days_2) of the previous weights "
            "(starts at initial_memory_length + initial_memory_length_delta)",
        ),
    ),
    min_variance_targets,
    description="inverse-variance weights: each asset weighted by 1/(EWMA variance of its returns), smoothed over time",
    outputs_weights=True,
    blend_lamb=min_variance_blend,
)
