"""Reserve engines on the minute grid, and the weight schedule a pool's rule produces.

`minute_engine` dispatches on the pool's engine (G3M with fees, CoW, Gyroscope, the index variants, the
lvr__/rvr__ rebalancing portfolios); `weight_schedule` runs the rule's estimators on chunk prices and turns
their outputs into guarded, interpolated weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from quant_core.sim.amm.cow import cow_reserves
from quant_core.sim.amm.data_steps import data_steps
from quant_core.sim.amm.g3m import g3m_log_reserves_from_minute_weights
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees
from quant_core.sim.amm.gyroscope import gyroscope_reserves
from quant_core.sim.amm.gyroscope_fit import solve_lam_phi
from quant_core.sim.amm.hodling import trad_hodling_reserves, trading_mask, trading_steps_per_year
from quant_core.sim.amm.reclamm import reclamm_pool_reserves
from quant_core.sim.hooks import ensemble_mean, rebalancing_log_growth
from quant_core.sim.pool import BOUND_PARAMS, Pool
from quant_core.sim.settings import StaticSettings
from quant_core.sim.weights import WeightSchedule, chunk_weights


def minute_log_prices(log_prices: jax.Array, step_minutes: int) -> jax.Array:
    """Log prices at every minute from the first to the last data row, linear in between."""
    if step_minutes == 1:
        return log_prices
    frac = (jnp.arange(step_minutes, dtype=log_prices.dtype) / step_minutes)[None, :, None]
    inner = log_prices[:-1, None, :] + frac * (log_prices[1:] - log_prices[:-1])[:, None, :]
    return jnp.concatenate([inner.reshape(-1, log_prices.shape[1]), log_prices[-1:]], axis=0)


def rebalancing_values(v0, minute_prices, minute_weights, m: int) -> jax.Array:
    """The LVR benchmark at each data step: a zero-fee CEX portfolio rebalanced every minute to the weights."""
    return v0 * jnp.exp(jnp.cumsum(rebalancing_log_growth(minute_prices, minute_weights, 0.0)))[::m]


def _no_fees(prices: jax.Array) -> jax.Array:
    return jnp.zeros(prices.shape[0], dtype=prices.dtype)


def _rebalancer(spread_key: str | None):
    """lvr__ / rvr__: the weights held by a CEX portfolio rebalanced every minute (rvr__ also pays half the
    spread, aux[spread_key])."""
    def engine(st: StaticSettings, prices, weights, params, w0, v0, aux):
        spread = aux[spread_key] if spread_key else None
        values = v0 * jnp.exp(jnp.cumsum(rebalancing_log_growth(prices, weights, st.fees, spread)))
        return weights * values[:, None] / prices, jnp.zeros_like(values)

    return engine


def _cow(st: StaticSettings, prices, weights, params, w0, v0, aux):
    reserves = cow_reserves(prices, v0 * w0 / prices[0], weights=w0, fees=st.fees,
                            arb_quality=params["arb_quality"][0], gas_cost=st.gas_cost, arb_fees=st.arb_fees,
                            arb_frequency=st.arb_frequency, noise_trader_ratio=st.noise_trader_ratio)
    return reserves, _no_fees(prices)


def _gyroscope(st: StaticSettings, prices, weights, params, w0, v0, aux):
    return gyroscope_engine(st, prices, params, v0), _no_fees(prices)


def _reclamm(st: StaticSettings, prices, weights, params, w0, v0, aux):
    out = reclamm_pool_reserves(
        prices, v0, params, fees=st.fees, gas_cost=st.gas_cost, arb_fees=st.arb_fees,
        protocol_fee_split=st.protocol_fee_split, arb_frequency=st.arb_frequency,
        interpolation_method=st.reclamm_interpolation_method, arc_length_speed=st.reclamm_arc_length_speed,
        centeredness_scaling=st.reclamm_centeredness_scaling, use_shift_exponent=st.reclamm_use_shift_exponent,
        learn_arc_length_speed=st.reclamm_learn_arc_length_speed, learn_fees=st.reclamm_learn_fees,
        invariant_tolerance=st.invariant_tolerance, do_arb=st.do_arb)
    return out.reserves, out.fee_revenue


def _trad_hodling_engine(st: StaticSettings, prices, weights, params, w0, v0, aux):
    return _trad_hodling(st, prices, weights, v0, aux), _no_fees(prices)


def _g3m_with_fees(st: StaticSettings, prices, weights, w0, v0, aux, trade_mask=None, keep_every: int = 1,
                   flows: bool = True):
    out = g3m_reserves_with_fees(
        prices, weights, v0 * w0 / prices[0], fees=aux.get("dynamic_fees", st.fees), gas_cost=st.gas_cost,
        arb_fees=st.arb_fees, protocol_fee_split=st.protocol_fee_split,
        arb_frequency=st.arb_frequency, noise_trader_ratio=st.noise_trader_ratio,
        trades=aux["trades"] if st.do_trades else None,
        invariant_tolerance=st.invariant_tolerance, do_arb=st.do_arb, trade_mask=trade_mask,
        # the reference's BalancerPool arbitrages once per step (no weight arbitrage: its weights never move)
        weight_arbitrage=st.pool.rule.kind != "static_weights", keep_every=keep_every, flows=flows,
    )
    return out.reserves, out.fee_revenue


def fee_kernel_runs(st: StaticSettings) -> bool:
    """Whether this pass's only per-minute scan is the G3M fee path in the form the GPU kernel runs
    (g3m_fee_kernel.applies, there decided from the engine's own arguments): a static positive fee with a
    tolerant invariant test, arbitrage on, no explicit trades, no trade mask, no protocol fee split."""
    pool = st.pool
    return (pool.engine == "g3m" and pool.rebalancer is None and not pool.has("momentum_fee") and st.fees > 0
            and st.invariant_tolerance > 0 and st.do_arb and not st.do_trades and st.protocol_fee_split == 0)


def _g3m(st: StaticSettings, prices, weights, params, w0, v0, aux):
    if st.with_costs:
        return _g3m_with_fees(st, prices, weights, w0, v0, aux)
    # zero fees but a non-linear interpolation: the per-minute product, exact
    log_r = g3m_log_reserves_from_minute_weights(prices, weights, jnp.log(v0 * w0 / prices[0]))
    return jnp.exp(log_r), _no_fees(prices)


def _hodling(st: StaticSettings, prices, weights, params, w0, v0, aux):
    """Arbitraged only inside each chunk's interpolation window, frozen outside it."""
    mask = trading_mask(prices.shape[0], st.chunk_period, st.interpolation_period)
    if st.with_costs:  # the fee path closes the pool outside the same mask
        return _g3m_with_fees(st, prices, weights, w0, v0, aux, trade_mask=mask)
    # Zero fees: the reserves at minute t are the ordinary pool's at the last trading minute <= t. (The
    # reference's zero-fee path instead applies only the one-minute price move when trading resumes, so the
    # drift during a hold is never arbitraged; its fee path does arbitrage it, as here and in our fee path.)
    log_r = g3m_log_reserves_from_minute_weights(prices, weights, jnp.log(v0 * w0 / prices[0]))
    return jnp.exp(log_r[_last_trading_minute(mask)]), _no_fees(prices)


# the minute-grid engine of each pool (a rebalancing hook replaces the pool's own): one value per name,
# each (st, prices, weights, params, w0, v0, aux) -> (reserves [T, n], fee revenue [T])
MINUTE_ENGINES = {"lvr": _rebalancer(None), "rvr": _rebalancer("spread"), "cow": _cow, "gyroscope": _gyroscope,
                  "trad_hodling": _trad_hodling_engine, "hodling": _hodling, "g3m": _g3m, "reclamm": _reclamm}


def minute_engine(pool: Pool, st: StaticSettings, prices, weights, params, w0, v0, aux):
    """Reserves [T, n] and fee revenue [T] on the minute grid."""
    return MINUTE_ENGINES[pool.rebalancer or pool.engine](st, prices, weights, params, w0, v0, aux)


def step_engine(pool: Pool, st: StaticSettings, prices, weights, params, w0, v0, aux):
    """Reserves at each data step's first minute [S, n] and the fee revenue earned within each step [S]
    (data_steps) from minute prices and weights [T, n]. The G3M fee path keeps those rows itself (its fee revenue is
    None unless st.report asks for it): at 0.3 % fees over 270 days of daily data a vmapped batch of 32 sets no
    longer writes ~0.5 GB of minute rows, and over minute data a pass that is not a report writes only reserves."""
    if (pool.rebalancer or pool.engine) == "g3m" and st.with_costs:
        return _g3m_with_fees(st, prices, weights, w0, v0, aux, keep_every=st.step_minutes, flows=st.report)
    return data_steps(*minute_engine(pool, st, prices, weights, params, w0, v0, aux), keep=st.step_minutes)


def _last_trading_minute(mask: jax.Array) -> jax.Array:
    """For every minute, the last minute <= it at which the pool traded (0 before the first)."""
    return jnp.maximum(jax.lax.cummax(jnp.where(mask, jnp.arange(mask.shape[0]), -1)), 0)


def _trad_hodling(st: StaticSettings, prices, weights, v0, aux):
    """The CEX index portfolio, rebalanced every arb_frequency minutes inside the windows."""
    f = st.arb_frequency
    spread = aux.get("spread")
    reserves = trad_hodling_reserves(
        prices[::f], weights[::f], v0, trading_mask(prices.shape[0], st.chunk_period, st.interpolation_period, f),
        fees=st.fees, spread=None if spread is None else spread[::f], annual_streaming_fee=st.annual_streaming_fee,
        steps_per_year=trading_steps_per_year(st.chunk_period, st.interpolation_period, f),
    )
    return jnp.repeat(reserves, f, axis=0)[: prices.shape[0]]


def gyroscope_engine(st: StaticSettings, prices, params, v0):
    """E-CLP reserves: its price range is quoted in the numeraire, which sits second (default: the
    last token alphabetically, as in the reference). With target weights (st.gyro_weights) lam and phi are
    solved at this run's first price, as the reference does at each window's (gyroscope_fit)."""
    flip = st.gyro_numeraire_first
    ordered = prices[:, ::-1] if flip else prices
    alpha, beta, lam, phi = (params[k][0] for k in ("alpha", "beta", "lam", "phi"))
    if st.gyro_weights is not None:
        target = st.gyro_weights[1] if flip else st.gyro_weights[0]  # the share of the token priced in the other
        lam, phi = solve_lam_phi(target, alpha, beta, ordered[0, 0] / ordered[0, 1])
    reserves = gyroscope_reserves(
        ordered, v0, alpha=alpha, beta=beta, lam=lam, phi=phi,
        fees=st.fees, gas_cost=st.gas_cost, arb_fees=st.arb_fees, arb_frequency=st.arb_frequency,
    )
    return reserves[:, ::-1] if flip else reserves


def weight_schedule(pool: Pool, st: StaticSettings, rows, params, w0, aux) -> WeightSchedule:
    """The rule's weights over the bout. Row c of `bout` is the reference's rule output for bout chunk c.

    Delta rules start at w0, hold it for the first chunk and ramp block c in chunk c+1. Target-weight
    rules follow the reference by default (st.target_weights_start == "first_target"): they start at
    the guardrailed first target, ignoring w0, and ramp block c in chunk c from minute 0, so the pool's
    initial reserves come from that target. For min_variance this timing has a one-chunk look-ahead:
    its bout row c includes the return into chunk c+1 (the reference's variances drop their first
    row, as its gradients do, but only delta rules get the compensating first-chunk hold), so the
    start weights, and the ramp during chunk c, know the price at the end of the chunk.
    "initial_weights" gives target rules the delta rules' start and timing instead: w0, a one-chunk hold,
    block c in chunk c+1; causal for min_variance, one chunk later than the reference."""
    if pool.rule.kind != "dynamic":
        return WeightSchedule.constant(w0, st.chunk_period)
    rule = pool.rule
    ctx = st.rule_context
    n_chunks = math.ceil(st.n_steps * st.step_minutes / st.chunk_period) + 1
    start_chunk = st.warmup_rows // st.stride
    last_row = rows.shape[0] - 1
    # chunk prices up to the one that informs the last bout chunk; never past the last row given (the
    # window's, or for a target rule one past it, `simulate.rows_past_end`)
    idx = jnp.minimum(jnp.arange(start_chunk + n_chunks + 1) * st.stride, last_row)
    chunk_prices = rows[idx]
    rule_params = {k: v for k, v in params.items() if k not in BOUND_PARAMS}
    rule_aux = {k: aux[k][idx] for k in rule.required_aux}

    def outputs(p):
        return rule.deltas(chunk_prices, p, ctx, rule_aux)

    ensemble = pool.has("ensemble")
    deltas = ensemble_mean(outputs, rule_params) if ensemble else outputs(rule_params)
    bout = deltas[start_chunk + 1 : start_chunk + 1 + n_chunks]
    blend = None
    if rule.outputs_weights:
        # an ensemble of target-weight rules blends the mean target with the members' mean lambda
        blend = (jnp.mean(jax.vmap(lambda p: rule.blend_lamb(p, ctx))(rule_params), axis=0) if ensemble
                 else rule.blend_lamb(rule_params, ctx))
    bounds = (params[BOUND_PARAMS[0]], params[BOUND_PARAMS[1]]) if pool.has("bounded") else None
    first_target = rule.outputs_weights and st.target_weights_start == "first_target"
    w_start, d = chunk_weights(
        w0, bout, minimum_weight=st.minimum_weight, maximum_change=st.maximum_change,
        interpolation_period=st.interpolation_period, blend=blend, bounds=bounds,
        ste_max_change=st.ste_max_change, ste_min_max_weight=st.ste_min_max_weight,
        start_at_first_target=first_target,
    )
    return WeightSchedule(w_start[0] if first_target else w0, w_start, d, st.chunk_period, st.interpolation_period,
                          st.interpolation_method, hold_first_chunk=not first_target)
