"""Dynamic swap fees from price momentum: the reference's momentum dynamic-fee hook, with real parameters.

The reference (quantammsim at 3a111c3; MDFH = quantammsim/hooks/momentum_dynamic_fee_hook.py, DFBH =
quantammsim/hooks/dynamic_fee_base_hook.py, EST = .../update_rule_estimators/estimators.py) sets, per chunk,

    lambda  = min(sigmoid(logit_lamb), lambda(max_memory_days))              (EST:122-127, cap_lamb=True)
    g_c     = the gradient estimator on chunk prices x_c = prices[c * chunk_period]   (MDFH:42-50)
    max_fee = clip(softplus(fee_logit), 0, 0.3)                               (MDFH:41)
    fee_c   = max_fee * sigmoid(fee_scaling_factor * g_c)                     (MDFH:51-53)

with g the estimator of `quant_core.sim.estimators.ewma_gradient` (the reference's calc_gradients with
use_alt_lamb False, CPU scan path; the chunk grid starts at the first row of the pre-sliced data, as the
rules' does). It computes a fee per token; the base hook keeps column 0 (DFBH:109-114), the first token in
alphabetical order, and that token's fee becomes the pool's single fee. It slices from
start_coarse = floor(start_index / chunk_period) and repeats each chunk's fee chunk_period times from the
bout's first minute (DFBH:115). Because calc_gradients drops its row 0 (EST:199-201), the reference's row j
is g_{j+1}: bout minute k pays fee_{start_coarse + 1 + k // chunk_period}, computed from the chunk price
at row (start_coarse + 1 + k // chunk_period) chunk_period, which for a chunk-aligned start is the first
minute after the chunk the fee is charged in, i.e. 1 to chunk_period minutes in the future (a look-ahead;
the weights avoid it by holding W_0 through the first chunk, see engines.weight_schedule).
timing="reference" reproduces that; timing="causal" uses fee_{start_coarse + k // chunk_period}, which
knows the prices up to the chunk's first minute, the weights' timing.

Parameters. The reference overwrites its three parameters with constants inside calculate_dynamic_fees
(MDFH:37-40: fee_logit 10.0, fee_scaling_factor 1.0, logit_lamb 0.5), so whatever it is given or trains
has no effect and no gradient (is_trainable says True, MDFH:70-72); and with fee_logit 10 the clip is
active (softplus(10) = 10.00005 > 0.3), so even without the overwrite fee_logit would get no gradient
from its initial value (MDFH:64-67). With those constants the fee is 0.3 sigmoid(g_c), about 15% (g_c is
a per-chunk proportional price gradient, ~1e-2). Here the parameters are real and differentiable;
reference_constants=True reproduces the constants. The fee series then feeds
`g3m_reserves_with_fees(..., fees=series)`, whose per-minute path follows the reference's dynamic-inputs
path (docs/g3m-fees.md, "Dynamic inputs").

User units for the simulator's parameter schema (`MOMENTUM_FEE_PARAMS`, one value per pool):
momentum_fee_max = softplus(fee_logit) (trained through softplus, so its unconstrained value is exactly
fee_logit), momentum_fee_scaling = fee_scaling_factor, momentum_fee_memory_days = the memory of lambda
(trained as logit lambda, as every memory length, so its unconstrained value is exactly logit_lamb).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.params import Param, Transform
from quant_core.sim.estimators import Method, ewma_gradient, lamb_to_memory_days, memory_days_to_lamb
from quant_core.sim.schema import LOGIT_LAMB

ArrayLike = Any
Timing = Literal["reference", "causal"]
MAX_FEE_CAP = 0.3  # the reference's clip on max_fee (MDFH:41)


class MomentumFeeParams(NamedTuple):
    """The reference's parametrisation (all unconstrained)."""

    fee_logit: ArrayLike
    fee_scaling_factor: ArrayLike
    logit_lamb: ArrayLike


REFERENCE_CONSTANTS = MomentumFeeParams(10.0, 1.0, 0.5)  # MDFH:37-40 (and its initial values, MDFH:64-67)


def _inverse_softplus(v: ArrayLike, _chunk_period: int = 0) -> jax.Array:
    v = jnp.asarray(v, dtype=jnp.float64)
    return v + jnp.log(-jnp.expm1(-v))


SOFTPLUS = Transform("softplus", _inverse_softplus, lambda x, _c: jax.nn.softplus(x), 0.0)


def reference_memory_days(chunk_period: int) -> float:
    """The memory in days of the reference's constant logit_lamb (0.5), for a chunk period."""
    return float(lamb_to_memory_days(jax.nn.sigmoid(jnp.float64(REFERENCE_CONSTANTS.logit_lamb)), chunk_period))


MOMENTUM_FEE_PARAMS: tuple[Param, ...] = (
    Param("momentum_fee_max", 1e-5, MAX_FEE_CAP, 0.006, log_scale=True, transform=SOFTPLUS, scalar=True,
          unit="fraction", description="momentum_fee__ hook: the largest swap fee; the fee is "
          "min(momentum_fee_max, 0.3) x sigmoid(momentum_fee_scaling x price gradient), half of it at zero momentum"),
    Param("momentum_fee_scaling", -1000.0, 1000.0, 1.0, scalar=True, unit="per unit of gradient",
          description="momentum_fee__ hook: multiplies the fee token's per-chunk proportional price gradient "
          "inside the sigmoid (positive: higher fee while its price rises)"),
    Param("momentum_fee_memory_days", 0.01, 200.0, log_scale=True, transform=LOGIT_LAMB, scalar=True, unit="days",
          initial=lambda spec: reference_memory_days(getattr(spec, "chunk_period", 1440)),
          description="momentum_fee__ hook: memory of the fee's gradient estimator (capped at max_memory_days; "
          "starts at the reference's logit_lamb 0.5)"),
)


