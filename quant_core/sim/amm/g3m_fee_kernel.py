"""The G3M fee path as one GPU kernel: each thread holds one parameter set and loops over the minutes.

Why: on a GPU the scan of `g3m_fees._engine` launches a few dozen tiny kernels per minute (22 s for a year on
an H200, whatever the batch), so fee passes used to be placed on the CPU. Here the whole year is one Pallas
(Triton) kernel: parameter sets on the lane axis, the minutes in a loop inside it, the reserves in registers.

Scope (`applies`): the common training case, a positive static fee with a tolerant invariant test, static
gas_cost, arb_fees and noise_trader_ratio, no explicit trades, no trade mask, no protocol fee split, arbitrage
on. Anything else, or a derivative, keeps the scan. The order of operations and every formula are the scan's
(docs/g3m-fees.md: stages 1 and 3, "Best trade", "Invariant test", "Noise traders"); the thresholds
are the same function (`g3m_fee_steps._thresholds`). What differs is the layout: Triton tensors cannot be
sliced along a short token axis, so a token-indexed quantity is a tuple of per-token [B] vectors here, where the
scan keeps [..., n] arrays. tests/sim/test_g3m_fee_kernel.py runs this kernel in Pallas' interpret mode on the
CPU against the scan (to 1e-12 relative), so the kernel is checked where CI runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from quant_core.sim.amm.g3m_fee_steps import _pairs, _Static, _thresholds

BLOCK = 32  # parameter sets per program: one warp, one set per thread


class KernelCosts(NamedTuple):
    """The static scalars the kernel bakes in (Python floats)."""

    fees: float
    gas: float
    arb_fees: float
    noise: float


def in_scope(static: _Static, costs: KernelCosts | None) -> bool:
    """Whether a fee pass with these settings is one the kernel (and the CPU's compiled loop,
    g3m_fee_native) computes: a positive static fee with a tolerant invariant test, static costs, arbitrage on,
    no trades, no trade mask, no protocol fee split, no derivative."""
    return (
        costs is not None
        and static.fee_mode == "positive"
        and static.tolerance > 0.0
        and static.protocol == "none"
        and static.do_arb
        and not static.has_trades
        and not static.has_mask
        and not static.rows_as_xs
    )


def applies(static: _Static, costs: KernelCosts | None, on_gpu: bool) -> bool:
    """Whether a fee pass with these settings runs as the kernel (else the CPU loop or the scan)."""
    return on_gpu and in_scope(static, costs)


def on_gpu() -> bool:
    """Whether arrays made now land on a GPU: the default device (`jax.default_device` included) is one."""
    dev = jax.config.jax_default_device
    platform = jax.default_backend() if dev is None else (dev if isinstance(dev, str) else dev.platform)
    return platform in ("gpu", "cuda", "rocm")


def _weight_terms(w: tuple, static: _Static, gamma: float) -> tuple:
    """Per weight row: w, log w, and per pair the second token's share and both directions' thresholds."""
    first, second = _pairs(static.n)
    lw = tuple(jnp.log(x) for x in w)
    s, zf, zb = [], [], []
    for i, j in zip(first.tolist(), second.tolist(), strict=True):
        w_sum = w[i] + w[j]
        s_ij = w[j] / w_sum
        f, b = _thresholds(s_ij, w_sum, gamma, static.tolerance)
        s.append(s_ij)
        zf.append(f)
        zb.append(b)
    return w, lw, tuple(s), tuple(zf), tuple(zb)


def _sum(xs: list | tuple) -> jax.Array:
    """Left-to-right sum, as fused_ops._total."""
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return acc


def _arbitrage(r: tuple, lr: tuple, terms: tuple, p: tuple, lp: tuple, static: _Static, c: KernelCosts) -> tuple:
    """One arbitrage (find the best pair trade, then accept or not): new reserves, their logs, income, volume."""
    n = static.n
    first, second = _pairs(n)
    w, lw, s_fwd, z_fwd, z_bwd = terms
    gamma = np.float64(1.0 - c.fees)  # a typed constant: Triton lowers weak-typed constant math in f32
    inv_gamma, log_gamma = 1.0 / gamma, float(np.log(gamma))
    u = [(lw[k] - lp[k]) - lr[k] for k in range(n)]
    cands = []
    for m, (i, j) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        d = u[i] - u[j]
        fwd = d > 0.0
        z = log_gamma + jnp.abs(d)
        s = jnp.where(fwd, s_fwd[m], 1.0 - s_fwd[m])
        e_in = jnp.expm1(s * z)
        e_out = jnp.expm1(s * z - z)
        valid = z >= jnp.where(fwd, z_fwd[m], z_bwd[m])
        x_in = (jnp.where(fwd, r[i], r[j]) * inv_gamma) * e_in
        x_out = jnp.where(fwd, r[j], r[i]) * e_out
        profit = jnp.where(valid, -(jnp.where(fwd, p[i], p[j]) * x_in + jnp.where(fwd, p[j], p[i]) * x_out), 0.0)
        cands.append((jnp.where(fwd, x_in, x_out), jnp.where(fwd, x_out, x_in), profit, valid))
    # the valid candidate with the largest profit, exact ties summed (g3m_fee_steps._pair_choose)
    zero = jnp.zeros_like(r[0])
    by_first, by_second = [zero] * n, [zero] * n
    for m, (i, j) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        d1, d2, profit, take = cands[m]
        for other in cands:
            take = take & (profit >= other[2])
        by_first[i] = by_first[i] + jnp.where(take, d1, 0.0)
        by_second[j] = by_second[j] + jnp.where(take, d2, 0.0)
    delta = [by_first[k] + by_second[k] for k in range(n)]
    # acceptance, fee income, noise (g3m_fee_steps._arb_terms, protocol "none")
    flow = [delta[k] * p[k] for k in range(n)]
    abs_flow = _sum([jnp.abs(x) for x in flow])
    inflow = _sum([jnp.maximum(x, 0.0) for x in flow])
    profit = -_sum(flow)
    costs = not (c.gas == 0.0 and c.arb_fees == 0.0)
    accept = (profit - c.gas >= 0.5 * c.arb_fees * abs_flow) if costs else (profit >= 0.0)
    income = c.fees * inflow
    volume = abs_flow
    after = [r[k] + delta[k] for k in range(n)]
    if c.noise != 0.0:
        noise_income = c.noise * income
        value = _sum([after[k] * p[k] for k in range(n)])
        after = [after[k] + (after[k] * noise_income) / value for k in range(n)]
        income = income + noise_income
        volume = volume * (1.0 + c.noise)
    r = tuple(jnp.where(accept, after[k], r[k]) for k in range(n))
    lr = tuple(jnp.where(accept, jnp.log(after[k]), lr[k]) for k in range(n))
    return r, lr, jnp.where(accept, income, 0.0), jnp.where(accept, volume, 0.0)


def _kernel(p_ref, w_ref, r0_ref, r_out, f_out, v_out, *, static: _Static, c: KernelCosts, n_steps: int,
            shared_prices: bool):
    n = static.n
    gamma = np.float64(1.0 - c.fees)  # a typed constant: Triton lowers weak-typed constant math in f32

    def prices_at(t):
        return tuple(p_ref[t, k] if shared_prices else p_ref[t, k, :] for k in range(n))

    def weights_at(t):
        return tuple(w_ref[t, k, :] for k in range(n))

    def body(t, carry):
        r, lr, prev, p, w = carry
        # the next minute's rows are loaded first, for use in the next iteration: their memory latency then overlaps
        # this minute's arithmetic instead of stalling the loop (one warp per program has nothing else to run)
        later = jnp.minimum(t + 1, n_steps - 1)
        p_next, w_next = prices_at(later), weights_at(later)
        lp = tuple(jnp.log(x) for x in p)
        cur = _weight_terms(w, static, gamma)
        r, lr, f, v = _arbitrage(r, lr, prev, p, lp, static, c)  # at the old weights w_{t-1}
        if static.weight_arb:  # at the new weights w_t
            r, lr, f2, v2 = _arbitrage(r, lr, cur, p, lp, static, c)
            f, v = f2 + f, v2 + v
        for k in range(n):
            r_out[t, k, :] = r[k]
        f_out[t, :] = f
        v_out[t, :] = v
        return r, lr, cur, p_next, w_next

    r0 = tuple(r0_ref[k, :] for k in range(n))
    w0 = weights_at(0)
    init = (r0, tuple(jnp.log(x) for x in r0), _weight_terms(w0, static, gamma), prices_at(0), w0)
    jax.lax.fori_loop(0, n_steps, body, init)


@partial(jax.jit, static_argnames=("static", "costs", "interpret"))
def fee_path_sets(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
                  costs: KernelCosts, interpret: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reserves [S, T, n], fee revenue [S, T] and traded value [S, T] of S parameter sets.

    prices: [T, n] (shared by every set) or [S, T, n]; weights [S, T, n]; initial_reserves [S, n].
    interpret: run through Pallas' interpreter (any backend; how the CPU tests check the kernel).
    """
    n_sets, n_steps, n = weights.shape
    padded = -(-n_sets // BLOCK) * BLOCK
    pad = padded - n_sets

    def lanes_last(x: jax.Array) -> jax.Array:
        """[S, ...] -> [..., S_padded]: one parameter set per lane, the last set repeated into the padding."""
        x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
        return jnp.moveaxis(x, 0, -1)

    shared = prices.ndim == 2
    grid = (padded // BLOCK,)
    p_spec = (pl.BlockSpec((n_steps, n), lambda i: (0, 0)) if shared
              else pl.BlockSpec((n_steps, n, BLOCK), lambda i: (0, 0, i)))
    kernel = partial(_kernel, static=static, c=costs, n_steps=n_steps, shared_prices=shared)
    r, f, v = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((n_steps, n, padded), jnp.float64),
                   jax.ShapeDtypeStruct((n_steps, padded), jnp.float64),
                   jax.ShapeDtypeStruct((n_steps, padded), jnp.float64)),
        grid=grid,
        in_specs=[p_spec, pl.BlockSpec((n_steps, n, BLOCK), lambda i: (0, 0, i)),
                  pl.BlockSpec((n, BLOCK), lambda i: (0, i))],
        out_specs=(pl.BlockSpec((n_steps, n, BLOCK), lambda i: (0, 0, i)),
                   pl.BlockSpec((n_steps, BLOCK), lambda i: (0, i)),
                   pl.BlockSpec((n_steps, BLOCK), lambda i: (0, i))),
        interpret=interpret,
        compiler_params=None if interpret else _triton_params(),
        name="g3m_fee_path",
    )(prices if shared else lanes_last(prices), lanes_last(weights), lanes_last(initial_reserves))
    return (jnp.moveaxis(r, -1, 0)[:n_sets], jnp.moveaxis(f, -1, 0)[:n_sets], jnp.moveaxis(v, -1, 0)[:n_sets])


