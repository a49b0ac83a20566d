"""CoW AMM (FM-AMM, the function-maximising AMM) reserves under arbitrage: two tokens.

Formulas and order of operations follow the reference simulator (quantammsim,
`pools/FM_AMM/cow_reserves.py` and `cow_pool.py`); the code is our own.

Notation per step: prices p = (p0, p1) in the numeraire, P = p0 / p1 (token 0 priced in token 1),
reserves R = (R0, R1), weights (w, 1 - w), gamma = 1 - fees, k = R0 R1.

Two arbitrage models are run side by side over the whole path and blended at the end,
    reserves = arb_quality * perfect + (1 - arb_quality) * one_arb        (cow_pool.py)
so `arb_quality` is the share of the path that behaves as if the batch auction is competitive
(the pool keeps the arbitrage surplus) rather than served by a single monopolist arbitrageur
(who keeps the surplus). The blend is of whole reserve paths, not per step.

* Perfect arbitrage (competitive batch auction). The pool's quoted price is
  Q = (R1 / R0) * w / (1 - w). The no-trade band is [P gamma (1 - arb_fees), P / (gamma (1 - arb_fees))].
  If Q <= the lower edge (or >= the upper edge) the batch clears at that edge price A and the pool
  rebalances to the weight-consistent holdings at A, keeping its value at A:
      V = R0 A + R1,  R0' = w V / A,  R1' = (1 - w) V,
  then the fee is added on the incoming token: R' += max(0, R' - R) (1 - gamma) / gamma.
  Inside the band nothing happens. `gas_cost` is not used on this path (as in the reference).
* One arbitrageur (FM-AMM paper, section 6, weighted as in the reference). With m = w (1 - w):
      case 1 (arbitrageur buys token 0): d0 = (1-w) R0 - sqrt(m k / (gamma P)),
                                         d1 = w R1 / gamma - sqrt(m k P / gamma)
      case 2 (arbitrageur sells token 0): d0 = (1-w) R0 / gamma - sqrt(m k / (gamma P)),
                                          d1 = w R1 - sqrt(m k P / gamma)
  the trade is -d (pool side) and the arbitrageur's profit d . p. It is executed when
  profit - gas_cost >= arb_fees / 2 * sum |trade| p.
  Case 1 is a real trade only when Q < gamma P, case 2 only when Q > P / gamma; in between the
  optimal trade is zero. The reference instead takes the case with the smaller profit even inside
  the band (both formulas are squares, so always "profitable"), which drains the pool by
  ~ w R1 p1 (1 - gamma^-1/2)^2 per step at constant prices; `reference_quirks=True` reproduces that
  (and its summing of both trades when they tie, which happens at fees = 0 with gas_cost or
  arb_fees > 0). The default picks the valid case and does nothing inside the band; with fees = 0
  both choices give the reference's zero-fee formula.
* noise_trader_ratio > 0 (reference `noise_trades.py`): after each arbitrage, the pool's reserves
  are scaled by 1 + ratio (1 - gamma) (value of the trade's inbound leg) / (pool value).
* arb_frequency = f: the engine runs on prices[::f] and each row is repeated f times (cut to T).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from quant_core.params import Param

COW_PARAMS: tuple[Param, ...] = (
    Param(
        "arb_quality", 0.0, 1.0, scalar=True, initial_key="arb_quality", trainable=False,
        description="share of the competitive-auction path (pool keeps the arbitrage surplus) blended with the "
        "single-arbitrageur path (arbitrageur keeps it); 1 = perfect competition",
    ),
)


def cow_initial_reserves(initial_value, first_prices, weights) -> jax.Array:
    """R_i = V w_i / p_i at the first price (the reference's initial reserves)."""
    weights = jnp.asarray(weights, dtype=jnp.float64)
    return initial_value * weights / jnp.asarray(first_prices, dtype=jnp.float64)


def _noise_scaled(reserves_after, trade, prices, gamma, noise_trader_ratio):
    inbound_value = jnp.sum(jnp.where(trade > 0, trade, 0.0) * prices)
    income = noise_trader_ratio * (1.0 - gamma) * inbound_value
    scaled = reserves_after * (1.0 + income / jnp.sum(reserves_after * prices))
    return jnp.where(noise_trader_ratio > 0, scaled, reserves_after)


def _perfect_arb_step(reserves, prices, w, gamma, arb_fees, noise_trader_ratio):
    quoted = reserves[1] / reserves[0] * (w / (1.0 - w))
    market = prices[0] / prices[1]
    lower = market * gamma * (1.0 - arb_fees)
    upper = market / gamma / (1.0 - arb_fees)
    below = quoted <= lower
    above = upper <= quoted
    align = jnp.where(below, lower, quoted)
    align = jnp.where(above, upper, align)
    value_in_1 = reserves[0] * align + reserves[1]
    new = jnp.stack([w * value_in_1 / align, (1.0 - w) * value_in_1])
    new = new + jnp.maximum(0.0, new - reserves) * (1.0 - gamma) / gamma
    new = _noise_scaled(new, new - reserves, prices, gamma, noise_trader_ratio)
    return jnp.where(below | above, new, reserves)


def _one_arb_step(reserves, prices, w, gamma, arb_thresh, arb_fees, noise_trader_ratio, reference_quirks):
    k = reserves[0] * reserves[1]
    market = prices[0] / prices[1]
    m = w * (1.0 - w)
    root0 = jnp.sqrt(m * k / (gamma * market))
    root1 = jnp.sqrt(m * k * market / gamma)
    d_case1 = jnp.stack([(1.0 - w) * reserves[0] - root0, w * reserves[1] / gamma - root1])
    d_case2 = jnp.stack([(1.0 - w) * reserves[0] / gamma - root0, w * reserves[1] - root1])
    trades = -jnp.stack([d_case1, d_case2])  # pool side, [case, token]
    profits = -(trades @ prices)
    if reference_quirks:
        profit = jnp.min(profits)
        mask = jnp.where(profits == profit, 1.0, 0.0)
        # gamma = 1: the two cases are the same trade, a tie the reference sums (doubling it), unless
        # all costs are zero, where it runs its separate zero-fee formula (one trade). Decided on gamma,
        # not on float equality, which XLA's fusion can break.
        no_costs = (arb_thresh == 0.0) & (arb_fees == 0.0)
        tie = jnp.where(no_costs, jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0]))
        mask = jnp.where(gamma == 1.0, tie, mask)
        trade = mask @ trades
    else:
        quoted = reserves[1] / reserves[0] * (w / (1.0 - w))
        buys0 = quoted < gamma * market
        sells0 = quoted > market / gamma
        trade = jnp.where(buys0, trades[0], jnp.where(sells0, trades[1], 0.0))
        profit = jnp.where(buys0, profits[0], jnp.where(sells0, profits[1], 0.0))
    new = _noise_scaled(reserves + trade, trade, prices, gamma, noise_trader_ratio)
    cost = 0.5 * arb_fees * jnp.sum(jnp.abs(trade) * prices)
    return jnp.where(profit - arb_thresh >= cost, new, reserves)