# ---------------------------------------------------------------------------------------------


def reference_parameters(
    p: MomentumFeeParams, chunk_period: int, max_memory_days: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(max_fee, scaling, lambda) from the reference's parametrisation, by its maps (MDFH:41, EST:122-127)."""
    max_fee = jnp.clip(jax.nn.softplus(jnp.asarray(p.fee_logit, dtype=jnp.float64)), 0.0, MAX_FEE_CAP)
    lamb = jax.nn.sigmoid(jnp.asarray(p.logit_lamb, dtype=jnp.float64))
    lamb = jnp.minimum(lamb, memory_days_to_lamb(max_memory_days, chunk_period))
    return max_fee, jnp.asarray(p.fee_scaling_factor, dtype=jnp.float64), lamb


def _pool_value(x: ArrayLike) -> jax.Array:
    """A pool-wide parameter: the value itself, or element 0 of a per-token broadcast [..., n]."""
    x = jnp.asarray(x, dtype=jnp.float64)
    return x[..., 0] if x.ndim else x


def user_parameters(
    params: Mapping[str, ArrayLike], chunk_period: int, max_memory_days: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(max_fee, scaling, lambda) from the user-unit parameters of `MOMENTUM_FEE_PARAMS`."""
    max_fee = jnp.clip(_pool_value(params["momentum_fee_max"]), 0.0, MAX_FEE_CAP)
    days = jnp.minimum(_pool_value(params["momentum_fee_memory_days"]), max_memory_days)
    return max_fee, _pool_value(params["momentum_fee_scaling"]), memory_days_to_lamb(days, chunk_period)


def momentum_chunk_fees(
    chunk_prices: ArrayLike, max_fee: ArrayLike, scaling: ArrayLike, lamb: ArrayLike, method: Method = "scan"
) -> jax.Array:
    """fee_c = max_fee sigmoid(scaling g_c) per chunk and token [C, n], g_0 = 0 (row c uses rows 0..c)."""
    g = ewma_gradient(jnp.asarray(chunk_prices, dtype=jnp.float64), lamb, method)
    return max_fee * jax.nn.sigmoid(scaling * g)


def chunk_fees_to_minutes(
    chunk_fees: ArrayLike, *, start_chunk: int, n_minutes: int, chunk_period: int, timing: Timing = "reference"
) -> jax.Array:
    """The fee of each bout minute k: chunk_fees[start_chunk + shift + k // chunk_period] [n_minutes],
    shift 1 for the reference's timing (DFBH:109-115 on calc_gradients' rows g_1, g_2, ...), 0 for causal."""
    if timing not in ("reference", "causal"):
        raise ValueError(f"timing must be 'reference' or 'causal', not {timing!r}")
    idx = start_chunk + (timing == "reference") + np.arange(n_minutes) // chunk_period
    chunk_fees = jnp.asarray(chunk_fees)
    if n_minutes and idx[-1] >= chunk_fees.shape[0]:
        raise ValueError(f"need chunk fees up to row {idx[-1]}, got {chunk_fees.shape[0]} rows")
    return chunk_fees[idx]


def momentum_dynamic_fees(
    rows: ArrayLike,
    max_fee: ArrayLike,
    scaling: ArrayLike,
    lamb: ArrayLike,
    *,
    stride: int,
    start_row: int,
    n_minutes: int,
    chunk_period: int,
    token_index: int = 0,
    timing: Timing = "reference",
    method: Method = "scan",
) -> jax.Array:
    """The pool's fee at each minute of the bout [n_minutes].

    rows [R, n]: price rows from the first row of the chunk grid (the window's first, warm-up, row), `stride`
    rows per chunk (chunk_period / minutes per row); the bout starts at row `start_row`. The fee token is
    column `token_index` (0, the first token alphabetically, as the reference). Chunk rows past the end of
    `rows` use its last row (as the rules' chunk prices do)."""
    rows = jnp.asarray(rows, dtype=jnp.float64)
    start_chunk = start_row // stride
    n_chunks = start_chunk + 2 + max(n_minutes - 1, 0) // chunk_period
    idx = np.minimum(np.arange(n_chunks) * stride, rows.shape[0] - 1)
    chunk_prices = rows[idx, token_index : token_index + 1]  # the estimator works per token
    fees = momentum_chunk_fees(chunk_prices, max_fee, scaling, lamb, method)[:, 0]
    return chunk_fees_to_minutes(fees, start_chunk=start_chunk, n_minutes=n_minutes, chunk_period=chunk_period,
                                 timing=timing)


def momentum_fee_hook(
    rows: ArrayLike,
    params: Mapping[str, ArrayLike],
    *,
    stride: int,
    start_row: int,
    n_minutes: int,
    chunk_period: int,
    max_memory_days: float,
    token_index: int = 0,
    timing: Timing = "reference",
    reference_constants: bool = False,
    method: Method = "scan",
) -> jax.Array:
    """The momentum_fee__ hook: the per-minute fee series [n_minutes] from user-unit `params`
    (`MOMENTUM_FEE_PARAMS`), or from the reference's constants (reference_constants=True: params unused,
    no gradient, as the reference)."""
    if reference_constants:
        max_fee, scaling, lamb = reference_parameters(REFERENCE_CONSTANTS, chunk_period, max_memory_days)
    else:
        max_fee, scaling, lamb = user_parameters(params, chunk_period, max_memory_days)
    return momentum_dynamic_fees(rows, max_fee, scaling, lamb, stride=stride, start_row=start_row,
                                 n_minutes=n_minutes, chunk_period=chunk_period, token_index=token_index,
                                 timing=timing, method=method)
