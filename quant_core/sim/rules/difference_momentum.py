"""Difference momentum (MACD-like): trend = how far a second EWMA sits from the first.

    s_i = 1 - ewma2_i / ewma1_i        (ewma1: memory_days, ewma2: memory_days_2)
    delta_i = k_i (s_i - sum_j k_j s_j / sum_j k_j),  k_i = k_per_day_i x max(memory_days_i, memory_days_2_i)
With memory_days_2 longer than memory_days, s > 0 when the recent prices run above the slower
average, so a positive k follows the trend and a negative k fades it. Both EWMAs start at the first
price, so row 0 is zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quant_core.params import IDENTITY
from quant_core.sim.estimators import ewma
from quant_core.sim.rules.common import K_PER_DAY, MEMORY_DAYS_1, MEMORY_DAYS_2, Aux, Params, zero_sum_offset
from quant_core.sim.schema import PoolRule, RuleContext


def difference_momentum_deltas(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """k-offset of 1 - ewma2/ewma1 (row 0 = 0)."""
    x = jnp.asarray(chunk_prices)
    n = x.shape[1]
    # both EWMAs in one call: the prices side by side, one lambda per copy
    lamb = jnp.concatenate([
        jnp.broadcast_to(ctx.lamb(params["memory_days"]), (n,)),
        jnp.broadcast_to(ctx.lamb(params["memory_days_2"]), (n,)),
    ])
    both = ewma(jnp.tile(x, (1, 2)), lamb, ctx.method)
    signal = 1.0 - both[:, n:] / both[:, :n]
    k = params["k_per_day"] * jnp.maximum(ctx.memory(params["memory_days"]), ctx.memory(params["memory_days_2"]))
    return zero_sum_offset(signal, k)


DIFFERENCE_MOMENTUM = PoolRule(
    "difference_momentum", "dynamic",
    (
        dataclasses.replace(MEMORY_DAYS_1, description="memory in days of the first (usually faster) EWMA"),
        dataclasses.replace(
            MEMORY_DAYS_2,
            description="memory in days of the second (usually slower) EWMA "
            "(starts at initial_memory_length + initial_memory_length_delta)",
        ),
        dataclasses.replace(
            K_PER_DAY, low=-1000.0, high=1000.0, log_scale=False, transform=IDENTITY,
            description="aggressiveness per day of the longer memory, k = k_per_day x max(memory_days, memory_days_2); "
            "negative values fade the trend",
        ),
    ),
    difference_momentum_deltas,
    description="MACD-style momentum: follow (k > 0) or fade (k < 0) the gap between a fast and a slow price EWMA",
)
