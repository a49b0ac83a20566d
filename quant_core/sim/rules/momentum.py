"""Momentum (and anti-momentum): move weight towards assets whose price trend is strongest.

    delta_i = k_i (g_i - sum_j k_j g_j / sum_j k_j),   delta_i = 0 where k_i = 0
so the changes sum to zero. k_i = k_per_day_i * memory_days_i (the trained "log2 k" is per day).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def zero_sum_offset(signal: jax.Array, k: jax.Array) -> jax.Array:
    """k (s - sum k s / sum k): the shared step of the channel-type rules."""
    k_sum = jnp.sum(k, axis=-1, keepdims=True)
    safe = jnp.where(k_sum == 0, 1.0, k_sum)
    offset = jnp.sum(k * signal, axis=-1, keepdims=True) / safe
    return jnp.where(k == 0, 0.0, k * (signal - offset))


def momentum_delta(gradients: jax.Array, k: jax.Array) -> jax.Array:
    """Weight changes [C, n] from gradient estimates [C, n] and effective k [n]."""
    return zero_sum_offset(gradients, k)


def anti_momentum_delta(gradients: jax.Array, k: jax.Array) -> jax.Array:
    return zero_sum_offset(gradients, -k)
