"""Reserve engines of the HODLing index pools: rebalance only inside the weight-interpolation window.

Both pools take the index_market_cap weights unchanged; they differ only in how the token amounts
follow them. Outside the window that opens at the start of every chunk the holdings are frozen.

- `hodling`: a G3M pool whose arbitrage is switched off outside the window.
- `trad_hodling`: an off-exchange (CEX) portfolio rebalanced inside the window only, paying a fee on
  what it sells, half the quoted spread on everything it trades, and a streaming (management) fee on
  every trading step.

Reference: QuantAMMProtocol/quantammsim. Line numbers are those of the stored versions
HIP = quantammsim/pools/G3M/quantamm/hodling_index_pool.py (029dd1d8) and
THIP = quantammsim/pools/G3M/quantamm/trad_hodling_index_pool.py (001d19d4); QR (quantamm_reserves.py)
and FP (core_simulator/forward_pass.py) as in docs/tfmm-reference-details.md.

Trading mask (HIP:465-474, 529-539; THIP:535-555). With T = bout_length - 1 minutes,
    mask[t] = (t mod chunk_period) < weight_interpolation_period,
on every minute of the bout, the first chunk included (no special case). weight_interpolation_period
defaults to chunk_period, so the mask is then all true (HIP:450-452, 513). With arb_frequency f the
pool only acts on every f-th minute and the mask is subsampled like the weights and prices:
mask_f[k] = mask[k f] (HIP:470-474, 534-537). `trading_mask` returns that subsampled mask; the
engines here take inputs already on the arb grid (prices[::f], weights[::f]) and the caller repeats
each output row f times (FP:1090-1096 in the reference), as for the ordinary pools.

hodling, zero fees (HIP:544-563). The ordinary per-minute G3M reserve ratio (price move at the old
weights, then weight move at the new prices, QR:29-76) from row t-1 to row t is kept when mask[t-1]
is true and replaced by 1 otherwise; both parts are masked together. mask[t-1] (the
`interpolation_mask[:-1]` of HIP:553) marks the transitions into minutes with t mod cp in
[1, wip], exactly the minutes in which the linear weight ramp moves.
Quirk: the price part of a masked-in minute is the one-minute move p_{t-1} -> p_t only, so the price
moves of a HODL stretch are never arbitraged: after the window reopens the pool's implied prices stay
off the market by the whole stretch's move, for the rest of the bout.

hodling, with fees (HIP:283, 404; what `g3m_fees.py` needs, not implemented here). The usual fee scan
(both arbitrages of each step) runs on every step, then the step's result is discarded when
mask[t] is false: R_t = R_{t-1}. The carried (weights, prices) still advance every step. Two
differences from the zero-fee path: (1) the step is gated by mask[t], not mask[t-1], so the last ramp
minute's weight move (t mod cp = wip) is not traded until the next chunk's minute 0, which arbitrages
both the pending weight move and the price moves; (2) the first step back in the window arbitrages
the actual reserves against the current price, so the HODL stretch's drift *is* arbitraged. At fees
-> 0 the fee path therefore does not tend to the zero-fee path.

trad_hodling (THIP:53-88, 92-225, 228-297, 535-571). A scan over the minutes; the carry holds the
previous weights (updated every minute, in or out of the window) and the previous token amounts R.
At a trading minute t, with tau = 1 - (1 - fees) and s = spread_t:
    V  = sum R p_t;  trade d1 = w_{t-1} V / p_t - R          (reset to the carried weights)
    V1 = V - cost(d1);  trade d2 = (w_t - w_{t-1}) V1 / p_t   (then to the new weights)
    V2 = V1 - cost(d2);  R_t = w_t V2 / p_t * (1 - per_step_fee)
with cost(d) = tau sum max(-d, 0) p_t + 1/2 sum s |d| p_t. Outside the window R_t = R_{t-1}.
per_step_fee = 1 - (1 - annual_streaming_fee)^(1 / steps_per_year) with annual_streaming_fee
defaulting to 0.04 and steps_per_year = wip * (525960 / cp) / arb_frequency (THIP:543-549;
525960 = minutes in 365.25 days). Quirks: the streaming fee is charged at minute 0 too (the mask is
true there), so even row 0 is below the initial value; the first trade of a window resets the
drifted basket to w_{t-1}, the carried weights, not to the weights it was last rebalanced to;
the two trades are charged separately (no netting). The zero-fee method is the same engine with
fees = 0: the spread and streaming fee still apply (THIP:582-592). In the reference arb_frequency != 1
fails (full-length weights and prices are scanned with the subsampled mask, THIP:553-571) although
steps_per_year divides by it; here the inputs are simply taken on the arb grid.

Every cost is proportional to the value the trade starts from, and after any trading minute the
holdings are exactly at that minute's weights. So the log value gained by the trade at minute t
depends only on the last trading minute s < t (whose weights and prices fix the drifted basket), and
the engine is vectorised: per trading minute one growth term, then a cumulative sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quant_core.sim.hooks import rebalancing_log_growth

MINUTES_PER_YEAR = 525960  # THIP:543 (365.25 days)
DEFAULT_ANNUAL_STREAMING_FEE = 0.04  # THIP:548


def trading_mask(n_minutes: int, chunk_period: int, interpolation_period, arb_frequency: int = 1) -> jax.Array:
    """Bool mask of the arb-grid steps at which the pool may trade, [ceil(n_minutes / arb_frequency)].

    Step k (minute k * arb_frequency of the bout) trades iff (k * arb_frequency) mod chunk_period <
    interpolation_period; for arb_frequency = 1 that is one entry per minute, [n_minutes].
    `interpolation_period` may be traced."""
    if int(arb_frequency) < 1:
        raise ValueError("arb_frequency must be >= 1")
    minutes = jnp.arange(0, int(n_minutes), int(arb_frequency))
    return minutes % int(chunk_period) < interpolation_period


def trading_steps_per_year(chunk_period, interpolation_period, arb_frequency=1):
    """The reference's count of trading steps a year: wip * (525960 / cp) / arb_frequency."""
    return interpolation_period * (MINUTES_PER_YEAR / chunk_period) / arb_frequency


