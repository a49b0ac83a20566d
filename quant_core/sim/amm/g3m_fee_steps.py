"""The per-step trade math of the G3M fee engine: pair arbitrage candidates and the invariant test,
the zero-fee trade, arbitrage acceptance with costs and noise income, and explicit G3M swaps.

Each function is one stage of a scan step of `g3m_fees._engine`, which owns the order of operations;
the formulas and their reasons are in docs/g3m-fees.md ("Best trade", "Invariant test", "Noise traders",
"Explicit trades").
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.sim.amm.fused_ops import _scatter_add, _take, _total


class _Static(NamedTuple):
    n: int
    fee_mode: str  # "zero", "positive" (Python number) or "traced"
    noise: bool  # noise_trader_ratio may be nonzero
    costs: bool  # gas_cost or arb_fees may be nonzero
    tolerance: float
    do_arb: bool
    has_trades: bool
    has_mask: bool = False
    # protocol_fee_split: "none" (a Python 0 or no fees), "each" (taken after each executed arbitrage, noise
    # income reduced: the reference's scalar path) or "step" (summed and taken at the end of the step, noise
    # income not reduced: its dynamic-inputs path); see docs/g3m-fees.md, "Protocol fee split"
    protocol: str = "none"
    weight_arb: bool = True  # False: no weight arbitrage (stage 3), one arbitrage per step (static weights)
    rows_as_xs: bool = False  # a derivative is taken: the scan slices packed per-step rows (g3m_fees._engine)


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and second token of each unordered pair (i < j)."""
    first, second = np.triu_indices(n, k=1)
    return first, second


def _thresholds(
    s_fwd: jax.Array, w_sum: jax.Array, gamma: jax.Array, tolerance: float
) -> tuple[jax.Array, jax.Array]:
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
    # h(z) = q s [a1 z + (a2 s + b2 q) z^2 + (a3 s^2 - b3 q^2) z^3] + O(z^4)
    a1 = c - gamma
    a2 = 0.5 * c * (1.0 - c)
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


def _pair_candidates(
    reserves: jax.Array,
    log_reserves: jax.Array,
    a: jax.Array,
    w: jax.Array,
    p: jax.Array,
    s_fwd: jax.Array,
    z_fwd: jax.Array,
    z_bwd: jax.Array,
    gamma: jax.Array,
    inv_gamma: jax.Array,
    log_gamma: jax.Array,
    static: _Static,
) -> jax.Array:
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
    w_in, w_out = jnp.where(fwd, w1, w2), jnp.where(fwd, w2, w1)
    s = jnp.where(fwd, s_fwd, 1.0 - s_fwd)  # the outgoing token's weight share in the pair
    growth = jnp.expm1(jnp.stack([s * z, s * z - z]))  # one kernel for both tokens' growth
    e_in, e_out = growth[0], growth[1]
    if static.tolerance > 0.0:
        valid = z >= jnp.where(fwd, z_fwd, z_bwd)
    else:  # the reference's knife-edge test, literally: post-trade invariant >= pre-trade invariant
        g_in = jnp.where(e_in > 0.0, e_in, e_in * inv_gamma)
        g_out = jnp.where(e_out > 0.0, gamma * e_out, e_out)
        positive = (g_in > -1.0) & (g_out > -1.0)
        change = w_in * jnp.log1p(jnp.where(positive, g_in, 0.0)) + w_out * jnp.log1p(
            jnp.where(positive, g_out, 0.0)
        )
        valid = positive & (change >= 0.0)
    x_in = (jnp.where(fwd, r1, r2) * inv_gamma) * e_in
    x_out = jnp.where(fwd, r2, r1) * e_out
    profit = jnp.where(valid, -(jnp.where(fwd, p1, p2) * x_in + jnp.where(fwd, p2, p1) * x_out), 0.0)
    rows = [jnp.where(fwd, x_in, x_out), jnp.where(fwd, x_out, x_in), profit, valid.astype(z.dtype)]
    return jnp.stack(rows, axis=-2)


