"""Zero-fee G3M reserves under perfect arbitrage, minute by minute, summed in closed form.

Per minute, prices p -> p' and weights w -> w' (both arbitraged perfectly):
    price move:  R_i <- R_i prod_j r_j^{w_j} / r_i            (r = p'/p)
    weight move: R_i <- R_i s_i / prod_j s_j^{w'_j}            (s = w'/w)
In logs each minute adds an increment, so the reserves at each data step are a cumulative sum.
Data coarser than a minute (daily candles) is stepped through its minutes with log-linearly
interpolated prices: jumping the weights once per step would let the arbitrageur take
sum w' log(w'/w) of the value at each jump, which the per-minute ramp does not lose.

Within one data step of M minutes the per-minute log price change delta is constant and the
weights are linear in the minute (w_m = a + m d while ramping, then constant), so the M minutes
sum exactly to
    price part:  (sum_{m<M} w_m) . delta - M delta_i
    weight part: log w_M,i - log w_0,i - sum_j [x_K log x_K - a log a - d sum_{m<K} log(a + m d)]_j
with K ramping minutes, x_m = a + m d, and sum_{m<K} log(a + m d) = K log|d| + lgamma(...) -
lgamma(...). That makes a step O(n) instead of O(M n); `g3m_log_reserves_per_minute` is the
minute-by-minute reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from quant_core.sim.amm import g3m_growth_native
from quant_core.sim.token_sum import token_sum
from quant_core.sim.weights import WeightSchedule

# Below this |d|/a the lgamma form loses more than it gains; the second-order expansion is exact there.
_SMALL_SLOPE = 1e-9


def _ramp_arbitrage_loss(a: jax.Array, d: jax.Array, k: jax.Array) -> jax.Array:
    """sum_{m=1..K} x_m log(x_m / x_{m-1}) for x_m = a + m d (elementwise; K may be 0)."""
    x_k = a + k * d
    small = jnp.abs(d) < _SMALL_SLOPE * a
    safe_d = jnp.where(small, 1.0, d)
    z = a / jnp.abs(safe_d)
    # the falling branch's gammaln sees its arguments only when the ramp falls: on a rising ramp with a/d an
    # integer below k, z - k + 1 sits on a pole (0, -1, ...) and where() passed its NaN gradient on as 0 * NaN
    # (the rising branch's arguments z, z + k are positive either way)
    up = safe_d > 0
    log_sum = k * jnp.log(jnp.abs(safe_d)) + jnp.where(
        up, gammaln(z + k) - gammaln(z), gammaln(z + 1.0) - gammaln(jnp.where(up, 1.0, z - k + 1.0))
    )
    exact = x_k * jnp.log(x_k) - a * jnp.log(a) - safe_d * log_sum
    # |d| << a: sum d (1 + d/(2 x)) + O(d^3), with sum_{m<K} 1/x_m ~ K / a
    series = k * d + 0.5 * d * d * k / a
    return jnp.where(small, series, exact)


def g3m_step_log_growth(log_prices: jax.Array, schedule: WeightSchedule, step_minutes: int) -> jax.Array:
    """log(V_s / V_0) at each data step [S] given log prices at the steps [S, n]: the minutes of each
    step summed in closed form (module docstring). Arbitrage keeps R_i p_i = w_i V at every minute,
    so the value alone fixes the reserves (`g3m_log_reserves`)."""
    n_steps = log_prices.shape[0]
    if n_steps == 1:
        return jnp.zeros((1,), dtype=log_prices.dtype)
    m = float(step_minutes)
    wip = schedule.interpolation_period
    starts = jnp.arange(n_steps - 1) * step_minutes
    w_b, d_b, offset = schedule.segment(starts)
    k = jnp.clip(wip - offset, 0, step_minutes).astype(log_prices.dtype)[:, None]  # ramping minutes
    o = jnp.minimum(offset, wip).astype(log_prices.dtype)[:, None]
    a = w_b + o * d_b  # weight at the step's first minute
    # sum_{m=0}^{M-1} w_m = M a + d (sum of min(m, K) over m < M)
    ramp_sum = k * (k - 1.0) / 2.0 + (m - k) * k
    w_sum = m * a + d_b * ramp_sum
    delta = (log_prices[1:] - log_prices[:-1]) / m
    shared = token_sum(w_sum * delta - _ramp_arbitrage_loss(a, d_b, k), keepdims=False)
    return jnp.concatenate([jnp.zeros((1,), dtype=shared.dtype), jnp.cumsum(shared)])


def g3m_log_reserves(
    log_prices: jax.Array, schedule: WeightSchedule, step_minutes: int, initial_log_reserves: jax.Array
) -> jax.Array:
    """Log reserves at each data step [S, n]: log R_s = log R_0 + log(V_s/V_0) + log(w_s/w_0) - log(p_s/p_0)
    (the per-step increments telescope: a step's last weight is the next step's first)."""
    growth = g3m_step_log_growth(log_prices, schedule, step_minutes)[:, None]
    log_w = jnp.log(schedule.at(jnp.arange(log_prices.shape[0]) * step_minutes))
    return initial_log_reserves + growth + (log_w - log_w[:1]) - (log_prices - log_prices[:1])


def g3m_log_reserves_per_minute(
    log_prices: jax.Array,
    weight_fn: Callable[[jax.Array], jax.Array],
    step_minutes: int,
    initial_log_reserves: jax.Array,
) -> jax.Array:
    """The same reserves summed minute by minute (reference for tests; O(M n) per step)."""
    n_steps = log_prices.shape[0]
    minute = jnp.arange(step_minutes + 1)

    def increment(s):
        w = weight_fn(s * step_minutes + minute)
        delta = (log_prices[s + 1] - log_prices[s]) / step_minutes
        lw = jnp.log(w)
        shared = jnp.sum(jnp.sum(w[:-1], axis=0) * delta) - jnp.sum(w[1:] * (lw[1:] - lw[:-1]))
        return shared - step_minutes * delta + (lw[-1] - lw[0])

    incs = jax.lax.map(increment, jnp.arange(n_steps - 1), batch_size=max(1, 65536 // (step_minutes + 1)))
    return initial_log_reserves + jnp.concatenate(
        [jnp.zeros_like(initial_log_reserves)[None, :], jnp.cumsum(incs, axis=0)], axis=0
    )


def g3m_minute_log_growth(prices: jax.Array, weights: jax.Array) -> jax.Array:
    """log(V_t / V_0) [T] of a zero-fee G3M pool under perfect arbitrage, for arbitrary per-minute
    weights [T, n] (linear ramps, the `optimal` path, anything) and prices [T, n].

    Each minute the price move at the old weights adds sum_j w_{t-1,j} log(p_t,j / p_t-1,j) to log V,
    and the weight move at the new prices subtracts sum_j w_t,j log(w_t,j / w_t-1,j) (the arbitrageur's
    take, a KL divergence). Arbitrage keeps R_i p_i = w_i V, so V alone fixes the reserves:
    R_t,i = V_t w_t,i / p_t,i. One cumulative sum over a scalar series instead of one per token. On a CPU
    the same sum runs as compiled C++ (g3m_growth_native: XLA:CPU's float64 log is glibc's scalar one, and
    its cumulative sum a log-depth pyramid); derivatives and other devices use `_minute_log_growth_xla`."""
    return g3m_growth_native.minute_log_growth(prices, weights, _minute_log_growth_xla)


def _minute_log_growth_xla(prices: jax.Array, weights: jax.Array) -> jax.Array:
    """g3m_minute_log_growth in XLA. The logs are of the minute's ratios, not differences of logs: a fused
    difference of logs computes each log twice (one log per token-minute: ~25 % of the pass on a CPU)."""
    shared = token_sum(weights[:-1] * jnp.log(prices[1:] / prices[:-1])
                       - weights[1:] * jnp.log(weights[1:] / weights[:-1]), keepdims=False)
    return jnp.concatenate([jnp.zeros((1,), dtype=shared.dtype), jnp.cumsum(shared)])


def g3m_log_reserves_from_minute_weights(
    prices: jax.Array, weights: jax.Array, initial_log_reserves: jax.Array
) -> jax.Array:
    """Zero-fee log reserves [T, n] for arbitrary per-minute weights [T, n] (see
    `g3m_minute_log_growth`): log R_t = log R_0 + log(V_t/V_0) + log(w_t/w_0) - log(p_t/p_0)."""
    growth = g3m_minute_log_growth(prices, weights)[:, None]
    return initial_log_reserves + growth + jnp.log(weights / weights[:1]) - jnp.log(prices / prices[:1])


def g3m_minute_log_growth_at(log_prices: jax.Array, schedule: WeightSchedule, minutes: jax.Array) -> jax.Array:
    """log(V_t / V_0) at the given minutes [Q] for minute prices [T, n] and a linear schedule: the same
    numbers as `g3m_minute_log_growth(prices, schedule.per_minute(T))[minutes]`, summed per chunk.

    The transition from minute s to s+1, s at local minute m of chunk j, holds w_s = a_j + min(m, K) d_j
    and moves to a_j + min(m+1, K) d_j (K = interpolation period; the chunk's last move lands on
    a_j+1 = a_j + K d_j). So a chunk's first m transitions add
        sum_i [a_j,i Q0[j,m,i] + d_j,i Q1[j,m,i]] - ramp(a_j, d_j, min(m, K))
    with chunk-local prefix sums Q0 = sum_{m'<m} dlogp, Q1 = sum_{m'<m} min(m', K) dlogp of the
    prices alone, and the ramp's arbitrage loss in closed form. Gradients with respect to the pool
    parameters then flow through [chunks, n] arrays rather than [minutes, n] ones."""
    n_minutes, n = log_prices.shape
    cp = schedule.chunk_period
    k = min(schedule.interpolation_period, cp)
    n_chunks = (n_minutes - 1) // cp + 1
    delta = log_prices[1:] - log_prices[:-1]
    delta = jnp.concatenate([delta, jnp.zeros((n_chunks * cp - delta.shape[0], n), delta.dtype)])
    delta = delta.reshape(n_chunks, cp, n)
    ramp_min = jnp.minimum(jnp.arange(cp), k).astype(delta.dtype)[None, :, None]
    zero = jnp.zeros((n_chunks, 1, n), delta.dtype)
    q0 = jnp.concatenate([zero, jnp.cumsum(delta, axis=1)], axis=1)  # [C, cp + 1, n]
    q1 = jnp.concatenate([zero, jnp.cumsum(ramp_min * delta, axis=1)], axis=1)
    a, d, _ = schedule.segment(jnp.arange(n_chunks) * cp)
    kk = jnp.full((n_chunks, 1), float(k), delta.dtype)
    whole = token_sum(a * q0[:, cp] + d * q1[:, cp] - _ramp_arbitrage_loss(a, d, kk), keepdims=False)
    before = jnp.concatenate([jnp.zeros((1,), whole.dtype), jnp.cumsum(whole)[:-1]])
    j, m = minutes // cp, minutes % cp
    aj, dj = a[j], d[j]
    mk = jnp.minimum(m, k).astype(delta.dtype)[:, None]
    part = token_sum(aj * q0[j, m] + dj * q1[j, m] - _ramp_arbitrage_loss(aj, dj, mk), keepdims=False)
    return before[j] + part
