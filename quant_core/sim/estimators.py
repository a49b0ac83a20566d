"""Estimators on chunk prices: EWMA, the proportional "gradient" (QuantAMM's estimator), return variance.

Per chunk c and asset, with G = 1/(1-lambda) and b = lambda/(1-lambda)^3:
    ewma_c = ewma_{c-1} + (x_c - ewma_{c-1}) / G       (= lambda ewma_{c-1} + (1-lambda) x_c)
    a_c    = lambda a_{c-1} + G (x_c - ewma_c)          (|a_c| < 1e-10 -> 0)
    g_c    = a_c / (b ewma'_c)                           (~ (1/p) dp/dt per chunk)
started at ewma_0 = x_0, a_0 = 0, g_0 = 0. ewma' is ewma itself, or (the "alt" variant used with
use_alt_lamb and by the triple-threat rule) an EWMA of the same prices with a second lambda. The
memory length of lambda, in days, is
    memory_days = 2 (chunk_period/1440) cbrt(6 lambda / (1-lambda)^3).

Every estimator returns the full chunk length C, row 0 being the value before any price change, so
row c depends on chunk rows 0..c only.

Two paths compute the same numbers (`method`):
- "scan": a step-by-step `lax.scan` in the reference's exact order of operations (the on-chain order);
- "vectorized": every quantity above is a first-order linear recurrence y_c = a_c y_{c-1} + b_c with
  a_c = lambda (or 0), so it is evaluated in parallel over time (`linear_recurrence`: dense blocks
  of 32 rows, then the same recurrence over the block ends; log depth, no sequential loop). The
  |a| < 1e-10 zeroing is not linear; it is handled exactly by a fixed-point iteration on the
  zeroing mask (see `_gradient_state_vectorized`). On a CPU the scan is the faster of the two;
  the vectorised path is for accelerators, where a scan pays a kernel launch per chunk.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.units import MINUTES_PER_DAY

Method = Literal["scan", "vectorized"]
A_ZERO_THRESHOLD = 1e-10  # the reference zeroes the gradient accumulator below this magnitude


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


# ---------------------------------------------------------------------------------------------
# helpers


def _check_method(method: str) -> None:
    if method not in ("scan", "vectorized"):
        raise ValueError(f"estimator method must be 'scan' or 'vectorized', not {method!r}")


def _per_asset(lamb: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(lamb, dtype=x.dtype), x.shape[1:])


_BLOCK = 32  # rows per dense block of the parallel recurrence


def _powers(lamb: jax.Array, count: int) -> jax.Array:
    """[1, lambda, ..., lambda^count], shape [count + 1, n].

    The base is floored at 1e-300 so that the derivative k lambda^(k-1) stays finite where a power
    of a power of lambda (upper recurrence levels) has underflowed to 0."""
    k = np.arange(count + 1, dtype=np.float64)[:, None]
    return jnp.power(jnp.maximum(lamb, 1e-300)[None], k)


@functools.cache
def _gaps(length: int) -> tuple[np.ndarray, np.ndarray]:
    """(max(i - j, 0), i >= j) for an L x L block: where lambda^(i-j) goes and where it is zero."""
    steps = np.arange(length)
    gap = steps[:, None] - steps[None, :]
    return np.maximum(gap, 0), gap >= 0


@functools.cache
def _lower_ones(length: int) -> np.ndarray:
    """[L, L] constant: 1 where j <= i."""
    return np.tril(np.ones((length, length)))


def _block_solve(pw: jax.Array, breaks: jax.Array | None, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Blocks of y_i = a_i y_{i-1} + b_i (a_i = lambda, or 0 where `breaks`), densely, y_{-1} = 0.

    `pw` holds lambda^0..lambda^L. Returns (y [..., L, n], carry_coef [..., L, n]), carry_coef_i =
    prod_{k<=i} a_k multiplying an incoming y_{-1}. b_j reaches y_i as lambda^(i-j) when no break
    lies in (j, i]."""
    length = inputs.shape[-2]
    gap, lower = _gaps(length)
    transfer = jnp.where(lower[..., None], pw[gap], 0.0)  # [L, L, n]: lambda^(i-j) for i >= j, else 0
    carry_coef = pw[1 : length + 1]  # [L, n]
    if breaks is None:
        return jnp.sum(transfer * inputs[..., None, :, :], axis=-2), jnp.broadcast_to(carry_coef, inputs.shape)
    # breaks up to and including row i (a triangular sum: cheaper to compile than cumsum)
    count = jnp.sum(_lower_ones(length)[..., None] * breaks[..., None, :, :], axis=-2)
    same = count[..., :, None, :] == count[..., None, :, :]  # no break in (j, i]
    y = jnp.sum(jnp.where(same, transfer, 0.0) * inputs[..., None, :, :], axis=-2)
    return y, jnp.where(count == 0, carry_coef, 0.0)


