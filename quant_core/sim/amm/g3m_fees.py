"""G3M (TFMM) reserves with swap fees, arbitrage costs, noise traders and explicit trades.

Why a separate engine: with fees the arbitrageur's best trade depends on the reserves it meets, so the
path is a sequential scan and cannot be summed in closed form like the zero-fee path (`g3m.py`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

ArrayLike = Any  # jax.Array, np.ndarray or a Python number


class FeeReserves(NamedTuple):
    """Result of `g3m_reserves_with_fees`."""

    reserves: jax.Array  # [T, n] reserves after each minute's arbitrage
    fee_revenue: jax.Array  # [T] fees earned by the pool each minute, in price units
    arb_volume: jax.Array  # [T] traded value sum_i |Delta_i| p_i (arbitrage + noise + explicit trades)


class _Static(NamedTuple):
    n: int
    fee_mode: str  # "zero", "positive" or "traced"
    noise: bool
    costs: bool  # gas_cost or arb_fees may be nonzero
    tolerance: float
    do_arb: bool
    has_trades: bool


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.triu_indices(n, k=1)
    return first, second


def _thresholds(s_fwd: jax.Array, w_sum: jax.Array, gamma: jax.Array, tolerance: float) -> tuple[jax.Array, jax.Array]:
    """Smallest log mispricing z (<= 0) at which a pair candidate passes the tolerant invariant test,
    for both directions of each pair (s_fwd: the second token's weight share, w_sum: w_i + w_j).

    For z < 0 a candidate trade runs against its signature; its invariant change divided by
    w_in + w_out is h(z) = q log(1 + expm1(s z)/gamma) + s log(1 + gamma expm1(-q z)) (s the outgoing
    token's share, q = 1 - s), increasing in z with h(0) = 0. The threshold solves
    h(z) = log(1 - tol)/(w_in + w_out) by Newton on the cubic Taylor polynomial of h, whose error
    is O(z^4): nil for |z| ~ tol/fees ~ 1e-6, and below 1e-11 relative even for fees of 1e-5.
    """
    c = 1.0 / gamma
    target = np.log1p(-tolerance) / w_sum
    a1 = c - gamma
    a2 = 0.5 * c * (1.0 - c)  # times s, and gamma-part: 0.5 gamma (1 - gamma) times q
    b2 = 0.5 * gamma * (1.0 - gamma)
    a3 = c * (1.0 - c) * (1.0 - 2.0 * c) / 6.0
    b3 = gamma * (1.0 - gamma) * (1.0 - 2.0 * gamma) / 6.0
    out = []
    for s in (s_fwd, 1.0 - s_fwd):  # outgoing token's share: forward (first token in), then backward
        q = 1.0 - s
        qs = q * s
        h1 = qs * a1
        h2 = qs * (a2 * s + b2 * q)
        h3 = qs * (a3 * s * s - b3 * q * q)
        h1_safe = jnp.where(h1 > 0.0, h1, 1.0)
        z = target / h1_safe
        for _ in range(2):
            z = z - (((h3 * z + h2) * z + h1) * z - target) / ((3.0 * h3 * z + 2.0 * h2) * z + h1_safe)
        # positivity of the outgoing reserve needs 1 + expm1(s z)/gamma > 0, i.e. z > log(1 - gamma)/s
        z = jnp.clip(z, 0.5 * jnp.log1p(-gamma) / s, 0.0)
        out.append(jnp.where(h1 > 0.0, z, -jnp.inf))
    return out[0], out[1]


def _block(pred: jax.Array, fn, *args):
    """fn(*args) behind an always-true `lax.cond`.

    XLA:CPU runs a thunk sequence of more than 8 kernels through its concurrent executor, whose
    per-kernel overhead is ~50 ns; sequences of at most 8 run inline at a few ns. A conditional's
    branch is a sequence of its own, so grouping the step's kernels into conditionals keeps every
    sequence short and makes the scan several times faster. `pred` comes from the scan counter so
    that it stays unbatched under vmap (a batched predicate would turn the cond into a select).
    """
    out_shape = jax.eval_shape(fn, *args)
    return jax.lax.cond(pred, fn, lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape), *args)


def _mask(size: int, positions) -> jax.Array:
    """Boolean [size] vector, True at the given static positions (built from an iota, so it fuses)."""
    iota = jax.lax.iota(np.int32, size)
    out = iota < 0
    for m in positions:
        out = out | (iota == int(m))
    return out


def _take(x: jax.Array, idx: np.ndarray) -> jax.Array:
    """x[..., idx] for a static index array, as selects between broadcast slices (fuses; a gather,
    or a concatenation feeding several users, would be a kernel of its own)."""
    idx = np.asarray(idx)
    out = jnp.broadcast_to(x[..., idx[0]:idx[0] + 1], x.shape[:-1] + (len(idx),))
    for k in sorted(set(idx.tolist()) - {int(idx[0])}):
        out = jnp.where(_mask(len(idx), np.flatnonzero(idx == k)), x[..., k:k + 1], out)
    return out


def _scatter_add(n: int, values: jax.Array, idx: np.ndarray) -> jax.Array:
    """out[..., k] = sum of values[..., m] over m with idx[m] == k (static idx), without a scatter."""
    out = jnp.zeros(values.shape[:-1] + (n,), values.dtype)
    for m, k in enumerate(np.asarray(idx).tolist()):
        out = out + jnp.where(_mask(n, [k]), values[..., m:m + 1], 0.0)
    return out


def _total(x: jax.Array) -> jax.Array:
    """Sum over the last (short, static) axis as a chain of adds, which fuses with its inputs."""
    acc = x[..., 0]
    for i in range(1, x.shape[-1]):
        acc = acc + x[..., i]
    return acc


def _pair_candidates(reserves, log_reserves, a, w, p, pair_block, gamma, inv_gamma, log_gamma, static: _Static):
    """Candidate trades, one per token pair, as rows of a [4, P] array: pool-side amount of the
    pair's first token, of its second token, the arbitrageur's profit (0 if invalid), validity.

    Per pair only the direction with the larger log mispricing z is a candidate: the other has
    z <= log(gamma) and cannot pass the invariant test unless invariant_tolerance is of the order
    of fees^2 w_i w_j / (w_i + w_j).
    """
    first, second = _pairs(static.n)
    u = a - log_reserves
    d = _take(u, first) - _take(u, second)
    fwd = d > 0.0  # the pair's first token flows in
    z = log_gamma + jnp.abs(d)
    w1, w2 = _take(w, first), _take(w, second)
    r1, r2 = _take(reserves, first), _take(reserves, second)
    p1, p2 = _take(p, first), _take(p, second)
    n_pairs = len(first)
    s_fwd, s_bwd = pair_block[..., :n_pairs], pair_block[..., n_pairs:2 * n_pairs]
    w_in, w_out = jnp.where(fwd, w1, w2), jnp.where(fwd, w2, w1)
    s = jnp.where(fwd, s_fwd, s_bwd)  # the outgoing token's weight share in the pair
    e_in = jnp.expm1(s * z)
    e_out = jnp.expm1(s * z - z)
    if static.tolerance > 0.0:
        valid = z >= jnp.where(fwd, pair_block[..., 2 * n_pairs:3 * n_pairs], pair_block[..., 3 * n_pairs:])
    else:  # the reference's knife-edge test, literally: post-trade invariant >= pre-trade invariant
        g_in = jnp.where(e_in > 0.0, e_in, e_in * inv_gamma)
        g_out = jnp.where(e_out > 0.0, gamma * e_out, e_out)
        positive = (g_in > -1.0) & (g_out > -1.0)
        change = w_in * jnp.log1p(jnp.where(positive, g_in, 0.0)) + w_out * jnp.log1p(jnp.where(positive, g_out, 0.0))
        valid = positive & (change >= 0.0)
    x_in = (jnp.where(fwd, r1, r2) * inv_gamma) * e_in
    x_out = jnp.where(fwd, r2, r1) * e_out
    profit = jnp.where(valid, -(jnp.where(fwd, p1, p2) * x_in + jnp.where(fwd, p2, p1) * x_out), 0.0)
    rows = [jnp.where(fwd, x_in, x_out), jnp.where(fwd, x_out, x_in), profit, valid.astype(z.dtype)]
    return jnp.stack(rows, axis=-2)


def _pair_choose(cand, static: _Static):
    """Pool-side trade [n]: the valid candidate with the largest profit (exact ties summed)."""
    first, second = _pairs(static.n)
    d1, d2, profit, valid = cand[..., 0, :], cand[..., 1, :], cand[..., 2, :], cand[..., 3, :] > 0.5
    best = profit[..., 0]
    for k in range(1, profit.shape[-1]):
        best = jnp.maximum(best, profit[..., k])
    take = valid & (profit == best[..., None])
    return _scatter_add(static.n, jnp.where(take, d1, 0.0), first) + _scatter_add(
        static.n, jnp.where(take, d2, 0.0), second
    )


def _zero_fee_trade(reserves, log_reserves, a, w):
    """Zero-fee optimal trade: R_i -> (w_i / p_i) prod_j (p_j R_j / w_j)^{w_j}."""
    return jnp.exp(a - _total(w * (a - log_reserves))) - reserves


def _arb_terms(reserves, delta, p, fees, gas, arb_fees, noise, static: _Static):
    """[executed (0/1), fee income, traded value, reserve scale from noise-trader fees] of delta."""
    flow = delta * p
    abs_flow = _total(jnp.abs(flow))
    inflow = _total(jnp.maximum(flow, 0.0))
    profit = -_total(flow)
    accept = profit - gas >= 0.5 * arb_fees * abs_flow if static.costs else profit >= 0.0
    income = fees * inflow
    volume = abs_flow
    scale = jnp.ones_like(income)
    if static.noise:
        noise_income = noise * income
        scale = 1.0 + noise_income / _total((reserves + delta) * p)
        income = income + noise_income
        volume = volume * (1.0 + noise)
    return jnp.stack([accept.astype(income.dtype), income, volume, scale], axis=-1)


def _arb_execute(reserves, log_reserves, delta, terms):
    """New reserves, their logs, fee income and volume (zero if the trade is not executed)."""
    accept = terms[..., 0:1] > 0.5
    after = (reserves + delta) * terms[..., 3:4]
    return (
        jnp.where(accept, after, reserves),
        jnp.where(accept, jnp.log(after), log_reserves),
        jnp.where(accept[..., 0], terms[..., 1], 0.0),
        jnp.where(accept[..., 0], terms[..., 2], 0.0),
    )


def _explicit_trade(reserves, w, p, trade, fees, gamma):
    """G3M swap of trade = (token-in index, token-out index, amount in) at weights w."""
    n = reserves.shape[-1]
    idx = jnp.arange(n)
    i_in = trade[0].astype(jnp.int32)
    i_out = trade[1].astype(jnp.int32)
    amount = trade[2]
    one_in, one_out = idx == i_in, idx == i_out
    active = (amount != 0.0) & (i_in != i_out)
    r_in = _total(jnp.where(one_in, reserves, 0.0))
    r_out = _total(jnp.where(one_out, reserves, 0.0))
    w_in = _total(jnp.where(one_in, w, 0.0))
    w_out = jnp.where(active, _total(jnp.where(one_out, w, 0.0)), 1.0)
    grow = jnp.log1p(gamma * amount / jnp.where(active, r_in, 1.0))
    paid_out = -r_out * jnp.expm1(-(w_in / w_out) * grow)
    delta = jnp.where(active, jnp.where(one_in, amount, 0.0) - jnp.where(one_out, paid_out, 0.0), 0.0)
    flow = delta * p
    after = reserves + delta
    return after, jnp.log(after), fees * _total(jnp.maximum(flow, 0.0)), _total(jnp.abs(flow))


@partial(jax.jit, static_argnames=("static",))
def _engine(prices, weights, initial_reserves, fees, gas, arb_fees, noise, trades, static: _Static):
    n = static.n
    first, second = _pairs(n)
    n_pairs = len(first)
    gamma = 1.0 - fees
    inv_gamma = 1.0 / gamma
    log_gamma = jnp.log(gamma)
    # What depends only on (w, p) is computed here, vectorised over time. Per step: log w, log p,
    # p, w and the pair block [s_fwd, s_bwd, z*_fwd, z*_bwd] (s: outgoing token's weight share in
    # the pair; z*: validity threshold of the tolerant invariant test).
    w1, w2 = weights[:, first], weights[:, second]
    w_sum = w1 + w2
    s_fwd = w2 / w_sum
    cols = [s_fwd, 1.0 - s_fwd]
    if static.do_arb and static.tolerance > 0.0 and static.fee_mode != "zero":
        cols += list(_thresholds(s_fwd, w_sum, gamma, static.tolerance))
    pair_block = jnp.concatenate(cols, axis=-1)
    arrays = {"lw": jnp.log(weights), "lp": jnp.log(prices), "p": prices, "w": weights, "pb": pair_block}
    if static.has_trades:
        arrays["trade"] = trades
    # State = [R (n), fee income, volume, log R (n)]; its first n + 2 entries are the output row.
    lr_at = n + 2

    def row(arrs, name, t):
        return jax.lax.dynamic_index_in_dim(arrs[name], t, keepdims=False)

    def arb(old_weights, first_in_step, state, t, arrs):
        tw = jnp.maximum(t - 1, 0) if old_weights else t
        w, lw, pb = row(arrs, "w", tw), row(arrs, "lw", tw), row(arrs, "pb", tw)
        p, lp = row(arrs, "p", t), row(arrs, "lp", t)
        r, lr = state[:n], state[lr_at:lr_at + n]
        a = lw - lp
        if static.fee_mode == "zero":
            delta = _zero_fee_trade(r, lr, a, w)
        else:
            cand = _pair_candidates(r, lr, a, w, p, pb, gamma, inv_gamma, log_gamma, static)
            delta = _pair_choose(jax.lax.optimization_barrier(cand), static)
            if static.fee_mode == "traced":
                delta = jnp.where(gamma == 1.0, _zero_fee_trade(r, lr, a, w), delta)
        delta = jax.lax.optimization_barrier(delta)
        terms = jax.lax.optimization_barrier(_arb_terms(r, delta, p, fees, gas, arb_fees, noise, static))
        r, lr, f, v = _arb_execute(r, lr, delta, terms)
        if not first_in_step:
            f, v = f + state[n], v + state[n + 1]
        return jnp.concatenate([r, f[None], v[None], lr])

    def trade(first_in_step, state, t, arrs):
        r, lr, f, v = _explicit_trade(state[:n], row(arrs, "w", t), row(arrs, "p", t), row(arrs, "trade", t), fees, gamma)
        if not first_in_step:
            f, v = f + state[n], v + state[n + 1]
        return jnp.concatenate([r, f[None], v[None], lr])

    blocks = []
    if static.do_arb:
        blocks.append(partial(arb, True, True))
    if static.has_trades:
        blocks.append(partial(trade, not blocks))
    if static.do_arb:
        blocks.append(partial(arb, False, not blocks))

    def body(t, state, arrs):
        pred = t >= 0
        for fn in blocks:
            state = _block(pred, fn, state, t, arrs)
        return state

    def step(carry, _):
        t, state = carry
        if blocks:
            state = _block(t >= 0, body, t, state, arrays)
        return (t + 1, state), state[:n + 2]

    zeros = jnp.zeros(2, weights.dtype)
    init_state = jnp.concatenate([initial_reserves, zeros, jnp.log(initial_reserves)])
    _, out = jax.lax.scan(step, (jnp.int32(0), init_state), None, length=prices.shape[0])
    return out[:, :n], out[:, n], out[:, n + 1]


def _static_value(x: ArrayLike) -> float | None:
    """The value of a Python number (or NumPy scalar); None for anything that may be traced."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float, np.floating, np.integer)):
        return float(x)
    return None


def g3m_reserves_with_fees(
    prices: ArrayLike,
    weights: ArrayLike,
    initial_reserves: ArrayLike,
    *,
    fees: ArrayLike,
    gas_cost: ArrayLike = 0.0,
    arb_fees: ArrayLike = 0.0,
    arb_frequency: int = 1,
    noise_trader_ratio: ArrayLike = 0.0,
    trades: ArrayLike | None = None,
    invariant_tolerance: float = 1e-9,
    do_arb: bool = True,
) -> FeeReserves:
    """Reserves, fee revenue and traded value of a G3M/TFMM pool under arbitrage with fees.

    prices [T, n] per-minute prices (row 0 = start); weights [T, n] per-minute weights (rows sum to 1);
    initial_reserves [n]. fees, gas_cost, arb_fees, noise_trader_ratio: scalars, Python numbers or
    traced arrays (Python zeros let their terms be dropped at trace time). trades: optional [T, 3]
    float array of (token-in index, token-out index, amount in) per minute; see the module docstring.
    arb_frequency, invariant_tolerance and do_arb are static. Jit- and vmap-compatible.
    """
    f = int(arb_frequency)
    if f < 1:
        raise ValueError("arb_frequency must be >= 1")
    tol = float(invariant_tolerance)
    if not 0.0 <= tol < 1.0:
        raise ValueError("invariant_tolerance must be in [0, 1)")
    prices = jnp.asarray(prices, dtype=jnp.float64)
    weights = jnp.asarray(weights, dtype=jnp.float64)
    initial_reserves = jnp.asarray(initial_reserves, dtype=jnp.float64)
    if prices.ndim != 2 or weights.shape != prices.shape or initial_reserves.shape != prices.shape[1:]:
        raise ValueError(
            f"need prices [T, n], weights [T, n], initial_reserves [n]; got {prices.shape}, {weights.shape}, "
            f"{initial_reserves.shape}"
        )
    n_steps, n = prices.shape
    if n < 2:
        raise ValueError("a pool needs at least two tokens")
    if trades is not None:
        trades = jnp.asarray(trades, dtype=jnp.float64)
        if trades.shape != (n_steps, 3):
            raise ValueError(f"trades must be [T, 3] = {(n_steps, 3)}, got {trades.shape}")
        trades = trades[::f]
    fee_value = _static_value(fees)
    noise_value = _static_value(noise_trader_ratio)
    static = _Static(
        n=n,
        fee_mode="traced" if fee_value is None else ("zero" if fee_value == 0.0 else "positive"),
        noise=noise_value is None or noise_value != 0.0,
        costs=not (_static_value(gas_cost) == 0.0 and _static_value(arb_fees) == 0.0),
        tolerance=tol,
        do_arb=bool(do_arb),
        has_trades=trades is not None,
    )
    scalar = partial(jnp.asarray, dtype=jnp.float64)
    reserves, fee, vol = _engine(
        prices[::f], weights[::f], initial_reserves, scalar(fees), scalar(gas_cost), scalar(arb_fees),
        scalar(noise_trader_ratio), trades, static,
    )
    if f != 1:
        reserves = jnp.repeat(reserves, f, axis=0)[:n_steps]
        fee = jnp.zeros((fee.shape[0], f), fee.dtype).at[:, 0].set(fee).reshape(-1)[:n_steps]
        vol = jnp.zeros((vol.shape[0], f), vol.dtype).at[:, 0].set(vol).reshape(-1)[:n_steps]
    return FeeReserves(reserves, fee, vol)
