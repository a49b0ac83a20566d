"""Estimators on chunk prices: EWMA and the proportional "gradient" (QuantAMM's estimator).

Per chunk c and asset, with G = 1/(1-lambda) and b = lambda/(1-lambda)^3:
    ewma_c = ewma_{c-1} + (x_c - ewma_{c-1}) / G
    a_c    = lambda a_{c-1} + G (x_c - ewma_c)        (|a_c| < 1e-10 -> 0)
    g_c    = a_c / (b ewma_c)                          (~ (1/p) dp/dt per chunk)
started at ewma_0 = x_0, a_0 = 0, g_0 = 0. The memory length of lambda, in days, is
    memory_days = 2 (chunk_period/1440) cbrt(6 lambda / (1-lambda)^3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quant_core.spec import MINUTES_PER_DAY


def lamb_to_memory_days(lamb: jax.Array, chunk_period: int) -> jax.Array:
    """Memory length in days of an EWMA with decay `lamb` applied every chunk_period minutes."""
    return 2.0 * (chunk_period / MINUTES_PER_DAY) * jnp.cbrt(6.0 * lamb / (1.0 - lamb) ** 3)


def memory_days_to_lamb(memory_days: jax.Array, chunk_period: int) -> jax.Array:
    """Inverse of `lamb_to_memory_days`: the real root of lamb/(1-lamb)^3 = s (Cardano)."""
    m = jnp.asarray(memory_days, dtype=jnp.float64)
    s = (MINUTES_PER_DAY * m / (2.0 * chunk_period)) ** 3 / 6.0
    c = jnp.cbrt(jnp.sqrt(3.0 * (27.0 * s**4 + 4.0 * s**3)) - 9.0 * s**2)
    lamb = c / (2.0 ** (1 / 3) * 3.0 ** (2 / 3) * s) - (2.0 / 3.0) ** (1 / 3) / c + 1.0
    # For long memories lambda -> 1 and the closed form loses digits to cancellation; two Newton
    # steps on u = 1 - lambda (s u^3 + u - 1 = 0) restore full precision.
    u = 1.0 - lamb
    for _ in range(2):
        u = u - (s * u**3 + u - 1.0) / (3.0 * s * u**2 + 1.0)
    return 1.0 - u


def ewma_gradient(chunk_prices: jax.Array, lamb: jax.Array) -> jax.Array:
    """Gradient estimates g_c for every chunk (g_0 = 0), shape [C, n]; a step-by-step scan."""
    x = jnp.asarray(chunk_prices)
    lamb = jnp.broadcast_to(jnp.asarray(lamb, dtype=x.dtype), x.shape[1:])
    g_inf = 1.0 / (1.0 - lamb)
    b = lamb / (1.0 - lamb) ** 3

    def step(carry, x_c):
        ewma, a = carry
        ewma = ewma + (x_c - ewma) / g_inf
        a = lamb * a + g_inf * (x_c - ewma)
        a = jnp.where(jnp.abs(a) < 1e-10, 0.0, a)
        return (ewma, a), a / (b * ewma)

    _, grads = jax.lax.scan(step, (x[0], jnp.zeros_like(x[0])), x[1:])
    return jnp.concatenate([jnp.zeros_like(x[:1]), grads], axis=0)