def _pair_choose(cand: jax.Array, static: _Static) -> jax.Array:
    """Pool-side trade [n]: the valid candidate with the largest profit (exact ties summed)."""
    first, second = _pairs(static.n)
    d1, d2, profit, valid = cand[..., 0, :], cand[..., 1, :], cand[..., 2, :], cand[..., 3, :] > 0.5
    # "profit >= every other profit" rather than "profit == max": XLA may recompute a profit in
    # several kernels with different rounding (FMA contraction), and an equality test against a
    # separately computed maximum then selects nothing.
    take = valid
    for k in range(profit.shape[-1]):
        take = take & (profit >= profit[..., k:k + 1])
    return _scatter_add(static.n, jnp.where(take, d1, 0.0), first) + _scatter_add(
        static.n, jnp.where(take, d2, 0.0), second
    )


def _zero_fee_trade(reserves: jax.Array, log_reserves: jax.Array, a: jax.Array, w: jax.Array) -> jax.Array:
    """Zero-fee optimal trade: R_i -> (w_i / p_i) prod_j (p_j R_j / w_j)^{w_j}."""
    return jnp.exp(a - _total(w * (a - log_reserves))) - reserves


def _arb_terms(
    reserves: jax.Array,
    delta: jax.Array,
    p: jax.Array,
    fees: jax.Array,
    gas: jax.Array,
    arb_fees: jax.Array,
    noise: jax.Array,
    static: _Static,
    split: jax.Array | None = None,
) -> jax.Array:
    """[executed (0/1), LPs' fee income, traded value, reserves after the trade (n)] for the trade delta,
    followed in protocol mode "step" by the protocol's share (n, token units), taken later.

    split: protocol_fee_split (None in mode "none"). The arbitrage's size and acceptance do not depend on it.
    """
    flow = delta * p
    abs_flow = _total(jnp.abs(flow))
    inflow = _total(jnp.maximum(flow, 0.0))
    profit = -_total(flow)
    accept = profit - gas >= 0.5 * arb_fees * abs_flow if static.costs else profit >= 0.0
    income = fees * inflow
    volume = abs_flow
    after = reserves + delta
    noise_base = income
    if static.protocol != "none":
        taken = (split * fees)[..., None] * jnp.maximum(delta, 0.0)
        income = (1.0 - split) * income  # the LPs' share of the swap fee
        if static.protocol == "each":  # the noise traders' fees are split too
            noise_base = income
    if static.noise:
        noise_income = noise * noise_base
        # elementwise divide by the broadcast pool value: a scalar divide would be a kernel of its own
        after = after + (after * noise_income[..., None]) / _total(after * p)[..., None]
        income = income + noise_income
        volume = volume * (1.0 + noise)
    parts = [jnp.stack([accept.astype(income.dtype), income, volume], axis=-1), after]
    if static.protocol == "each":
        parts[1] = after - taken
    elif static.protocol == "step":
        parts.append(taken)
    return jnp.concatenate(parts, axis=-1)


def _arb_execute(
    reserves: jax.Array, log_reserves: jax.Array, terms: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """New reserves, their logs, fee income, volume and (mode "step", else None) the protocol's share,
    all unchanged or zero if the trade is not executed."""
    n = reserves.shape[-1]
    accept = terms[..., 0:1] > 0.5
    after = terms[..., 3:3 + n]
    taken = jnp.where(accept, terms[..., 3 + n:], 0.0) if terms.shape[-1] > 3 + n else None
    return (
        jnp.where(accept, after, reserves),
        jnp.where(accept, jnp.log(after), log_reserves),
        jnp.where(accept[..., 0], terms[..., 1], 0.0),
        jnp.where(accept[..., 0], terms[..., 2], 0.0),
        taken,
    )


def _explicit_trade(
    reserves: jax.Array, w: jax.Array, p: jax.Array, trade: jax.Array, fees: jax.Array, gamma: jax.Array,
    split: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """G3M swap of trade = (token-in index, token-out index, amount in) at weights w: new reserves, their
    logs, the LPs' fee income, the traded value and (split given, else None) the protocol's share of the
    fee in token units, split * fees * amount in on the token paid in, taken at the end of the step."""
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
    log_after = jnp.log(after)
    income = fees * _total(jnp.maximum(flow, 0.0))
    if split is None:
        return after, log_after, income, _total(jnp.abs(flow)), None
    taken = (split * fees) * jnp.maximum(delta, 0.0)
    return after, log_after, (1.0 - split) * income, _total(jnp.abs(flow)), taken
