"""The per-step math of the reCLAMM engine: invariant, centredness, initial state, the two thermostats
(virtual-balance updates), the arc-length calibration, and the arbitrage trades.

Each function is one stage of a scan step of `reclamm._engine`, which owns the order of operations; the
formulas and their reasons are in the reclamm module docstring. All take and return traceable float64
scalars (token 0 = "A", token 1 = "B"; prices p = (pA, pB) in the numeraire, P = pA / pB the price of A
in B; real balances Ra, Rb; virtual balances Va, Vb; effective balances Ea = Ra + Va, Eb = Rb + Vb).

The arithmetic is written in the reference's operation order on purpose (x ** 0.5 where it takes a
power, (1 / gamma) * (...) where it multiplies by a reciprocal, the same floors such as 1e-30): its fee
path keeps or drops a trade on a test that rounding decides (see `fee_trade`), and only the same
operations in the same order round the same way.
"""

from __future__ import annotations

import jax.numpy as jnp

# Initialisation reference balance of A (the contract's _INITIALIZATION_MAX_BALANCE_A); the state is
# rescaled to the pool value afterwards, so only rounding depends on it.
INIT_BALANCE_A = 1e6
MAX_DECAY_SECONDS = 30 * 86400.0  # the contract caps one virtual-balance update's duration at 30 days
DUST_VALUE = 0.01  # numeraire value of the real balance a clamp-to-edge trade leaves behind
SHIFT_EXPONENT_DIVISOR = 124649.0  # daily_price_shift_base = 1 - shift_exponent / 124649 (~ 86400 / ln 2)
_TINY = 1e-30
_HALF = (0.5, 0.5)  # reCLAMM is an equal-weight constant product on the effective balances


def invariant(ra, rb, va, vb):
    """L = (Ra + Va)(Rb + Vb)."""
    return (ra + va) * (rb + vb)


def centeredness(ra, rb, va, vb):
    """(c, above): c = min(Ra Vb, Va Rb) / max(Ra Vb, Va Rb) in [0, 1] (1 = centred); above = Ra Vb > Va Rb
    (the pool holds relatively much A: A is cheap, B dear). A zero Ra gives (0, below), a zero Rb (0, above)."""
    num = ra * vb
    den = va * rb
    above = num > den
    c = jnp.where(above, den / jnp.maximum(num, _TINY), num / jnp.maximum(den, _TINY))
    ra_zero, rb_zero = ra == 0.0, rb == 0.0
    c = jnp.where(ra_zero | rb_zero, 0.0, c)
    above = jnp.where(ra_zero, False, above)
    above = jnp.where(rb_zero, True, above)
    above = jnp.where(ra_zero & rb_zero, False, above)
    return c, above


def price_ratio(ra, rb, va, vb):
    """max price / min price of the current range: (L / Va^2) / (Vb^2 / L)."""
    big_l = invariant(ra, rb, va, vb)
    return (big_l / (va * va)) / ((vb * vb) / big_l)


def initial_state(value, first_prices, ratio):
    """(Ra, Rb, Va, Vb) of a pool centred on the first price with range [P / sqrt(ratio), P sqrt(ratio)],
    worth `value` at the first prices (the contract's theoretical balances, rescaled)."""
    target = first_prices[0] / first_prices[1]
    sqrt_q = jnp.sqrt(ratio)
    lo, hi = target / sqrt_q, target * sqrt_q
    sqrt_ratio = jnp.sqrt(hi / lo)
    va = INIT_BALANCE_A / (sqrt_ratio - 1.0)
    vb = lo * (va + INIT_BALANCE_A)
    rb = jnp.sqrt(target * vb * (INIT_BALANCE_A + va)) - vb
    ra = (rb + vb - va * target) / target
    scale = value / (ra * first_prices[0] + rb * first_prices[1])
    return ra * scale, rb * scale, va * scale, vb * scale


def _dependent_virtual(r_other, r_own, v_own, sqrt_q):
    """The virtual balance of the other token that keeps the price ratio: Vu = Ru (Vo + Ro) / ((sqrt Q - 1) Vo - Ro)."""
    return r_other * (v_own + r_own) / jnp.maximum((sqrt_q - 1.0) * v_own - r_own, _TINY)


