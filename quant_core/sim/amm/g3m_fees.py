"""G3M (TFMM) reserves with swap fees, arbitrage costs, noise traders and explicit trades.

Why a separate engine: with fees the arbitrageur's best trade depends on the reserves it meets, so
the path is a sequential scan and cannot be summed in closed form like the zero-fee path (g3m.py).
Formulas and order of operations follow the reference simulator (quantammsim: quantamm_reserves.py,
optimal_n_pool_arb.py, noise_trades.py, G3M_trades.py, TFMM_base_pool.py; see
shared/docs/tfmm-reference-details.md sections 6-7); the code is our own.

Per step t (prices p_t, weights w_t, previous weights w_{t-1}, reserves R; step 0 uses w_{-1} = w_0):
  1. price arbitrage at the OLD weights: best trade against (R, w_{t-1}) at p_t;
  2. the explicit trade of step t, if any (a G3M swap at w_t, with the fee);
  3. weight arbitrage at the NEW weights: best trade against (R, w_t) at p_t (not with
     weight_arbitrage=False, see "One arbitrage per step").
An arbitrage is executed if -Delta.p - gas_cost >= arb_fees/2 * sum_i |Delta_i| p_i.

One arbitrage per step (weight_arbitrage=False; engines passes it for static-weight rules, `balancer`). The
reference's constant-weight BalancerPool does not share the TFMM scan: its scan step (balancer/balancer_reserves.py,
_jax_calc_balancer_reserves_with_fees_scan_function_using_precalcs, :114-182, and the dynamic-inputs twin :349-424)
makes ONE trade search per minute, parallelised_optimal_trade_sifter at its constant weights (:139 / :377; the same
pair candidates and invariant test as here), the zero-fee all-token trade where gamma == 1 (:153 / :391), the same
gas/arb_fees test (:163-169 / :401-407), and then, on the dynamic-inputs path only, the explicit trade (:416-417). So
stages 1-2 here, stage 3 dropped. It matters with fees: for n >= 3 a pair trade cannot reach the n-token optimum in
one step, and with constant weights the second search finds another profitable pair (8.6e-5 of the value after two
months of minutes, 3 tokens: the reference case balancer@fees0.003 of tests/sim/test_reference_outputs.py). The
BalancerPool has no noise traders and no protocol fee (balancer.py:138-170, 304-355 pass neither), and its
arb_frequency is the same subsampling of prices. (protocol_fee_split is already 0 for balancer: settings.
protocol_fee_applies. noise_trader_ratio is still honoured here if given, as an extension; the reference's balancer
ignores it.) The compiled program for weight_arbitrage=True is unchanged.

Best trade (arXiv 2402.06731). Candidates are the n(n-1) one-in/one-out signatures (token I into
the pool, J out). With gamma = 1 - fees, s = w_J/(w_I + w_J) and the log mispricing
    z = log(gamma) + log(w_I/(p_I R_I)) - log(w_J/(p_J R_J)),
the reference's closed form for a signature reduces to
    Delta_I = R_I expm1(s z)/gamma,   Delta_J = R_J expm1(-(1 - s) z):
the fee-adjusted pair (R_I + gamma Delta_I, R_J + Delta_J) keeps the invariant and quotes the
market price. A candidate is valid if all reserves stay positive and the post-trade invariant
prod_j (R_j + gamma^[Delta_j > 0] Delta_j)^{w_j} >= (1 - invariant_tolerance) x the pre-trade one
(in logs). Invalid candidates are zero trades; the one with the largest profit -Delta.p is taken,
and candidates with exactly equal profit are summed, as in the reference (exact ties only happen
when all candidates are invalid, i.e. no trade; otherwise they have probability zero). With fees == 0
exactly the reference, and this engine, use the all-token zero-fee trade instead,
R_i <- (w_i/p_i) prod_j (p_j R_j/w_j)^{w_j} (so fees -> 0+ does not converge to it for n >= 3:
pair trades cannot reach the n-token optimum in one step).

Invariant test. The optimal trade leaves the invariant exactly unchanged, so the reference's strict post >= pre is
decided by rounding and drops some profitable trades. invariant_tolerance=0.0 keeps that knife-edge test, evaluated
literally in logs (which trades it drops depends on rounding, so it matches the reference statistically, not trade for
trade); the default 1e-9 is the intended test. For z >= 0 the test passes. For z < 0 (the trade runs against its
signature) the invariant falls by ~ w_I w_J/(w_I + w_J) (1/gamma - gamma) |z|, so a tolerance also admits such
candidates when |z| is below ~ tol/(2 fees w_I w_J/(w_I + w_J)) ~ 1e-6, with a profit ~ s z^2 V/2 (~1e-12 of the
pool). That follows from the literal test, so we keep it; such trades happen when a pair sits just inside the band
after a trade. Their profit is a difference of two terms of size |z| V, so in the reference's linear-space formula its
sign is a matter of rounding, whereas here both legs come from the same z and the profit is exact to rounding. Rather
than two log1p per candidate and step, each candidate's threshold z* is solved once per step from the weights (cubic
Taylor expansion of the invariant change, exact to O(z*^4)). Per token pair only the direction with the larger z is a
candidate; the other has z <= log(gamma) and could pass only if invariant_tolerance were of the order of 2 fees^2 w_I
w_J/(w_I + w_J) (3e-7 at fees 0.003, equal weights); keep it well below that.

Noise traders (noise_trades.py, calculate_reserves_after_noise_trade, ~lines 16-111; applied after each arbitrage in
the scan functions of quantamm_reserves.py, "apply noise trade if noise_trader_ratio is greater than 0"): noise volume
of noise_trader_ratio times the arbitrage's pays the fee on its inbound leg; the income noise_trader_ratio * fees *
sum_i max(Delta_i, 0) p_i is added by scaling all reserves by 1 + income / (pool value after the arbitrage), so quoted
prices do not move. Only executed arbitrages bring noise income (no arbitrage, no noise).

Explicit trades (G3M_trades.py, _jax_calc_G3M_trade_from_exact_out_given_in; format from the docstring of
_jax_calc_quantAMM_reserves_with_dynamic_inputs): trades is a float array [T, 3], one row per minute: (index of the
token paid in, index of the token taken out, amount paid in, in token units). A row with amount 0, or with in == out
(which the reference mishandles), is no trade. The pool takes the whole amount and pays out R_out (1 - (1 + gamma
amount/R_in)^(-w_in/w_out)) at w_t; no validity test, as in the reference, and also with do_arb=False. With
arb_frequency f only the rows of the simulated minutes 0, f, 2f, ... are used, as the reference's per-step trades.

arb_frequency f: the engine runs on prices[::f], weights[::f]; each reserve row is repeated f times (cut to T).
fee_revenue and arb_volume of a simulated step are reported at its minute, zero in the repeated ones. fee_revenue[t] =
fees * sum_i p_i (inflows of the executed arbitrages and trade) + the noise income (with protocol_fee_split > 0 the
LPs' share only, see below); arb_volume[t] = sum_i |Delta_i| p_i over executed arbitrages, times 1 +
noise_trader_ratio, plus the explicit trade's two legs.

Dynamic inputs (the reference's calculate_reserves_with_dynamic_inputs, TFMM_base_pool.py:378-457, and
_jax_calc_quantAMM_reserves_with_dynamic_inputs, quantamm_reserves.py:742-928): fees, gas_cost and arb_fees may each
be a scalar or one value per minute [T]. Step t uses fees[t], gas_cost[t], arb_fees[t] for all three of its trades:
the price arbitrage at the old weights w_{t-1} too (the reference builds its lagged per-signature terms from the
lagged weights but the current gamma, quantamm_reserves.py:864-877, and scans gamma, arb_thresh, arb_fees as step t's
inputs, :540-542), the explicit trade and the weight arbitrage. A step whose fee is exactly 0 (1 - fees == 1 in
floating point) takes the zero-fee all-token trade and the others the pair trades, decided step by step
(fees_are_being_charged = gamma != 1.0, :546), so a zero inside a non-zero series switches that one minute to the
zero-fee trade. (Before the engine, the reference's loader of fee files treats every 0 as missing and overwrites it,
windowing_utils.py:265-272, so a zero from data never reaches this switch there; ours takes the series as given.) With
arb_frequency f the values of the simulated minutes 0, f, 2f, ... are used (the reference wants the series already cut
to one value per simulated step, (T - 1)//f of them, TFMM_base_pool.py:416-429). A constant series gives the scalar's
result to rounding (the scalar path keeps its own, faster, code). Minutes with fees == 0 compute their discarded
pair-trade terms from a stand-in gamma so that gradients stay finite.

Protocol fee split (phi = protocol_fee_split in [0, 1], f = fees, Delta an executed trade's pool-side
amounts, rho = noise_trader_ratio; quantamm_reserves.py:80-86 for the share, :303 and :363-370 / :430-437
for the scalar scan, :547, :630-646 and :722-730 for the dynamic-inputs scan). The protocol takes
phi f max(Delta_i, 0) of each token paid in, out of the reserves; the arbitrage's size and acceptance test
are computed as without it, a trade not executed takes nothing, and with f = 0 (also a zero-fee minute of
a series) it is 0. When it leaves depends on which of the reference's two scans the inputs select (its
forward pass takes the dynamic-inputs scan when any of fees, gas_cost, arb_fees is a per-minute series or
there are trades, forward_pass.py:1035-1038; so do we):
  - scalar inputs, no trades ("each"): after each executed arbitrage (price leg, then weight leg),
    R + Delta is scaled by the noise income, which is reduced to rho f (1 - phi) sum_i max(Delta_i, 0) p_i
    (the reference's gamma_for_noise_trader_fees), then phi f max(Delta, 0) is subtracted; the weight
    arbitrage meets the reserves after the price leg's deduction;
  - per-minute inputs or trades ("step"): the noise income keeps the full fee, rho f sum max(Delta, 0) p;
    the shares of the step's executed arbitrages and of its explicit trade (phi f x amount in, on the token
    paid in) are summed and subtracted once at the end of the step, so the trade and the weight arbitrage
    meet the reserves before any deduction.
fee_revenue reports what stays with the LPs: (1 - phi) f sum_i max(Delta_i, 0) p_i per executed trade plus the noise
income above (the reference's G3M scans report none; its reCLAMM one reports the LPs' share the same way,
reclamm_reserves.py:826-827). arb_volume is unchanged. A Python 0 for phi (the default) drops all of this at trace
time: the compiled program is the one without the option.

Speed of the scan. On XLA:CPU (jax 0.10) launching a kernel costs more than its arithmetic, and a sequence of more
than 8 kernels switches to a slower concurrent executor (which once computed a wrong result here). So everything that
depends only on (w, p) is computed before the scan; gathers and reductions over the few tokens are selects and adds
of slices, which fuse; each stage (find/execute the price arbitrage, the trade, the weight arbitrage) is the branch
of a `lax.cond` on an always-true, unbatched predicate (the scan counter), all inside one outer cond, so every
kernel sequence stays at 8 or fewer. Reverse-mode differentiation works (scan and cond only); under a derivative
the scan slices packed per-step rows instead of indexing the [T, k] inputs (`rows_as_xs` in _engine).

Quiet steps. Most arbitrages find nothing: every pair's log mispricing is inside the fee band. With a positive Python
fee, invariant_tolerance > 0 and no protocol fee, each arbitrage (find, then apply) is the branch of a cond on a cheap
test, the largest margin z - z* over the pairs (the validity test of the search, with a slack of QUIET_MARGIN); when
no candidate is near validity the step keeps its reserves and earns nothing, which is exactly what the search and
apply would give (no valid candidate: a zero trade). Under vmap the test is whether any member of the batch may trade,
unbatched (fused_ops._any_in_batch), so the cond still skips. A year of minutes, 3 tokens, 0.3 % fees: ~0.28 s on 2
cores, 0.38 s without the skip.

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

    # (stage, runs in a block of its own); see "Quiet steps" for which arbitrages may be skipped
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
    vmap and reverse-mode grad. See the module docstring for the order of operations and each option's exact meaning.
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
