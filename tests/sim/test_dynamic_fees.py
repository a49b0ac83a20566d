"""The momentum dynamic-fee hook: against a plain-NumPy restatement of the reference's hook, its timing,
its parameters, and gradients through the fees into the fee engine's reserves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_g3m_fees import _close, _path, np_fee_path_per_minute

import quant_core  # noqa: F401  (float64)
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees
from quant_core.sim.dynamic_fees import (
    MOMENTUM_FEE_PARAMS,
    REFERENCE_CONSTANTS,
    MomentumFeeParams,
    chunk_fees_to_minutes,
    momentum_chunk_fees,
    momentum_dynamic_fees,
    momentum_fee_hook,
    reference_parameters,
    user_parameters,
)
from quant_core.sim.estimators import ewma_gradient, lamb_to_memory_days

CP = 60  # chunk period (minutes) of these tests


# ---- plain NumPy restatement of the reference's hook ------------------------------------------------


def _np_memory_days_to_lamb(days: float, cp: int) -> float:
    """The reference's closed form (param_utils.py:342-386)."""
    s = (1440.0 * days / (2.0 * cp)) ** 3 / 6.0
    c = np.cbrt(np.sqrt(3 * (27 * s**4 + 4 * s**3)) - 9 * s**2)
    return c / (np.cbrt(2) * 3 ** (2 / 3) * s) - np.cbrt(2 / 3) / c + 1.0


def np_reference_hook(prices, start_index, bout_length, cp, fee_logit, scaling, logit_lamb, max_memory_days):
    """MomentumDynamicFeeHook.calculate_dynamic_fees (its parameters as given) + the base hook's slicing."""
    max_fee = min(max(np.logaddexp(0.0, fee_logit), 0.0), 0.3)
    lamb = min(1.0 / (1.0 + np.exp(-logit_lamb)), _np_memory_days_to_lamb(max_memory_days, cp))
    x = prices[::cp]
    g_inf, b = 1.0 / (1.0 - lamb), lamb / (1.0 - lamb) ** 3
    ewma, a, grads = x[0], np.zeros(x.shape[1]), []
    for xc in x[1:]:  # the CPU scan (estimator_primitives.py:388-398); calc_gradients drops row 0
        ewma = ewma + (xc - ewma) / g_inf
        a = lamb * a + g_inf * (xc - ewma)
        a = np.where(np.abs(a) < 1e-10, 0.0, a)
        grads.append(a / (b * ewma))
    raw = max_fee / (1.0 + np.exp(-scaling * np.array(grads)))  # [chunks - 1, n]
    start_coarse, n_chunks = int(start_index / cp), int(bout_length / cp)
    assert start_coarse + n_chunks <= len(raw)  # (dynamic_slice would clamp the start)
    return np.repeat(raw[start_coarse:start_coarse + n_chunks, 0:1], cp, axis=0).squeeze(-1)


def _ours(prices, start, n_minutes, p: MomentumFeeParams, max_memory_days=365.0, **kw):
    max_fee, scaling, lamb = reference_parameters(p, CP, max_memory_days)
    return momentum_dynamic_fees(prices, max_fee, scaling, lamb, stride=CP, start_row=start, n_minutes=n_minutes,
                                 chunk_period=CP, **kw)


# ---- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, params, max_memory_days",
    [
        (5 * CP, MomentumFeeParams(-5.0, 30.0, 2.0), 365.0),
        (4 * CP + 17, MomentumFeeParams(0.3, -80.0, 1.0), 365.0),  # start inside a chunk, negative scaling
        (3 * CP, MomentumFeeParams(10.0, 1.0, 3.0), 1.0),  # the max-fee clip and the memory cap both active
    ],
)
def test_fees_match_numpy_restatement_of_reference(start, params, max_memory_days):
    prices, _, _ = _path(1200, seed=20, vol=1.5e-3)
    bout_length = 9 * CP + 1  # the reference's bout_length: T + 1 rows
    ref = np_reference_hook(prices, start, bout_length, CP, *params, max_memory_days)
    ours = np.asarray(_ours(prices, start, bout_length - 1, params, max_memory_days))
    assert ours.shape == ref.shape == (bout_length - 1,)
    assert _close(ours, ref) < 1e-12