def cow_reserves(
    prices: jax.Array,
    initial_reserves: jax.Array,
    *,
    weights: jax.Array | None = None,
    fees=0.0,
    arb_quality=1.0,
    gas_cost=0.0,
    arb_fees=0.0,
    arb_frequency: int = 1,
    noise_trader_ratio=0.0,
    reference_quirks: bool = False,
) -> jax.Array:
    """Reserves [T, 2] of a two-token CoW AMM (FM-AMM) pool.

    prices: [T, 2] in a common numeraire, one row per arbitrage opportunity (row 0 is the start;
        the pool trades against it too, which is a no-op when the reserves are weight-consistent).
    initial_reserves: [2] (see `cow_initial_reserves`).
    weights: [2] value weights (default 0.5 / 0.5; only weights[0] / sum is used).
    fees, arb_quality, gas_cost, arb_fees, noise_trader_ratio: scalars (traceable; vmappable).
    arb_frequency, reference_quirks: static.
    Row t is the reserves after the arbitrage against prices[t]. All floats are float64.
    """
    prices = jnp.asarray(prices, dtype=jnp.float64)
    if prices.ndim != 2 or prices.shape[1] != 2:
        raise ValueError(f"cow pools have exactly two tokens; prices has shape {prices.shape}")
    if int(arb_frequency) < 1:
        raise ValueError("arb_frequency must be >= 1")
    if weights is None:
        weights = jnp.array([0.5, 0.5])
    return _cow_reserves(
        prices, jnp.asarray(initial_reserves, jnp.float64), jnp.asarray(weights, jnp.float64),
        *(jnp.asarray(x, jnp.float64) for x in (fees, arb_quality, gas_cost, arb_fees, noise_trader_ratio)),
        arb_frequency=int(arb_frequency), reference_quirks=bool(reference_quirks),
    )


@partial(jax.jit, static_argnames=("arb_frequency", "reference_quirks"))
def _cow_reserves(prices, start, weights, fees, arb_quality, gas_cost, arb_fees, noise, *, arb_frequency,
                  reference_quirks):
    w = weights[0] / jnp.sum(weights)
    gamma = 1.0 - fees

    def step(carry, p):
        perfect, single = carry
        perfect = _perfect_arb_step(perfect, p, w, gamma, arb_fees, noise)
        single = _one_arb_step(single, p, w, gamma, gas_cost, arb_fees, noise, reference_quirks)
        return (perfect, single), (perfect, single)

    _, (perfect_path, single_path) = jax.lax.scan(step, (start, start), prices[::arb_frequency])
    reserves = arb_quality * perfect_path + (1.0 - arb_quality) * single_path
    if arb_frequency != 1:
        reserves = jnp.repeat(reserves, arb_frequency, axis=0)[: prices.shape[0]]
    return reserves
