"""Zero-fee G3M reserves under perfect arbitrage, stepping through every minute.

Per minute, prices p -> p' and weights w -> w' (both arbitraged perfectly):
    price move:  R_i <- R_i prod_j r_j^{w_j} / r_i            (r = p'/p)
    weight move: R_i <- R_i s_i / prod_j s_j^{w'_j}            (s = w'/w)
In logs this is a sum of per-minute increments, so reserves at each data step are a cumulative
sum. Data coarser than a minute (daily candles) is stepped through its minutes with log-linearly
interpolated prices: jumping the weights once per data step would make the arbitrageur take
sum w' log(w'/w) of the value at each jump, which the minute ramp does not lose.
Within one data step the minute weights and prices are evaluated vectorised; steps are mapped in
batches to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

WeightFn = Callable[[jax.Array], jax.Array]


def _map_batch_size(step_minutes: int) -> int:
    return max(1, 65536 // (step_minutes + 1))


def g3m_log_reserves(
    log_prices: jax.Array,
    weight_fn: WeightFn,
    step_minutes: int,
    initial_log_reserves: jax.Array,
) -> jax.Array:
    """Log reserves at each data step [S, n], given log prices at the steps [S, n] and the
    weights held at any bout minute (`weight_fn(minutes [...]) -> [..., n]`)."""
    n_steps = log_prices.shape[0]
    if n_steps == 1:
        return initial_log_reserves[None, :]
    minute = jnp.arange(step_minutes + 1)

    def increment(s):
        w = weight_fn(s * step_minutes + minute)  # [m+1, n]
        delta = (log_prices[s + 1] - log_prices[s]) / step_minutes  # log price change per minute
        lw = jnp.log(w)
        shared = jnp.sum(jnp.sum(w[:-1], axis=0) * delta) - jnp.sum(w[1:] * (lw[1:] - lw[:-1]))
        return shared - step_minutes * delta + (lw[-1] - lw[0])

    incs = jax.lax.map(increment, jnp.arange(n_steps - 1), batch_size=_map_batch_size(step_minutes))
    return initial_log_reserves + jnp.concatenate(
        [jnp.zeros_like(initial_log_reserves)[None, :], jnp.cumsum(incs, axis=0)], axis=0
    )


def initial_reserves(value: float, weights: jax.Array, prices: jax.Array) -> jax.Array:
    """R_0 = V_0 w_0 / p_0."""
    return value * weights / prices