def geometric_update(ra, rb, va, vb, above, base, seconds, sqrt_q):
    """The contract's thermostat: the dear token's virtual balance decays by base^seconds (seconds capped at
    30 days), floored at R / (Q^(1/4) - 1); the other is recomputed to keep the price ratio."""
    decay = base ** jnp.minimum(seconds, MAX_DECAY_SECONDS)
    fourth = jnp.maximum(jnp.sqrt(sqrt_q) - 1.0, _TINY)
    vb_up = jnp.maximum(vb * decay, rb / fourth)
    va_up = _dependent_virtual(ra, rb, vb_up, sqrt_q)
    va_dn = jnp.maximum(va * decay, ra / fourth)
    vb_dn = _dependent_virtual(rb, ra, va_dn, sqrt_q)
    return jnp.where(above, va_up, va_dn), jnp.where(above, vb_up, vb_dn)


def z_coordinate(va, vb, market):
    """Z = sqrt(P) Va - Vb / sqrt(P): the thermostat's displacement coordinate (0 near the centre)."""
    sq = jnp.sqrt(market)
    return sq * va - vb / sq


def _vb_for_z(ra, rb, z, sqrt_q, market):
    """Vb with Z(Va(Vb), Vb) = z, Va from the price-ratio rule: a quadratic in Vb; the root above the
    reference's floor Rb / (sqrt Q - 1) + 1e-8 (absolute, as there) when there is one."""
    sq = jnp.sqrt(market)
    a = -(sqrt_q - 1.0) / sq
    b = sq * ra + rb / sq - (sqrt_q - 1.0) * z
    c = sq * ra * rb + z * rb
    root = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, _TINY))
    r1 = (-b + root) / (2.0 * a)
    r2 = (-b - root) / (2.0 * a)
    return jnp.where(r2 > rb / (sqrt_q - 1.0) + 1e-8, r2, r1)


def arc_length_update(ra, rb, va, vb, above, speed, seconds, sqrt_q, market):
    """Constant-arc-length thermostat: step Z by 2 speed sqrt(Ra + Va) seconds (up when above centre,
    down below), solve Vb for it, floor the decaying balance as the geometric update does."""
    fourth = jnp.maximum(jnp.sqrt(sqrt_q) - 1.0, _TINY)
    z = z_coordinate(va, vb, market)
    dz = 2.0 * speed * jnp.sqrt(jnp.maximum(ra + va, _TINY)) * jnp.minimum(seconds, MAX_DECAY_SECONDS)
    vb_up = jnp.maximum(_vb_for_z(ra, rb, z + dz, sqrt_q, market), rb / fourth)
    va_up = _dependent_virtual(ra, rb, vb_up, sqrt_q)
    vb_raw = _vb_for_z(ra, rb, z - dz, sqrt_q, market)
    va_raw = _dependent_virtual(ra, rb, vb_raw, sqrt_q)
    floor_a = ra / fourth
    floored = va_raw < floor_a
    va_dn = jnp.where(floored, floor_a, va_raw)
    vb_dn = jnp.where(floored, _dependent_virtual(rb, ra, va_dn, sqrt_q), vb_raw)
    return jnp.where(above, va_up, va_dn), jnp.where(above, vb_up, vb_dn)


