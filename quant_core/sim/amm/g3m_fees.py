"""G3M (TFMM) reserves with swap fees, arbitrage costs, noise traders and explicit trades.

Why a separate engine: with fees the arbitrageur's best trade depends on the reserves it meets, so the path is a
sequential scan and cannot be summed in closed form like the zero-fee path (g3m.py). Per step: the price arbitrage at
the old weights, the explicit trade, the weight arbitrage at the new weights. The formulas, the reference simulator's
order of operations (quantammsim, with file and line references) and where we differ from it on purpose are in
docs/g3m-fees.md, whose sections the code cites by name ("Best trade", "Invariant test", "Quiet steps", ...); the
code is our own.

Where it runs: in the common training case (g3m_fee_kernel.in_scope), a GPU runs the path as one Pallas kernel
(g3m_fee_kernel) and a CPU as a compiled C++ loop (g3m_fee_native), which with keep_every also writes only a data
step's rows; the scan runs everything else (and any derivative). This module owns the scan and the entry point;
per-step trade math: g3m_fee_steps; fusion-friendly helpers: fused_ops; inputs: fee_inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.sim.amm import g3m_fee_kernel, g3m_fee_native
from quant_core.sim.amm.data_steps import data_steps
from quant_core.sim.amm.fee_inputs import _differentiated, _per_step, _static_value
from quant_core.sim.amm.fused_ops import _any_in_batch, _block, _take
from quant_core.sim.amm.g3m_fee_steps import (
    _arb_execute,
    _arb_terms,
    _explicit_trade,
    _pair_candidates,
    _pair_choose,
    _pairs,
    _Static,
    _thresholds,
    _zero_fee_trade,
)

ArrayLike = Any  # jax.Array, np.ndarray or a Python number


class FeeReserves(NamedTuple):
    """Result of `g3m_reserves_with_fees`."""

    reserves: jax.Array  # [T, n] reserves after each minute's arbitrage
    fee_revenue: jax.Array | None  # [T] fees earned by the pool each minute, in price units (None: flows=False)
    arb_volume: jax.Array | None  # [T] traded value sum_i |Delta_i| p_i (arbitrage + noise + explicit trades)


@partial(jax.jit, static_argnames=("static",))
def _engine(
    prices: jax.Array,
    weights: jax.Array,
    initial_reserves: jax.Array,
    fees: jax.Array,
    gas: jax.Array,
    arb_fees: jax.Array,
    noise: jax.Array,
    trades: jax.Array | None,
    trade_mask: jax.Array | None,
    split: jax.Array | None,
    static: _Static,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = static.n
    first, second = _pairs(n)
    fee_series = fees.ndim == 1  # one fee per step (dynamic inputs); shapes are static under jit
    gamma = 1.0 - fees
    # pair-trade terms; a zero-fee step of a series takes the zero-fee trade and gets a stand-in gamma
    gamma_c = jnp.where(gamma == 1.0, 0.5, gamma) if fee_series else gamma
    inv_gamma = 1.0 / gamma_c
    log_gamma = jnp.log(gamma_c)
    # What depends only on (w, p) is computed here, vectorised over time, one array per quantity
    # (each block slices its rows; the slices fuse into its kernels).
    w1, w2 = _take(weights, first), _take(weights, second)
    w_sum = w1 + w2
    s_fwd = w2 / w_sum  # outgoing token's weight share when the pair's first token flows in
    arrays = {"lw": jnp.log(weights), "lp": jnp.log(prices), "p": prices, "w": weights, "s": s_fwd}
    if static.do_arb and static.tolerance > 0.0 and static.fee_mode != "zero" and fee_series:
        # the price arbitrage of step t meets w_{t-1} with step t's fee: thresholds from both
        arrays["zf"], arrays["zb"] = _thresholds(s_fwd, w_sum, gamma_c[:, None], static.tolerance)
        arrays["zfl"], arrays["zbl"] = _thresholds(_lag(s_fwd), _lag(w_sum), gamma_c[:, None], static.tolerance)
    elif static.do_arb and static.tolerance > 0.0 and static.fee_mode != "zero":
        arrays["zf"], arrays["zb"] = _thresholds(s_fwd, w_sum, gamma, static.tolerance)
    else:
        arrays["zf"] = arrays["zb"] = jnp.zeros((prices.shape[0], 0), prices.dtype)
    if static.has_trades:
        arrays["trade"] = trades
    if static.has_mask:
        arrays["open"] = trade_mask
    if fee_series:
        arrays.update(fee=fees, gam=gamma, gc=gamma_c, igc=inv_gamma, lgc=log_gamma)
    if gas.ndim == 1:
        arrays["gas"] = gas
    if arb_fees.ndim == 1:
        arrays["arbf"] = arb_fees
    lag_z = "zfl" in arrays
    # state = [R (n), fee income, volume, log R (n)] and, in protocol mode "step", the protocol's share of the
    # step so far (n); its first n + 2 entries are the output row
    lr_at = n + 2
    taken_at = 2 * n + 2
    step_mode = static.protocol == "step"

    # Where a derivative is taken (static.rows_as_xs) the scan hands each step its rows, packed in one [T, K] array
    # with step t - 1's rows of what the price arbitrage reads at the old weights ("<name>_prev"): indexing the
    # closed-over [T, k] arrays in the body instead makes the reverse pass accumulate a full [T, k] cotangent
    # every step, O(T^2) (20,000 minutes: 13 s for one gradient, 0.3 s packed). Without a derivative the body
    # indexes them, which fuses and runs the forward pass ~2.5x faster than slicing a packed row.
    lagged = ("w", "lw", "s", "zf", "zb")
    if static.rows_as_xs:
        per_step = {**arrays, **{f"{k}_prev": _lag(arrays[k]) for k in lagged}}
        packed_at, width = {}, 0
        for name, arr in per_step.items():
            packed_at[name] = (width, arr.shape[1:])
            width += int(np.prod(arr.shape[1:], dtype=int))
        xs = jnp.concatenate([arr.reshape(arr.shape[0], -1).astype(prices.dtype) for arr in per_step.values()], axis=1)

        def row(arrs: jax.Array, name: str, t: jax.Array, prev: bool = False) -> jax.Array:
            """Step t's row of a per-step input (step t - 1's, step 0's at t = 0, with prev), from the packed row."""
            start, shape = packed_at[f"{name}_prev" if prev else name]
            return arrs[start:start + int(np.prod(shape, dtype=int))].reshape(shape)
    else:
        xs = None

        def row(arrs: dict[str, jax.Array], name: str, t: jax.Array, prev: bool = False) -> jax.Array:
            """Step t's row of a per-step input (step t - 1's, step 0's at t = 0, with prev)."""
            return jax.lax.dynamic_index_in_dim(arrs[name], jnp.maximum(t - 1, 0) if prev else t, keepdims=False)

    def at(arrs: Any, name: str, scalar: jax.Array, t: jax.Array) -> jax.Array:
        """Step t's value of a per-step input, or the scalar."""
        return row(arrs, name, t) if name in arrays else scalar

    # Stages map (state, delta, t, arrays) -> (state, delta); each runs as its own kernel sequence.
    def find(old_weights: bool, state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
        w, lw, s, zf, zb = (row(arrs, k, t, prev=old_weights) for k in lagged)
        if old_weights and lag_z:
            zf, zb = row(arrs, "zfl", t), row(arrs, "zbl", t)
        p, lp = row(arrs, "p", t), row(arrs, "lp", t)
        r, lr = state[:n], state[lr_at:lr_at + n]
        a = lw - lp
        if static.fee_mode == "zero":
            return state, _zero_fee_trade(r, lr, a, w)
        g, ig, lg = at(arrs, "gc", gamma, t), at(arrs, "igc", inv_gamma, t), at(arrs, "lgc", log_gamma, t)
        cand = _pair_candidates(r, lr, a, w, p, s, zf, zb, g, ig, lg, static)
        delta = _pair_choose(cand, static)
        if static.fee_mode == "traced":
            delta = jnp.where(at(arrs, "gam", gamma, t) == 1.0, _zero_fee_trade(r, lr, a, w), delta)
        return state, delta

    def apply(first_in_step: bool, state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
        r, lr = state[:n], state[lr_at:lr_at + n]
        fee_t, gas_t, arb_t = at(arrs, "fee", fees, t), at(arrs, "gas", gas, t), at(arrs, "arbf", arb_fees, t)
        terms = _arb_terms(r, delta, row(arrs, "p", t), fee_t, gas_t, arb_t, noise, static, split)
        r, lr, f, v, taken = _arb_execute(r, lr, terms)
        return merge(first_in_step, state, r, lr, f, v, taken), delta

    def trade(first_in_step: bool, state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
        r, lr, f, v, taken = _explicit_trade(
            state[:n], row(arrs, "w", t), row(arrs, "p", t), row(arrs, "trade", t), at(arrs, "fee", fees, t),
            at(arrs, "gam", gamma, t), split if step_mode else None,
        )
        return merge(first_in_step, state, r, lr, f, v, taken), delta

    def merge(first_in_step: bool, state: jax.Array, r, lr, f, v, taken) -> jax.Array:
        """The state after a stage: its reserves, the step's income and volume so far (and protocol share)."""
        if not first_in_step:
            f, v = f + state[n], v + state[n + 1]
        parts = [r, f[None], v[None], lr]
        if step_mode:
            parts.append(taken if first_in_step else state[taken_at:] + taken)
        return jnp.concatenate(parts)

    def settle(fn, state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
        """The last stage of a step, then (mode "step") the step's protocol share leaves the reserves."""
        state, delta = fn(state, delta, t, arrs)
        r = state[:n] - state[taken_at:]
        return jnp.concatenate([r, state[n:lr_at], jnp.log(r), jnp.zeros(n, state.dtype)]), delta

    stages = []
    if static.do_arb:
        stages += [partial(find, True), partial(apply, True)]
    if static.has_trades:
        stages.append(partial(trade, not stages))
    if static.do_arb and static.weight_arb:
        stages += [partial(find, False), partial(apply, False)]
    if step_mode and stages:
        stages[-1] = partial(settle, stages[-1])

    def possible(old_weights: bool, state: jax.Array, t: jax.Array, arrs: dict) -> jax.Array:
        """Whether a pair candidate of this arbitrage may pass the invariant test (within QUIET_MARGIN)."""
        lw, zf, zb = (row(arrs, k, t, prev=old_weights) for k in ("lw", "zf", "zb"))
        u = (lw - row(arrs, "lp", t)) - state[lr_at:lr_at + n]
        d = _take(u, first) - _take(u, second)
        margin = jnp.max((log_gamma + jnp.abs(d)) - jnp.where(d > 0.0, zf, zb))
        return _any_in_batch(margin >= -QUIET_MARGIN)

    def unless_quiet(find_fn: partial, apply_fn: partial) -> Callable:
        """One arbitrage (find, then apply) run only if `possible`; else no trade: reserves kept, nothing earned."""
        old_weights, first_in_step = find_fn.args[0], apply_fn.args[0]

        def run(state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
            def full(state: jax.Array, delta: jax.Array) -> tuple:
                state, delta = _block(t >= 0, find_fn, state, delta, t, arrs)
                return _block(t >= 0, apply_fn, state, delta, t, arrs)

            def quiet(state: jax.Array, delta: jax.Array) -> tuple:
                return (state.at[n:n + 2].set(0.0) if first_in_step else state), delta

            return jax.lax.cond(possible(old_weights, state, t, arrs), full, quiet, state, delta)

        return run

    # (stage, runs in a block of its own); see docs/g3m-fees.md, "Quiet steps", for which arbitrages may be skipped
    units = [(fn, True) for fn in stages]
    if static.fee_mode == "positive" and static.tolerance > 0.0 and static.protocol == "none":
        units = []
        for fn in stages:
            if units and getattr(units[-1][0], "func", None) is find:
                units[-1] = (unless_quiet(units[-1][0], fn), False)
            else:
                units.append((fn, True))

    def run_stages(state: jax.Array, delta: jax.Array, t: jax.Array, arrs: dict) -> tuple:
        for fn, blocked in units:
            state, delta = _block(t >= 0, fn, state, delta, t, arrs) if blocked else fn(state, delta, t, arrs)
        return state, delta

    def step(carry: tuple[jax.Array, jax.Array], packed: jax.Array | None) -> tuple:
        t, state = carry
        rows = arrays if packed is None else packed
        if stages:
            traded, _ = _block(t >= 0, run_stages, state, jnp.zeros(n, state.dtype), t, rows)
            if static.has_mask:  # a closed minute: reserves held, nothing earned or traded
                held = state.at[n:n + 2].set(0.0)
                traded = jnp.where(row(rows, "open", t) > 0.0, traded, held)
            state = traded
        return (t + 1, state), state[:n + 2]

    zeros = jnp.zeros(2, prices.dtype)
    init_state = jnp.concatenate([initial_reserves, zeros, jnp.log(initial_reserves)])
    if step_mode:
        init_state = jnp.concatenate([init_state, jnp.zeros(n, prices.dtype)])
    _, out = jax.lax.scan(step, (jnp.int32(0), init_state), xs, length=prices.shape[0])
    return out[:, :n], out[:, n], out[:, n + 1]


QUIET_MARGIN = 1e-9  # log-mispricing slack: a step this close to a valid candidate takes the full search


def _lag(x: jax.Array) -> jax.Array:
    """Row t holds x[t - 1] (row 0 holds x[0])."""
    return jnp.concatenate([x[:1], x[:-1]], axis=0)


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
    trade_mask: ArrayLike | None = None,
    protocol_fee_split: ArrayLike = 0.0,
    weight_arbitrage: bool = True,
    keep_every: int = 1,
    flows: bool = True,
) -> FeeReserves:
    """Reserves, fee revenue and traded value of a G3M/TFMM pool under arbitrage with fees.

    prices [T, n] per-minute prices (row 0 = start); weights [T, n] per-minute weights (positive, rows sum to 1);
    initial_reserves [n]. fees, gas_cost, arb_fees, noise_trader_ratio: scalars, Python numbers or traced arrays (a
    Python 0.0 drops its term at trace time; fees == 0 selects the zero-fee trade, traced fees select it per value).
    fees, gas_cost and arb_fees may also be one value per minute [T] (minute t's value applies to all of step t's
    trades; see "Dynamic inputs"). trades: optional float array [T, 3] of (token-in index, token-out index, amount in)
    per minute, amount 0 for no trade. arb_frequency, invariant_tolerance and do_arb are static. trade_mask: optional
    bool [T]; where False the pool is closed that minute (no arbitrage, noise or trade; reserves held), as the hodling
    index pool between its weight updates. protocol_fee_split: the protocol's share phi in [0, 1] of every swap fee,
    taken out of the reserves (scalar, Python number or traced; a Python 0 drops it at trace time; no effect with fees
    0). weight_arbitrage (static): False drops the weight arbitrage (stage 3), so each step has one arbitrage, at
    w_{t-1}, as the reference's constant-weight BalancerPool (see "One arbitrage per step"). keep_every (static) k >
    1: the results per data step of k minutes (data_steps; (T - 1) % k == 0), which the CPU loop keeps without writing
    every minute. flows (static) False: fee_revenue and arb_volume None (not written by the loop). Works under jit,
    vmap and reverse-mode grad. docs/g3m-fees.md gives the order of operations and each option's exact meaning (its
    sections are the ones cited by name here).
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
    if int(keep_every) < 1 or (n_steps - 1) % int(keep_every):
        raise ValueError(f"keep_every ({keep_every}) must be >= 1 and divide T - 1 ({n_steps - 1})")
    if trades is not None:
        trades = jnp.asarray(trades, dtype=jnp.float64)
        if trades.shape != (n_steps, 3):
            raise ValueError(f"trades must be [T, 3] = {(n_steps, 3)}, got {trades.shape}")
        trades = trades[::f]
    if trade_mask is not None:
        trade_mask = jnp.asarray(trade_mask)
        if trade_mask.shape != (n_steps,):
            raise ValueError(f"trade_mask must be [T] = ({n_steps},), got {trade_mask.shape}")
        trade_mask = trade_mask[::f].astype(jnp.float64)
    fees = _per_step(fees, "fees", n_steps, f)
    gas_cost = _per_step(gas_cost, "gas_cost", n_steps, f)
    arb_fees = _per_step(arb_fees, "arb_fees", n_steps, f)
    fee_value = _static_value(fees)
    if fee_value is not None and not 0.0 <= fee_value < 1.0:
        raise ValueError("fees must be in [0, 1)")
    noise_value = _static_value(noise_trader_ratio)
    split_value = _static_value(protocol_fee_split)
    if split_value is not None and not 0.0 <= split_value <= 1.0:
        raise ValueError("protocol_fee_split must be in [0, 1]")
    if jnp.ndim(protocol_fee_split) != 0:
        raise ValueError(f"protocol_fee_split must be a scalar, got shape {jnp.shape(protocol_fee_split)}")
    # the reference's dynamic-inputs path (any per-minute input or trades) sums the step's protocol share
    # and takes it at the end of the step; its scalar path takes it after each arbitrage
    dynamic = trades is not None or any(jnp.ndim(x) == 1 for x in (fees, gas_cost, arb_fees))
    protocol = "none" if split_value == 0.0 or fee_value == 0.0 else ("step" if dynamic else "each")
    static = _Static(
        n=n,
        fee_mode="traced" if fee_value is None else ("zero" if fee_value == 0.0 else "positive"),
        noise=noise_value is None or noise_value != 0.0,
        costs=not (_static_value(gas_cost) == 0.0 and _static_value(arb_fees) == 0.0),
        tolerance=tol,
        do_arb=bool(do_arb),
        has_trades=trades is not None,
        has_mask=trade_mask is not None,
        protocol=protocol,
        weight_arb=bool(weight_arbitrage),
        rows_as_xs=any(_differentiated(x) for x in (prices, weights, initial_reserves, fees, gas_cost, arb_fees,
                                                     noise_trader_ratio, trades, protocol_fee_split)),
    )
    scalar = partial(jnp.asarray, dtype=jnp.float64)
    statics = [fee_value, _static_value(gas_cost), _static_value(arb_fees), noise_value]
    costs = None if None in statics else g3m_fee_kernel.KernelCosts(*statics)
    keep, loop = int(keep_every), g3m_fee_native.applies(static, costs)
    if loop and keep % f == 0:  # the loop keeps a data step's rows itself
        reserves, fee, vol = g3m_fee_native.fee_path(prices[::f], weights[::f], initial_reserves, static=static,
                                                     costs=costs, keep=keep // f, flows=flows)
    else:
        if g3m_fee_kernel.applies(static, costs, g3m_fee_kernel.on_gpu()):
            reserves, fee, vol = g3m_fee_kernel.fee_path(prices[::f], weights[::f], initial_reserves, static=static,
                                                         costs=costs)
        elif loop:
            reserves, fee, vol = g3m_fee_native.fee_path(prices[::f], weights[::f], initial_reserves, static=static,
                                                         costs=costs)
        else:
            reserves, fee, vol = _engine(prices[::f], weights[::f], initial_reserves, scalar(fees), scalar(gas_cost),
                                         scalar(arb_fees), scalar(noise_trader_ratio), trades, trade_mask,
                                         None if protocol == "none" else scalar(protocol_fee_split), static)
        if f != 1:
            reserves = jnp.repeat(reserves, f, axis=0)[:n_steps]
            fee = jnp.zeros((fee.shape[0], f), fee.dtype).at[:, 0].set(fee).reshape(-1)[:n_steps]
            vol = jnp.zeros((vol.shape[0], f), vol.dtype).at[:, 0].set(vol).reshape(-1)[:n_steps]
        reserves, fee, vol = data_steps(reserves, fee, vol, keep=keep)
    return FeeReserves(reserves, fee if flows else None, vol if flows else None)