def per_step_streaming_fee(annual_streaming_fee, steps_per_year):
    """1 - (1 - annual)^(1/steps), written as the reference writes it (THIP:549)."""
    return 1.0 - (1.0 - annual_streaming_fee) ** (1.0 / steps_per_year)


def hodling_g3m_log_reserves(
    log_prices: jax.Array, weights: jax.Array, initial_log_reserves: jax.Array, mask: jax.Array
) -> jax.Array:
    """Zero-fee log reserves [T, n] of the hodling G3M pool as the REFERENCE computes them (kept to
    compare with it and to document its quirk; `simulate` uses the corrected form, which arbitrages
    the drift of a hold when trading resumes, consistent with the fee path).

    log_prices, weights: [T, n] on the arb grid; initial_log_reserves: [n]; mask: [T] bool from
    `trading_mask`. The increment from row t-1 to row t is the ordinary per-minute one,
        sum_j w_{t-1,j} dlogp_j - dlogp_i  +  log(w_t,i / w_{t-1,i}) - sum_j w_t,j log(w_t,j / w_{t-1,j}),
    when mask[t-1] is true, and 0 otherwise (HIP:544-563)."""
    if log_prices.ndim != 2 or weights.shape != log_prices.shape or mask.shape != log_prices.shape[:1]:
        raise ValueError(f"need log_prices [T, n], weights [T, n], mask [T]; got {log_prices.shape}, "
                         f"{weights.shape}, {mask.shape}")
    delta = log_prices[1:] - log_prices[:-1]
    dlw = jnp.log(weights[1:]) - jnp.log(weights[:-1])
    price_part = jnp.sum(weights[:-1] * delta, axis=1, keepdims=True) - delta
    weight_part = dlw - jnp.sum(weights[1:] * dlw, axis=1, keepdims=True)
    incs = jnp.where(mask[:-1, None], price_part + weight_part, 0.0)
    return initial_log_reserves + jnp.concatenate(
        [jnp.zeros_like(initial_log_reserves)[None, :], jnp.cumsum(incs, axis=0)], axis=0
    )


