"""Gyroscope E-CLP (elliptic concentrated liquidity pool) reserves under arbitrage: two tokens.

Formulas follow the E-CLP paper as the reference simulator implements it (quantammsim,
`pools/ECLP/gyroscope_reserves.py`, `gyroscope.py`); the code is our own.

Parameters: price range [alpha, beta] of token 0 priced in token 1 (token 1 is the numeraire side:
the caller orders the two tokens so), stretch lam >= 1, rotation angle phi in (0, pi/2) with
c = cos phi, s = sin phi (tan phi is the price at the ellipse's centre of symmetry; lam = 1 is a
circle, i.e. a plain concentrated-liquidity range).

    A = [[c/lam, -s/lam], [s, c]],   A^-1 = [[c lam, s], [-s lam, c]]
    tau(q) = (zeta, 1) / sqrt(1 + zeta^2),  zeta = lam (c q - s) / (c + s q)
    chi = ((A^-1 tau(beta))_0, (A^-1 tau(alpha))_1)
    invariant L(t) = (At.Achi + sqrt((At.Achi)^2 - (|Achi|^2 - 1)|At|^2)) / (|Achi|^2 - 1)
      (the discriminant is evaluated as |At|^2 - (At x Achi)^2, the same number without the cancellation)
    reserves at pool price q on the curve of invariant L:  t(q) = L (chi - A^-1 tau(q))
    pool (marginal) price at reserves t: t'' = A (t - L chi),  (t''_0/t''_1 A_00 + A_10) / (t''_0/t''_1 A_01 + A_11)

lam and phi may instead be solved from target value shares at the first price (`initial_weights`), as the
reference can: quant_core/sim/amm/gyroscope_fit.py.

Zero fees and perfect arbitrage keep L constant and put the pool at the market price, so the
reserves have a closed form: t_k = L_0 (chi - A^-1 tau(clip(P_k, alpha, beta))), P_k = p_k0 / p_k1.
At P <= alpha the pool holds only token 0, at P >= beta only token 1 (chi is built so that the
other coordinate is exactly zero there).

With costs (fees, gas_cost or arb_fees > 0; gamma = 1 - fees), per step (paper's Appendix A,
Remark 5, as the reference orders it): the pool's marginal price Q is compared with the fee band
[P gamma, P / gamma]; below it the arbitrageur buys token 0 until the pool quotes P gamma, above it
sells token 0 until P / gamma (the target price is clipped to [alpha, beta]); the curve trade at the
current L is computed and the incoming leg is divided by gamma (the fee stays in the pool, so L grows).
The trade is executed if  -trade.p - gas_cost >= arb_fees / 2 * sum |trade| p.

Where the reference looks wrong (`reference_quirks=True` reproduces it):
  * its fee path compares the band with R1 / R0 instead of the marginal price (it computes the
    marginal price and then overwrites it), so the fee can land on the outgoing token and the
    invariant can fall;
  * it does not clip the price to [alpha, beta]: a step to a price outside the range gives negative
    target reserves, and the step is then dropped (the reserves stay where they were) instead of
    moving the pool to the edge; the initial reserves at a first price outside the range are not valid;
  * its zero-fee path recomputes L from the reserves each step (the same up to rounding).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from quant_core.params import LOG, Param

GYROSCOPE_PARAMS: tuple[Param, ...] = (
    Param("alpha", 1e-12, 1e12, 0.9, log_scale=True, transform=LOG, scalar=True,
          description="lower end of the price range (token 0 priced in token 1, the numeraire side)"),
    Param("beta", 1e-12, 1e12, 1.1, log_scale=True, transform=LOG, scalar=True,
          description="upper end of the price range (token 0 priced in token 1); must exceed alpha"),
    # with initial_weights nothing reads lam and phi: they are solved from those weights (gyroscope_fit.py)
    Param("lam", 1.0, 1e8, 1.0, log_scale=True, transform=LOG, scalar=True, only_if="lam_phi_from_parameters",
          description="stretch of the ellipse (>= 1); larger concentrates liquidity around tan(phi)"),
    Param("phi", 1e-6, 1.5707963267948966 - 1e-6, 0.7853981633974483, scalar=True, unit="radians",
          only_if="lam_phi_from_parameters",
          description="rotation angle in radians, 0 < phi < pi/2; tan(phi) is the price at the ellipse's centre"),
)


class _Curve:
    """The E-CLP's constant matrices and vectors for one parameter set (traceable)."""

    def __init__(self, alpha, beta, lam, phi):
        f = jnp.float64
        self.alpha = jnp.asarray(alpha, f)
        self.beta = jnp.asarray(beta, f)
        self.lam = jnp.asarray(lam, f)
        phi = jnp.asarray(phi, f)
        self.c, self.s = jnp.cos(phi), jnp.sin(phi)
        c, s, lam = self.c, self.s, self.lam
        self.a = jnp.array([[c / lam, -s / lam], [s, c]])
        self.a_inv = jnp.array([[c * lam, s], [-s * lam, c]])
        self.chi = jnp.stack([(self.a_inv @ self.tau(self.beta))[0], (self.a_inv @ self.tau(self.alpha))[1]])

    def tau(self, q):
        ap = self.a @ jnp.stack([-jnp.ones_like(q), q])
        zeta = ap[1] / (-ap[0])
        return jnp.stack([zeta, jnp.ones_like(zeta)]) / jnp.sqrt(1.0 + zeta**2)

    def invariant(self, t):
        a_chi = self.a @ self.chi
        a_t = self.a @ t
        # The paper's discriminant (At.Achi)^2 - (|Achi|^2 - 1)|At|^2 cancels badly; by Lagrange's
        # identity it equals |At|^2 - (At x Achi)^2 (2-d cross product), which does not.
        dot = a_t @ a_chi
        wedge = a_t[0] * a_chi[1] - a_t[1] * a_chi[0]
        return (dot + jnp.sqrt(a_t @ a_t - wedge**2)) / (a_chi @ a_chi - 1.0)

    def reserves_at(self, invariant, q):
        return invariant * (self.chi - self.a_inv @ self.tau(q))

    def price(self, t, invariant):
        t2 = self.a @ (t - invariant * self.chi)
        ratio = t2[0] / t2[1]
        return (ratio * self.a[0, 0] + self.a[1, 0]) / (ratio * self.a[0, 1] + self.a[1, 1])


