"""Channel rules: signals shaped from the gradient g, then the zero-sum k offset of momentum.

power_channel:   s = sign(g) |g / (2 pes)|^e,  e = max(exponents, 1)
mean_reversion_channel (per asset, w = width, A = amplitude, effective: memory days multiplied in):
    env = exp(-g^2 / (2 w^2)),  x = pi g / (3 w)
    s   = -A env (x - x^3/6) / 0.5415  +  (1 - env) sign(g) |g / (2 pes)|^e
    (inside the channel |g| << w prices revert; far outside, the power-law trend takes over)
triple_threat_mean_reversion_channel: the same signal with three gradients of their own memories,
    one for the channel term, one for the trend term, one for the envelope; all three are
    normalised by one EWMA (memory_days_2), whose memory also scales k.
Then delta = k (s - sum k s / sum k), k = k_per_day x memory_days. pes = pre_exp_scaling, or 0.5
when use_pre_exp_scaling is off. Order of operations as the reference pools.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quant_core.params import LOG2, Param
from quant_core.sim.estimators import ewma_gradient
from quant_core.sim.rules.common import (
    ALT_MEMORY_DAYS,
    AMPLITUDE,
    EXPONENTS,
    K_PER_DAY,
    K_PER_DAY_SP,
    MEMORY_DAYS,
    PRE_EXP_SCALING,
    WIDTH,
    Aux,
    Params,
    effective_k,
    pre_exp_scaling,
    price_gradients,
    signed_power,
    zero_sum_offset,
)
from quant_core.sim.schema import LOGIT_LAMB, PoolRule, RuleContext

CHANNEL_INVERSE_SCALING = 0.5415  # max of x - x^3/6 on the channel, so the channel term peaks near A


def channel_signal(
    g_channel: jax.Array,
    g_trend: jax.Array,
    g_envelope: jax.Array,
    amplitude: jax.Array,
    width: jax.Array,
    exponents: jax.Array,
    pes: jax.Array,
) -> jax.Array:
    """Mean-reversion channel plus power-law trend, cross-faded by a Gaussian envelope of g_envelope."""
    envelope = jnp.exp(-(g_envelope**2) / (2 * width**2))
    scaled = jnp.pi * g_channel / (3 * width)
    channel = -amplitude * envelope * (scaled - scaled**3 / 6) / CHANNEL_INVERSE_SCALING
    trend = (1 - envelope) * signed_power(g_trend / (2.0 * pes), exponents)
    return channel + trend


def power_channel_deltas(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """k-offset of sign(g) |g / (2 pes)|^max(e, 1): the reference clips the exponent at 1 here."""
    g = price_gradients(chunk_prices, params, ctx)
    exponents = jnp.maximum(params["exponents"], 1.0)  # the reference clips the exponent at 1
    signal = signed_power(g / (2.0 * pre_exp_scaling(params, ctx)), exponents)
    return zero_sum_offset(signal, effective_k(params, ctx))


def mean_reversion_channel_deltas(
    chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux
) -> jax.Array:
    """k-offset of the channel signal of one gradient (A = the effective amplitude)."""
    g = price_gradients(chunk_prices, params, ctx)
    amplitude = params["amplitude"]  # effective: memory days already multiplied in
    signal = channel_signal(
        g, g, g, amplitude, params["width"], params["exponents"], pre_exp_scaling(params, ctx)
    )
    return zero_sum_offset(signal, effective_k(params, ctx))


_TRIPLE_MEMORIES = ("memory_days", "memory_days_trend", "memory_days_envelope")


def triple_threat_deltas(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """Channel signal from three gradients (memory_days, memory_days_trend, memory_days_envelope),
    each normalised by the EWMA of memory_days_2; k scales with memory_days_2 (A is effective)."""
    x = jnp.asarray(chunk_prices)
    n = x.shape[1]
    # the three gradients in one estimator call: the prices repeated three times along the assets
    lamb = jnp.concatenate([jnp.broadcast_to(ctx.lamb(params[m]), (n,)) for m in _TRIPLE_MEMORIES])
    alt = jnp.tile(jnp.broadcast_to(ctx.lamb(params["memory_days_2"]), (n,)), 3)
    g = ewma_gradient(jnp.tile(x, (1, 3)), lamb, ctx.method, alt_lamb=alt)
    g_channel, g_trend, g_envelope = g[:, :n], g[:, n : 2 * n], g[:, 2 * n :]
    memory = ctx.memory(params["memory_days_2"])
    signal = channel_signal(
        g_channel, g_trend, g_envelope, params["amplitude"], params["width"],
        params["exponents"], pre_exp_scaling(params, ctx),
    )
    return zero_sum_offset(signal, params["k_per_day"] * memory)


POWER_CHANNEL = PoolRule(
    "power_channel", "dynamic",
    (MEMORY_DAYS, K_PER_DAY_SP, dataclasses.replace(EXPONENTS, low=1.0), PRE_EXP_SCALING, ALT_MEMORY_DAYS),
    power_channel_deltas,
    description="trend following on a power of the gradient: strong trends move weight more than proportionally",
)

MEAN_REVERSION_CHANNEL = PoolRule(
    "mean_reversion_channel", "dynamic",
    (MEMORY_DAYS, K_PER_DAY_SP, AMPLITUDE, WIDTH, EXPONENTS, PRE_EXP_SCALING, ALT_MEMORY_DAYS),
    mean_reversion_channel_deltas,
    description="mean reversion for small price trends (inside the channel width), power-law trend following "
    "for large ones",
)


def _triple_memory(name: str, what: str) -> Param:
    return dataclasses.replace(
        MEMORY_DAYS, name=name, aliases=(),
        description=f"memory in days of the gradient estimator behind the {what}",
    )


TRIPLE_THREAT_MEAN_REVERSION_CHANNEL = PoolRule(
    "triple_threat_mean_reversion_channel", "dynamic",
    (
        dataclasses.replace(MEMORY_DAYS, description="memory in days of the gradient estimator behind the channel "
                            "(mean-reversion) term"),
        _triple_memory("memory_days_trend", "trend term"),
        _triple_memory("memory_days_envelope", "envelope that cross-fades channel and trend"),
        Param(
            "memory_days_2", 1.0, 200.0, initial_key="initial_memory_length", log_scale=True, transform=LOGIT_LAMB,
            unit="days", description="memory in days of the EWMA that normalises all three gradients; k scales with it "
            "(starts at initial_memory_length, as the reference)",
        ),
        K_PER_DAY,
        dataclasses.replace(AMPLITUDE, transform=LOG2),
        dataclasses.replace(WIDTH, transform=LOG2),
        EXPONENTS,
        dataclasses.replace(PRE_EXP_SCALING, transform=LOG2),
    ),
    triple_threat_deltas,
    description="mean-reversion channel whose channel, trend and envelope each read a gradient of its own memory",
)