def trad_hodling_reserves(
    prices: jax.Array,
    weights: jax.Array,
    initial_value,
    mask: jax.Array,
    *,
    fees,
    spread: jax.Array | None = None,
    annual_streaming_fee=DEFAULT_ANNUAL_STREAMING_FEE,
    steps_per_year,
) -> jax.Array:
    """Token amounts [T, n] of the trad_hodling CEX portfolio (the reference's `reserves`).

    prices, weights: [T, n] on the arb grid; initial_value: scalar (R_init = V0 w_0 / p_0);
    mask: [T] bool from `trading_mask`; fees: CEX fee rate on the value sold; spread: [T, n] quoted
    relative spreads (half of it is paid on |trade| x price) or None; annual_streaming_fee and
    steps_per_year give the per-trading-step fee (see `trading_steps_per_year`). All numbers may be
    traced; jit- and vmap-compatible.

    Each trading minute's two trades are costed by `hooks.rebalancing_log_growth` on a two-row input
    whose first price row is chosen so that the held basket (at the last trading minute's weights
    and prices, drifted to p_t) is worth 1 and sits exactly at the carried weights w_{t-1}."""
    if prices.ndim != 2 or weights.shape != prices.shape or mask.shape != prices.shape[:1]:
        raise ValueError(f"need prices [T, n], weights [T, n], mask [T]; got {prices.shape}, {weights.shape}, "
                         f"{mask.shape}")
    if spread is not None and spread.shape != prices.shape:
        raise ValueError(f"spread must be [T, n] = {prices.shape}, got {spread.shape}")
    n_steps = prices.shape[0]
    idx = jnp.arange(n_steps)
    last_le = jax.lax.cummax(jnp.where(mask, idx, -1))  # last trading minute <= t (-1: none yet)
    # The basket the trade at t starts from: the one left by the last trading minute before t, or
    # the initial one (w_0 V0 / p_0, i.e. "row 0 without a fee") when there was none.
    src = jnp.maximum(jnp.concatenate([jnp.zeros((1,), last_le.dtype), last_le[:-1]]), 0)
    w_prev = jnp.concatenate([weights[:1], weights[:-1]])  # the scan's carried weights
    # Per unit of the source value the basket holds w_s / p_s; priced at w_prev p_s / w_s it is worth 1
    # and sits at w_prev, so rebalancing_log_growth's "price move" is the drift from p_s to p_t.
    basis = w_prev * prices[src] / weights[src]
    pair_p = jnp.stack([basis, prices], axis=1)
    pair_w = jnp.stack([w_prev, weights], axis=1)
    tau = 1.0 - (1.0 - fees)  # THIP:570 passes gamma = 1 - fees, THIP:281 uses tau = 1 - gamma
    if spread is None:
        growth = jax.vmap(lambda p, w: rebalancing_log_growth(p, w, tau)[1])(pair_p, pair_w)
    else:
        pair_s = jnp.stack([spread, spread], axis=1)
        growth = jax.vmap(lambda p, w, s: rebalancing_log_growth(p, w, tau, s)[1])(pair_p, pair_w, pair_s)
    step_fee = per_step_streaming_fee(annual_streaming_fee, steps_per_year)
    log_value = jnp.cumsum(jnp.where(mask, growth + jnp.log1p(-step_fee), 0.0))
    held = jnp.maximum(last_le, 0)  # row whose basket is held at t (row 0 with log_value 0 if none yet)
    value = initial_value * jnp.exp(log_value[held])
    return weights[held] * value[:, None] / prices[held]