def test_reference_constants_ignore_the_parameters():
    prices, _, _ = _path(900, seed=22)
    kw = dict(stride=CP, start_row=4 * CP, n_minutes=6 * CP, chunk_period=CP, max_memory_days=365.0)
    anything = {"momentum_fee_max": 0.01, "momentum_fee_scaling": 50.0, "momentum_fee_memory_days": 2.0}
    fees = momentum_fee_hook(prices, anything, reference_constants=True, **kw)
    ref = np_reference_hook(prices, 4 * CP, 6 * CP + 1, CP, *REFERENCE_CONSTANTS, 365.0)
    assert _close(fees, ref) < 1e-12
    assert 0.14 < float(fees.min()) and float(fees.max()) < 0.16  # the reference's constants: ~15% fees
    grad = jax.grad(lambda p: momentum_fee_hook(prices, p, reference_constants=True, **kw).sum())(anything)
    assert all(float(v) == 0.0 for v in grad.values())


def test_user_units_are_the_reference_parametrisation():
    prices, _, _ = _path(900, seed=23, vol=2e-3)
    raw = MomentumFeeParams(-4.0, 40.0, 1.5)
    by_name = {p.name: p for p in MOMENTUM_FEE_PARAMS}
    user = {
        "momentum_fee_max": by_name["momentum_fee_max"].from_unconstrained(raw.fee_logit, CP),
        "momentum_fee_scaling": jnp.full(3, raw.fee_scaling_factor),  # a pool-wide value broadcast per token
        "momentum_fee_memory_days": by_name["momentum_fee_memory_days"].from_unconstrained(raw.logit_lamb, CP),
    }
    kw = dict(stride=CP, start_row=4 * CP, n_minutes=6 * CP, chunk_period=CP, max_memory_days=365.0)
    fees = momentum_fee_hook(prices, user, **kw)
    assert _close(fees, _ours(prices, 4 * CP, 6 * CP, raw)) < 1e-12
    for name, value in zip(("momentum_fee_max", "momentum_fee_memory_days"), (raw.fee_logit, raw.logit_lamb),
                           strict=True):
        back = by_name[name].to_unconstrained(user[name], CP)
        assert abs(float(back) - value) < 1e-12
    assert all(p.scalar for p in MOMENTUM_FEE_PARAMS)
    max_fee, _, lamb = user_parameters({**user, "momentum_fee_max": 0.9, "momentum_fee_memory_days": 1e4}, CP, 5.0)
    assert float(max_fee) == 0.3 and abs(float(lamb_to_memory_days(lamb, CP)) - 5.0) < 1e-9  # clip and cap


def test_higher_fee_where_the_gradient_is_higher():
    t = np.arange(1500)
    trend = np.where(t < 750, 1e-3 * t, 0.75 - 1e-3 * (t - 750))  # token 0 rises, then falls
    prices = np.stack([100.0 * np.exp(trend + 0.002 * np.sin(t / 7.0)), np.full(1500, 3.0), 1.0 + 0.01 * np.cos(t)],
                      axis=1)
    chunk_prices = prices[::CP]
    max_fee, scaling, lamb = reference_parameters(MomentumFeeParams(-4.0, 20.0, 1.0), CP, 365.0)
    fees = np.asarray(momentum_chunk_fees(chunk_prices, max_fee, scaling, lamb))
    g = np.asarray(ewma_gradient(chunk_prices, lamb))
    order = np.argsort(g[1:, 0])
    assert np.all(np.diff(fees[1:, 0][order]) > 0)  # strictly increasing in the gradient
    rising, falling = fees[4:13, 0], fees[19:25, 0]  # (the estimator lags the turn by a few chunks)
    assert rising.min() > float(max_fee) / 2 > falling.max()
    minute = np.asarray(_ours(prices, 2 * CP, 20 * CP, MomentumFeeParams(-4.0, 20.0, 1.0)))
    assert minute[: 8 * CP].mean() > minute[-6 * CP:].mean()
    flat = np.asarray(_ours(prices, 2 * CP, 20 * CP, MomentumFeeParams(-4.0, 0.0, 1.0)))  # no scaling: constant
    np.testing.assert_array_equal(flat, np.full(20 * CP, float(max_fee) / 2))