def calibrated_arc_length_speed(ra, rb, va, vb, base, seconds, margin):
    """The arc-length speed whose first step equals the geometric thermostat's first step at onset: the
    state on the invariant of (Ra, Rb, Va, Vb), virtual balances unchanged, where the centredness (above
    centre) first equals the margin; speed = |Delta Z| / (2 sqrt(Ra + Va)) / seconds there."""
    big_l = invariant(ra, rb, va, vb)
    sqrt_q = jnp.sqrt(price_ratio(ra, rb, va, vb))
    # onset: Rb = m Ra Vb / Va on the invariant -> m Ra^2 + Va (1 + m) Ra + Va^2 - L Va / Vb = 0
    qa, qb, qc = margin, va * (1.0 + margin), va * va - big_l * va / jnp.maximum(vb, _TINY)
    ra_on = (-qb + jnp.sqrt(jnp.maximum(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)
    rb_on = margin * ra_on * vb / jnp.maximum(va, _TINY)
    p_on = (rb_on + vb) / jnp.maximum(ra_on + va, _TINY)
    _, above = centeredness(ra_on, rb_on, va, vb)
    va_geo, vb_geo = geometric_update(ra_on, rb_on, va, vb, above, base, seconds, sqrt_q)
    dz = z_coordinate(va_geo, vb_geo, p_on) - z_coordinate(va, vb, p_on)
    return jnp.abs(dz) / (2.0 * jnp.sqrt(jnp.maximum(ra_on + va, _TINY))) / seconds


def zero_fee_effective(ra, rb, va, vb, market):
    """Effective balances after a zero-fee arbitrage: (sqrt(L / P), sqrt(L P))."""
    big_l = invariant(ra, rb, va, vb)
    return jnp.sqrt(big_l / market), jnp.sqrt(big_l * market)


def edge_trades(ea, eb, ra, rb, prices, gamma):
    """Pool-side trades that drain A (first) or B (second) to DUST_VALUE of it, on the effective curve:
    out = max(R - dust, 0), in = E_in / gamma ((1 - out / E_out)^-1 - 1) (a zero out is no trade)."""
    out_a = jnp.maximum(ra - DUST_VALUE / prices[0], 0.0)
    out_b = jnp.maximum(rb - DUST_VALUE / prices[1], 0.0)
    in_b = (eb / gamma) * ((1.0 - out_a / ea) ** (-1.0) - 1.0)
    in_a = (ea / gamma) * ((1.0 - out_b / eb) ** (-1.0) - 1.0)
    drain_a = jnp.where(out_a != 0, jnp.stack([-out_a, in_b]), 0.0)
    drain_b = jnp.where(out_b != 0, jnp.stack([in_a, -out_b]), 0.0)
    return drain_a, drain_b


def fee_price_terms(prices, gamma):
    """The price-only factors of the two one-in / one-out candidates (A in B out, then B in A out), for
    `fee_trade`: per[s, i] = (w gamma^d_i / p_i)^(1 - w) and other[s, i] = (p_j / (gamma^d_j w))^w, j != i,
    w = 1/2, d_i = 1 for the token paid in. [..., 2, 2] each; vectorised over leading axes."""
    w = jnp.asarray(_HALF)
    p = prices[..., None, :]
    g = jnp.stack([jnp.stack([gamma, jnp.ones_like(gamma)], -1), jnp.stack([jnp.ones_like(gamma), gamma], -1)], -2)
    per = ((w * g) / p) ** (1.0 - w)
    quantity = (p / (g * w)) ** w
    return per, quantity[..., ::-1]


def fee_trade(e, prices, gamma, per, other, tolerance):
    """The arbitrageur's best trade on the effective balances e [2] with fee gamma (pool side).

    Candidate s: Delta_i = (1 / gamma^d_i) (k per[s, i] other[s, i] - e_i), k = prod e^w. It leaves the
    fee-adjusted invariant prod (e + gamma^[Delta > 0] Delta)^w exactly at k and quotes the market price at
    the edge of the fee band. Valid if e + Delta > 0 and the fee-adjusted invariant is >= (1 - tolerance) k;
    invalid candidates are zero; the one with the largest profit -Delta.p is taken (exact ties summed).
    tolerance = 0 is the reference's test, whose outcome for the right candidate is decided by rounding."""
    w = jnp.asarray(_HALF)
    k = jnp.prod(e**w)
    inv_g = jnp.stack([jnp.stack([1.0 / gamma, jnp.ones_like(gamma)]), jnp.stack([jnp.ones_like(gamma), 1.0 / gamma])])
    trades = inv_g * (((k * per) * other) - e)
    positive = jnp.sum(e + trades > 0, axis=-1) == 2
    adjusted = e + trades * gamma ** jnp.where(trades > 0, 1, 0)
    post = jnp.prod(adjusted**w, axis=-1)
    literal = post - jnp.prod(e**w) >= 0  # the reference's test, in its operation order
    valid = positive & jnp.where(tolerance > 0.0, post >= (1.0 - tolerance) * k, literal)
    trades = jnp.where(valid[:, None], trades, 0.0)
    profits = -(trades * prices).sum(-1)
    # "profit >= the other's" rather than the reference's "profit == max": the same selection, but a GPU build
    # that recomputes a profit with other rounding (FMA contraction) cannot select neither
    mask = jnp.where(profits >= profits[::-1], 1.0, 0.0)
    return mask @ trades