def gyroscope_invariant(reserves, *, alpha, beta, lam, phi) -> jax.Array:
    """The invariant L of reserves [2] (positive root of the paper's quadratic)."""
    return _Curve(alpha, beta, lam, phi).invariant(jnp.asarray(reserves, jnp.float64))


def gyroscope_price(reserves, *, alpha, beta, lam, phi) -> jax.Array:
    """The pool's marginal price of token 0 in token 1 at reserves [2]."""
    curve = _Curve(alpha, beta, lam, phi)
    t = jnp.asarray(reserves, jnp.float64)
    return curve.price(t, curve.invariant(t))


def gyroscope_initial_reserves(
    initial_value, first_prices, *, alpha, beta, lam, phi, reference_quirks: bool = False
) -> jax.Array:
    """Reserves [2] on the curve at the first price, worth `initial_value` in the numeraire
    (reference `initialise_gyroscope_reserves_given_value`: unit invariant, then rescale)."""
    curve = _Curve(alpha, beta, lam, phi)
    first_prices = jnp.asarray(first_prices, jnp.float64)
    q = first_prices[0] / first_prices[1]
    if not reference_quirks:
        q = jnp.clip(q, curve.alpha, curve.beta)
    unit = curve.reserves_at(1.0, q)
    return unit * (initial_value / (unit @ first_prices))


def _fee_step(curve, reserves, prices, gamma, gas_cost, arb_fees, reference_quirks):
    invariant = curve.invariant(reserves)
    if reference_quirks:
        quoted = reserves[1] / reserves[0]
    else:
        quoted = curve.price(reserves, invariant)
    market = prices[0] / prices[1]
    lower, upper = market * gamma, market / gamma
    below = quoted <= lower
    above = upper <= quoted
    target = jnp.where(below, lower, quoted)
    target = jnp.where(above, upper, target)
    if not reference_quirks:
        target = jnp.clip(target, curve.alpha, curve.beta)
    curve_trade = curve.reserves_at(invariant, target) - reserves
    trade = jnp.zeros(2)
    trade = jnp.where(below, curve_trade * jnp.stack([jnp.ones_like(gamma), 1.0 / gamma]), trade)
    trade = jnp.where(above, curve_trade * jnp.stack([1.0 / gamma, jnp.ones_like(gamma)]), trade)
    profit = -(trade @ prices) - gas_cost
    cost = 0.5 * arb_fees * (jnp.abs(trade) @ prices)
    new = jnp.where(profit >= cost, reserves + trade, reserves)
    if reference_quirks:
        return jnp.where((new[0] < 0) | (new[1] < 0), reserves, new)
    return jnp.maximum(new, 0.0)  # an exact edge can come out as -1e-17