def _recurrence(lamb: jax.Array, breaks: jax.Array | None, inputs: jax.Array) -> jax.Array:
    """y_c = a_c y_{c-1} + b_c over rows c = 0..C-1 with y_{-1} = 0, a_c = lambda (0 where breaks).

    Blocks of _BLOCK rows are solved densely as if they started from zero; the block end values then
    obey the same kind of recurrence one level up (decay lambda^L, a break wherever the block had
    one), solved the same way, and each block adds its incoming value times its carry coefficients.
    Depth log_L(C), no sequential loop, and only powers lambda^0..lambda^L at each level, so the
    rounding is that of the scan (a few ulps)."""
    n_rows = inputs.shape[0]
    if n_rows <= _BLOCK:
        return _block_solve(_powers(lamb, n_rows), breaks, inputs)[0]
    pw = _powers(lamb, _BLOCK)
    n_blocks = -(-n_rows // _BLOCK)
    pad = n_blocks * _BLOCK - n_rows
    b = jnp.pad(inputs, ((0, pad), (0, 0))).reshape(n_blocks, _BLOCK, -1)
    brk = None if breaks is None else jnp.pad(breaks, ((0, pad), (0, 0))).reshape(n_blocks, _BLOCK, -1)
    local, carry_coef = _block_solve(pw, brk, b)
    block_breaks = None if brk is None else jnp.any(brk, axis=1)
    ends = _recurrence(pw[_BLOCK], block_breaks, local[:, -1])  # y at the end of each block
    incoming = jnp.concatenate([jnp.zeros_like(ends[:1]), ends[:-1]], axis=0)
    y = local + carry_coef * incoming[:, None]
    return y.reshape(n_blocks * _BLOCK, -1)[:n_rows]


def linear_recurrence(
    lamb: jax.Array, inputs: jax.Array, initial: jax.Array, breaks: jax.Array | None = None
) -> jax.Array:
    """y_0 = initial, y_c = a_c y_{c-1} + inputs_c for c >= 1 (a_c = lambda, 0 where breaks), [C, n].

    `inputs` and `breaks` are [C-1, n] (the rows c = 1..C-1), lambda is per column."""
    b = jnp.concatenate([jnp.asarray(initial)[None], inputs], axis=0)
    brk = None if breaks is None else jnp.concatenate([jnp.zeros_like(breaks[:1]), breaks], axis=0)
    return _recurrence(lamb, brk, b)


def _shift_down(y: jax.Array) -> jax.Array:
    """Row c holds y_{c-1} (row 0 holds zeros)."""
    return jnp.concatenate([jnp.zeros_like(y[:1]), y[:-1]], axis=0)


# ---------------------------------------------------------------------------------------------
# EWMA


def ewma(chunk_prices: jax.Array, lamb: jax.Array, method: Method = "scan") -> jax.Array:
    """EWMA [C, n] with ewma_0 = x_0 and ewma_c = ewma_{c-1} + (x_c - ewma_{c-1})(1 - lambda)."""
    _check_method(method)
    x = jnp.asarray(chunk_prices)
    lamb = _per_asset(lamb, x)
    if method == "vectorized":
        return linear_recurrence(lamb, (1.0 - lamb) * x[1:], x[0])
    g_inf = 1.0 / (1.0 - lamb)

    def step(e, x_c):
        e = e + (x_c - e) / g_inf
        return e, e

    _, out = jax.lax.scan(step, x[0], x[1:])
    return jnp.concatenate([x[:1], out], axis=0)


# ---------------------------------------------------------------------------------------------
# gradient


def _gradient_state_scan(x: jax.Array, lamb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ewma, a) [C, n] by the reference's step: ewma first, then a from the new ewma, then zeroing."""
    g_inf = 1.0 / (1.0 - lamb)

    def step(carry, x_c):
        e, a = carry
        e = e + (x_c - e) / g_inf
        a = lamb * a + g_inf * (x_c - e)
        a = jnp.where(jnp.abs(a) < A_ZERO_THRESHOLD, 0.0, a)
        return (e, a), (e, a)

    _, (e, a) = jax.lax.scan(step, (x[0], jnp.zeros_like(x[0])), x[1:])
    return jnp.concatenate([x[:1], e], axis=0), jnp.concatenate([jnp.zeros_like(x[:1]), a], axis=0)


def _masked_accumulator(lamb: jax.Array, drive: jax.Array, keep: jax.Array) -> jax.Array:
    """a_0 = 0, a_c = keep_c (lambda a_{c-1} + drive_c): linear once the zeroing mask is known."""
    inputs = jnp.where(keep[1:], drive[1:], 0.0)
    return linear_recurrence(lamb, inputs, jnp.zeros_like(drive[0]), breaks=~keep[1:])


def _gradient_state_vectorized(x: jax.Array, lamb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ewma, a) [C, n] in parallel over time, equal to `_gradient_state_scan`.

    With drive_c = G (x_c - ewma_c), the scan sets a_c = keep_c (lambda a_{c-1} + drive_c) with
    keep_c = [|lambda a_{c-1} + drive_c| >= 1e-10]. For a known mask that is a linear recurrence.
    The mask is found by fixed-point iteration (no gradient flows through it): start from "keep
    everything", solve, recompute the mask from the solution, repeat until it stops changing. If
    row t is the first row whose mask is wrong, every row before t is already exact, so row t is
    right after the next pass: the iteration reaches the scan's own mask in at most C passes, in
    practice in one (price data rarely leaves |a| below 1e-10) or two (flat stretches).
    The result is then recomputed with that mask, differentiably. Where the rounding of the
    parallel sum and the sequential one differ by an ulp exactly at |a| = 1e-10 the two paths could
    pick different masks; that is the only way they can differ by more than rounding."""
    e = ewma(x, lamb, "vectorized")
    g_inf = 1.0 / (1.0 - lamb)
    drive = g_inf * (x - e)
    lamb_c, drive_c = jax.lax.stop_gradient(lamb), jax.lax.stop_gradient(drive)

    def keep_from(a: jax.Array) -> jax.Array:
        keep = jnp.abs(lamb_c * _shift_down(a) + drive_c) >= A_ZERO_THRESHOLD
        return keep.at[0].set(True)  # row 0 is the start value a_0 = 0, not a step

    def body(state):
        keep, _, passes = state
        new = keep_from(_masked_accumulator(lamb_c, drive_c, keep))
        return new, jnp.any(new != keep), passes + 1

    everything = jnp.ones(x.shape, dtype=bool)
    keep, _, _ = jax.lax.while_loop(lambda s: s[1] & (s[2] <= x.shape[0]), body, (everything, jnp.array(True), 0))
    return e, _masked_accumulator(lamb, drive, keep)


def ewma_gradient(
    chunk_prices: jax.Array,
    lamb: jax.Array,
    method: Method = "scan",
    alt_lamb: jax.Array | None = None,
) -> jax.Array:
    """Gradient estimates g_c [C, n] (g_0 = 0): g_c = a_c / (b ewma'_c), b = lambda/(1-lambda)^3.

    With `alt_lamb` the denominator uses an EWMA of the prices with that decay (the reference's
    `..._with_alt_ewma` variant: ewma and a keep `lamb`, only the normalising EWMA changes)."""
    _check_method(method)
    x = jnp.asarray(chunk_prices)
    lamb = _per_asset(lamb, x)
    b = lamb / (1.0 - lamb) ** 3
    e, a = _gradient_state_scan(x, lamb) if method == "scan" else _gradient_state_vectorized(x, lamb)
    denom = e if alt_lamb is None else ewma(x, _per_asset(alt_lamb, x), method)
    g = a[1:] / (b * denom[1:])
    return jnp.concatenate([jnp.zeros_like(x[:1]), g], axis=0)


# ---------------------------------------------------------------------------------------------
# variance of returns


def ewma_return_variance(chunk_prices: jax.Array, lamb: jax.Array, method: Method = "scan") -> jax.Array:
    """EWMA variance of chunk returns [C, n], the reference's `calc_return_variances` on full length.

    r_c = x_c / x_{c-1} - 1 for c >= 1. Started at m = r_1, S = 0, each later return r does
        d = r - m;  m <- m + d (1-lambda);  S <- lambda S + d (lambda d);  var = (1-lambda) S
    (written as in the reference: d/G and d (1 - 1/G)). Rows 0 and 1 (no spread seen yet) are 1,
    as the reference's first row is."""
    _check_method(method)
    x = jnp.asarray(chunk_prices)
    lamb = _per_asset(lamb, x)
    r = (x[1:] - x[:-1]) / x[:-1]  # r[j] is the return into chunk j+1
    g_inf = 1.0 / (1.0 - lamb)
    if method == "scan":

        def step(carry, r_c):
            m, s = carry
            d_old = r_c - m
            m = m + d_old / g_inf
            s = lamb * s + d_old * (d_old * (1.0 - 1.0 / g_inf))
            return (m, s), s * (1.0 - lamb)

        _, var = jax.lax.scan(step, (r[0], jnp.zeros_like(r[0])), r[1:])
    else:
        m = ewma(r, lamb, "vectorized")
        d_old = r[1:] - m[:-1]
        s = linear_recurrence(lamb, d_old * (d_old * (1.0 - 1.0 / g_inf)), jnp.zeros_like(r[0]))
        var = s[1:] * (1.0 - lamb)
    return jnp.concatenate([jnp.ones_like(x[:2]), var], axis=0)