def test_timing_reference_looks_ahead_causal_does_not():
    prices, _, _ = _path(900, seed=24, vol=2e-3)
    start, n_min, p = 4 * CP, 6 * CP, MomentumFeeParams(-4.0, 80.0, 1.0)
    ref, causal = (np.asarray(_ours(prices, start, n_min, p, timing=tm)) for tm in ("reference", "causal"))
    np.testing.assert_array_equal(causal[CP:], ref[:-CP])  # causal = the reference one chunk later
    # change only the prices from bout minute 2 CP on: fees charged before minute 2 CP must not move
    later = prices.copy()
    later[start + 2 * CP:] *= 1.05
    ref2, causal2 = (np.asarray(_ours(later, start, n_min, p, timing=tm)) for tm in ("reference", "causal"))
    np.testing.assert_array_equal(causal2[: 2 * CP], causal[: 2 * CP])
    assert causal2[2 * CP] != causal[2 * CP]  # from minute 2 CP on the fee knows that minute's price, as the weights
    assert np.all(ref2[CP:2 * CP] != ref[CP:2 * CP])  # the reference's chunk 1 fee knew minute 2 CP's price
    with pytest.raises(ValueError):
        chunk_fees_to_minutes(jnp.ones(5), start_chunk=3, n_minutes=3 * CP, chunk_period=CP)


@pytest.mark.slow
def test_per_minute_path_and_gradients_through_the_fees():
    """Hook -> fee engine against the NumPy chain; d(final value)/d(fee_logit, scaling, logit_lamb) against
    central differences, with zero-fee minutes inside the series.

    The final value jumps (by ~5e-8 of it here) wherever the arbitrageur's best pair switches: equal profit,
    different reserves afterwards. The steps below span no such point; steps of 1e-3 in fee_logit do."""
    start, n_min = 5 * CP, 8 * CP
    prices_all, weights_all, _ = _path(900, seed=21, vol=1.5e-3)
    prices, weights = prices_all[start:start + n_min], weights_all[start:start + n_min]
    r0 = 1e6 * weights[0] / prices[0]
    zero = np.zeros(n_min, bool)
    zero[[100, 101, 250]] = True

    def fees_of(fee_logit, scaling, logit_lamb):
        return jnp.where(zero, 0.0, _ours(prices_all, start, n_min, MomentumFeeParams(fee_logit, scaling, logit_lamb)))

    def value(fee_logit, scaling, logit_lamb):
        out = g3m_reserves_with_fees(prices, weights, r0, fees=fees_of(fee_logit, scaling, logit_lamb))
        return jnp.sum(out.reserves[-1] * prices[-1])

    x = (-5.0, 300.0, 2.0)
    fees = np.where(zero, 0.0, np_reference_hook(prices_all, start, n_min + 1, CP, *x, 365.0))
    out = g3m_reserves_with_fees(prices, weights, r0, fees=fees_of(*x))
    ref_r, ref_f, _ = np_fee_path_per_minute(prices, weights, r0, fees=fees)
    assert _close(out.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(out.fee_revenue) - ref_f)) < 1e-12 * 1e6

    v, grads = jax.value_and_grad(value, argnums=(0, 1, 2))(*x)
    assert abs(float(v) - float(ref_r[-1] @ prices[-1])) < 1e-12 * float(v)
    for i, h in enumerate((1e-4, 0.3, 1e-4)):
        up, down = list(x), list(x)
        up[i] += h
        down[i] -= h
        fd = float(value(*up) - value(*down)) / (2 * h)
        assert np.isfinite(float(grads[i])) and float(grads[i]) != 0.0
        assert abs(float(grads[i]) - fd) < 1e-4 * abs(fd)
