"""Parameter schemas and building blocks shared by the dynamic rules.

User units everywhere: memories in days (trained as logit lambda), k per day of memory (the
effective k is k_per_day x memory_days, so one k_per_day means the same aggressiveness whatever the
memory), the channel amplitude as the effective A (memory days multiplied in, as the app and the
run spec state it), width / exponents / pre_exp_scaling as plain numbers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from quant_core.params import LOG2, SQUAREPLUS, Param, squareplus
from quant_core.sim.estimators import ewma_gradient
from quant_core.sim.schema import LOGIT_LAMB, RuleContext

if TYPE_CHECKING:
    from quant_core.spec import RunSpec

Params = dict[str, jax.Array]
Aux = dict[str, jax.Array]

# ---------------------------------------------------------------------------------------------
# parameter schemas

MEMORY_DAYS = Param(
    "memory_days", 1.0, 200.0, initial_key="initial_memory_length", log_scale=True, transform=LOGIT_LAMB,
    description="EWMA memory length of the rule's estimator (capped at max_memory_days)", unit="days",
    aliases=("memory_length",),
)
# min_variance / difference_momentum call their first memory memory_days_1 in the reference
MEMORY_DAYS_1 = dataclasses.replace(MEMORY_DAYS, aliases=("memory_length", "memory_days_1"))


def _second_memory_initial(spec: RunSpec) -> float:
    return float(spec.initial_memory_length + spec.initial_memory_length_delta)


MEMORY_DAYS_2 = Param(
    "memory_days_2", 1.0, 200.0, initial_key="initial_memory_length", log_scale=True, transform=LOGIT_LAMB,
    description="second EWMA memory (starts at initial_memory_length + initial_memory_length_delta)", unit="days",
    initial=_second_memory_initial,
)
ALT_MEMORY_DAYS = dataclasses.replace(
    MEMORY_DAYS_2,
    description="memory in days of the EWMA that normalises the gradient, used only when use_alt_lamb is set "
    "(starts at initial_memory_length + initial_memory_length_delta)",
    only_if="use_alt_lamb",
)

K_PER_DAY = Param(
    "k_per_day", 0.1, 1000.0, initial_key="initial_k_per_day", log_scale=True, transform=LOG2,
    description="update aggressiveness per day of memory: k = k_per_day x memory_days", unit="per day",
)
# the channel rules train k through squareplus in the reference (sp_k)
K_PER_DAY_SP = dataclasses.replace(K_PER_DAY, transform=SQUAREPLUS)


def _amplitude_initial(spec: RunSpec) -> float:
    """2^initial_log_amplitude per day of the (capped) initial memory, as the reference's A."""
    return float(2.0**spec.initial_log_amplitude * min(spec.initial_memory_length, spec.max_memory_days))


def _width_initial(spec: RunSpec) -> float:
    return float(2.0**spec.initial_raw_width)


def _exponents_initial(spec: RunSpec) -> float:
    return float(squareplus(jnp.asarray(spec.initial_raw_exponents, dtype=jnp.float64)))


AMPLITUDE = Param(
    "amplitude", 0.01, 1000.0, initial_key="initial_log_amplitude", log_scale=True, transform=SQUAREPLUS,
    description="effective mean-reversion amplitude A, memory days already multiplied in (the app's unit; starts at "
    "2^initial_log_amplitude x initial_memory_length)",
    initial=_amplitude_initial,
)
WIDTH = Param(
    "width", 0.001, 10.0, initial_key="initial_raw_width", log_scale=True, transform=SQUAREPLUS,
    description="channel half-width in gradient units: inside it the rule reverts, outside it follows the trend "
    "(starts at 2^initial_raw_width)",
    initial=_width_initial,
)
EXPONENTS = Param(
    "exponents", 0.25, 5.0, initial_key="initial_raw_exponents", log_scale=True, transform=SQUAREPLUS,
    description="power applied to the scaled gradient in the trend signal (starts at "
    "squareplus(initial_raw_exponents))",
    initial=_exponents_initial, aliases=("exponent",),
)
PRE_EXP_SCALING = Param(
    "pre_exp_scaling", 0.01, 10.0, initial_key="initial_pre_exp_scaling", log_scale=True, transform=SQUAREPLUS,
    description="gradient scale before the power: signal = |g / (2 pre_exp_scaling)|^exponents "
    "(0.5 when use_pre_exp_scaling is off)",
)


# ---------------------------------------------------------------------------------------------
# building blocks


def zero_sum_offset(signal: jax.Array, k: jax.Array) -> jax.Array:
    """k (s - sum_j k_j s_j / sum_j k_j), 0 where k = 0: the changes sum to zero across assets.

    A zero sum of k (only possible with k of mixed sign) divides by 1 instead of 0."""
    k_sum = jnp.sum(k, axis=-1, keepdims=True)
    safe = jnp.where(k_sum == 0, 1.0, k_sum)
    offset = jnp.sum(k * signal, axis=-1, keepdims=True) / safe
    return jnp.where(k == 0, 0.0, k * (signal - offset))


def signed_power(x: jax.Array, exponent: jax.Array) -> jax.Array:
    """sign(x) |x|^exponent, with a finite derivative at x = 0 (where the value is 0).

    The plain power has an infinite x-derivative at 0 for exponent < 1; multiplied by the zero
    cotangent of the g_0 row it would turn parameter gradients into NaN."""
    nonzero = x != 0
    safe = jnp.where(nonzero, jnp.abs(x), 1.0)
    return jnp.where(nonzero, jnp.sign(x) * jnp.power(safe, exponent), 0.0)


def pre_exp_scaling(params: Params, ctx: RuleContext) -> jax.Array:
    """The trained pre_exp_scaling, or the reference's fixed 0.5 when use_pre_exp_scaling is off."""
    return params["pre_exp_scaling"] if ctx.use_pre_exp_scaling else jnp.asarray(0.5)


def price_gradients(chunk_prices: jax.Array, params: Params, ctx: RuleContext) -> jax.Array:
    """The rule's gradient estimates [C, n]: lambda from memory_days; with use_alt_lamb the
    normalising EWMA uses memory_days_2 (the reference's calc_gradients)."""
    lamb = ctx.lamb(params["memory_days"])
    alt = ctx.lamb(params["memory_days_2"]) if ctx.use_alt_lamb else None
    return ewma_gradient(chunk_prices, lamb, ctx.method, alt_lamb=alt)


def effective_k(params: Params, ctx: RuleContext) -> jax.Array:
    """k = k_per_day x memory_days (memory capped at max_memory_days)."""
    return params["k_per_day"] * ctx.memory(params["memory_days"])