def _triton_params():
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=1, num_stages=1)


def all_sets_in_one_call(sets: Callable[[jax.Array, jax.Array, jax.Array], tuple]) -> Callable:
    """One parameter set's fee path from `sets(prices, weights [S, T, n], initial_reserves [S, n])`: a single
    pass calls it with S = 1, and under vmap every set goes to one call (custom_vmap; prices stay shared unless
    batched). Shared by this kernel and the CPU's compiled loop (g3m_fee_native)."""

    @jax.custom_batching.custom_vmap
    def one(prices, weights, initial_reserves):
        r, f, v = sets(prices, weights[None], initial_reserves[None])
        return r[0], f[0], v[0]

    @one.def_vmap
    def _batched(axis_size, in_batched, prices, weights, initial_reserves):
        _, w_b, r_b = in_batched
        weights = weights if w_b else jnp.broadcast_to(weights, (axis_size, *weights.shape))
        initial_reserves = (initial_reserves if r_b
                            else jnp.broadcast_to(initial_reserves, (axis_size, *initial_reserves.shape)))
        return sets(prices, weights, initial_reserves), (True, True, True)

    return one


def fee_path(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
             costs: KernelCosts, interpret: bool | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One parameter set's reserves [T, n], fee revenue [T], traded value [T]; under vmap, all sets in one kernel.
    interpret None: interpreted where JAX has no GPU backend (the tests), compiled for the GPU otherwise."""
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    sets = partial(fee_path_sets, static=static, costs=costs, interpret=interpret)
    return all_sets_in_one_call(sets)(prices, weights, initial_reserves)
