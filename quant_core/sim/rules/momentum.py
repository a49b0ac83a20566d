"""Momentum and anti-momentum: move weight towards (away from) assets whose price trend is strongest.

    delta_i = k_i (g_i - sum_j k_j g_j / sum_j k_j),   delta_i = 0 where k_i = 0
so the changes sum to zero; k_i = k_per_day_i x memory_days_i and g is the EWMA gradient estimate
(with use_alt_lamb its normalising EWMA has memory_days_2). Anti-momentum uses -k.
"""

from __future__ import annotations

import jax

from quant_core.sim.rules.common import (
    ALT_MEMORY_DAYS,
    K_PER_DAY,
    MEMORY_DAYS,
    Aux,
    Params,
    effective_k,
    price_gradients,
    zero_sum_offset,
)
from quant_core.sim.schema import PoolRule, RuleContext

__all__ = ["ANTI_MOMENTUM", "MOMENTUM", "anti_momentum_delta", "momentum_delta", "zero_sum_offset"]


def momentum_delta(gradients: jax.Array, k: jax.Array) -> jax.Array:
    """Weight changes [C, n] from gradient estimates [C, n] and effective k [n]."""
    return zero_sum_offset(gradients, k)


def anti_momentum_delta(gradients: jax.Array, k: jax.Array) -> jax.Array:
    """Momentum with k negated: weight moves towards the assets whose trend is weakest."""
    return zero_sum_offset(gradients, -k)


def momentum_deltas(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """The momentum rule's weight changes [C, n] (row 0 = 0)."""
    return momentum_delta(price_gradients(chunk_prices, params, ctx), effective_k(params, ctx))


def anti_momentum_deltas(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """The anti-momentum rule's weight changes [C, n] (row 0 = 0)."""
    return anti_momentum_delta(price_gradients(chunk_prices, params, ctx), effective_k(params, ctx))


_PARAMS = (MEMORY_DAYS, K_PER_DAY, ALT_MEMORY_DAYS)

MOMENTUM = PoolRule(
    "momentum", "dynamic", _PARAMS, momentum_deltas,
    description="trend following: shift weight towards assets whose EWMA price gradient is above the k-weighted mean",
)
ANTI_MOMENTUM = PoolRule(
    "anti_momentum", "dynamic", _PARAMS, anti_momentum_deltas,
    description="contrarian: momentum with k negated, shifting weight towards assets that have lagged",
)