def _zero_fee_step_reference(curve, reserves, prices):
    invariant = curve.invariant(reserves)
    new = curve.reserves_at(invariant, prices[0] / prices[1])
    return jnp.where((new[0] < 0) | (new[1] < 0), reserves, new)


def _is_static_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


def gyroscope_reserves(
    prices: jax.Array,
    initial_value=None,
    *,
    alpha,
    beta,
    lam,
    phi,
    fees=0.0,
    gas_cost=0.0,
    arb_fees=0.0,
    arb_frequency: int = 1,
    initial_reserves: jax.Array | None = None,
    reference_quirks: bool = False,
) -> jax.Array:
    """Reserves [T, 2] of a Gyroscope E-CLP pool under arbitrage.

    prices: [T, 2] in a common numeraire; alpha, beta are prices of token 0 in token 1.
    initial_value: pool value at prices[0] (the reserves start on the curve at that price), or give
        `initial_reserves` [2] instead.
    alpha, beta, lam, phi, fees, gas_cost, arb_fees: scalars (traceable, vmappable).
    arb_frequency, reference_quirks: static. Row t is the reserves after the arbitrage against
    prices[t] (row 0 is the start). With Python-number zero costs the closed form is used; traced
    costs go through the scan, where zero costs give the same numbers up to rounding.
    """
    prices = jnp.asarray(prices, jnp.float64)
    if prices.ndim != 2 or prices.shape[1] != 2:
        raise ValueError(f"gyroscope pools have exactly two tokens; prices has shape {prices.shape}")
    if int(arb_frequency) < 1:
        raise ValueError("arb_frequency must be >= 1")
    if initial_reserves is None:
        if initial_value is None:
            raise ValueError("give initial_value or initial_reserves")
        initial_reserves = gyroscope_initial_reserves(
            initial_value, prices[0], alpha=alpha, beta=beta, lam=lam, phi=phi, reference_quirks=reference_quirks
        )
    zero_costs = all(_is_static_zero(x) for x in (fees, gas_cost, arb_fees))
    return _gyroscope_reserves(
        prices, jnp.asarray(initial_reserves, jnp.float64),
        *(jnp.asarray(x, jnp.float64) for x in (alpha, beta, lam, phi, fees, gas_cost, arb_fees)),
        arb_frequency=int(arb_frequency), zero_costs=zero_costs, reference_quirks=bool(reference_quirks),
    )


@partial(jax.jit, static_argnames=("arb_frequency", "zero_costs", "reference_quirks"))
def _gyroscope_reserves(prices, start, alpha, beta, lam, phi, fees, gas_cost, arb_fees, *, arb_frequency,
                        zero_costs, reference_quirks):
    curve = _Curve(alpha, beta, lam, phi)
    acted = prices[::arb_frequency]
    if zero_costs and not reference_quirks:
        invariant = curve.invariant(start)
        q = jnp.clip(acted[:, 0] / acted[:, 1], curve.alpha, curve.beta)
        reserves = jnp.maximum(jax.vmap(lambda x: curve.reserves_at(invariant, x))(q), 0.0)
    else:
        gamma = 1.0 - fees

        def step(r, p):
            if zero_costs:
                new = _zero_fee_step_reference(curve, r, p)
            else:
                new = _fee_step(curve, r, p, gamma, gas_cost, arb_fees, reference_quirks)
            return new, new

        _, reserves = jax.lax.scan(step, start, acted)
    if arb_frequency != 1:
        reserves = jnp.repeat(reserves, arb_frequency, axis=0)[: prices.shape[0]]
    return reserves
