"""protocol_fee_split in the G3M fee engine: against a plain-NumPy restatement of the reference's two paths
(quantamm_reserves.py: the scalar scan, where each executed arbitrage gives up its share at once and the noise
income is split too, and the dynamic-inputs scan, where the step's shares leave together at its end), and
its invariants (phi = 0 unchanged, value and LP fee income falling in phi, jit / vmap / grad in phi)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_g3m_fees import _close, _fee_series, _np_optimal_trade, _np_zero_fee_trade, _path

import quant_core  # noqa: F401  (float64)
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees

# ---- plain NumPy restatement -------------------------------------------------------------------------


def _np_arb(r, w, p, fees, gas, arb_fees, noise, tol, phi, at_once):
    """One arbitrage: (reserves, LPs' fee income, volume, protocol share not yet taken [n])."""
    gamma = 1.0 - fees
    delta = _np_optimal_trade(r, w, p, gamma, tol) if fees > 0 else _np_zero_fee_trade(r, w, p)
    if -(delta @ p) - gas < 0.5 * arb_fees * (np.abs(delta) @ p):
        return r, 0.0, 0.0, np.zeros_like(r)
    inbound = np.maximum(delta, 0.0)
    fee_rate = 1.0 - gamma
    after = r + delta
    # scalar path: the noise traders' fee rate is 1 - gamma_for_noise_trader_fees = (1 - gamma)(1 - phi)
    noise_rate = fee_rate * (1.0 - phi) if at_once else fee_rate
    noise_income = noise * noise_rate * (inbound @ p)
    if noise > 0:
        after = after * (1.0 + noise_income / (after @ p))
    protocol = inbound * fee_rate * phi
    lp_income = (1.0 - phi) * fee_rate * (inbound @ p) + noise_income
    volume = (np.abs(delta) @ p) * (1.0 + noise)
    if at_once:
        return after - protocol, lp_income, volume, np.zeros_like(r)
    return after, lp_income, volume, protocol


def _np_trade(r, w, p, trade, fees, phi):
    i_in, i_out, amount = int(trade[0]), int(trade[1]), trade[2]
    if amount == 0 or i_in == i_out:
        return r, 0.0, 0.0, np.zeros_like(r)
    gamma = 1.0 - fees
    out = r[i_out] * (1.0 - (1.0 / (1.0 + gamma * amount / r[i_in])) ** (w[i_in] / w[i_out]))
    delta = np.zeros_like(r)
    delta[i_in], delta[i_out] = amount, -out
    protocol = np.maximum(delta, 0.0) * (1.0 - gamma) * phi
    return r + delta, (1.0 - phi) * fees * amount * p[i_in], amount * p[i_in] + out * p[i_out], protocol


def np_split_path(prices, weights, r0, *, fees, phi, dynamic, gas=0.0, arb_fees=0.0, noise=0.0, tol=1e-9,
                  trades=None, do_arb=True):
    """dynamic=False: the reference's scalar scan (quantamm_reserves.py ~303-444); True: its dynamic-inputs
    scan (~547-730). fees, gas, arb_fees: scalars or [T]."""
    def at(x, t):
        return x[t] if np.ndim(x) else x

    r = np.array(r0, dtype=float)
    w_prev = weights[0]
    rows, income, volume = [], [], []
    for t in range(len(prices)):
        p, w, fee, g, af = prices[t], weights[t], at(fees, t), at(gas, t), at(arb_fees, t)
        none = (r, 0.0, 0.0, np.zeros_like(r))
        r, f1, v1, q1 = _np_arb(r, w_prev, p, fee, g, af, noise, tol, phi, not dynamic) if do_arb else none
        f2 = v2 = 0.0
        q2 = np.zeros_like(r)
        if trades is not None:
            r, f2, v2, q2 = _np_trade(r, w, p, trades[t], fee, phi)
        none = (r, 0.0, 0.0, np.zeros_like(r))
        r, f3, v3, q3 = _np_arb(r, w, p, fee, g, af, noise, tol, phi, not dynamic) if do_arb else none
        r = r - (q1 + q2 + q3)  # dynamic path: the step's protocol share leaves at its end (zero otherwise)
        rows.append(r)
        income.append(f1 + f2 + f3)
        volume.append(v1 + v2 + v3)
        w_prev = w
    return np.array(rows), np.array(income), np.array(volume)


def _agree(out, ref) -> tuple[float, float, float]:
    """Largest relative reserve difference; largest fee and volume differences relative to the pool value."""
    ref_r, ref_f, ref_v = ref
    pool = 1e6  # _path's pool value
    return (
        _close(out.reserves, ref_r),
        float(np.max(np.abs(np.asarray(out.fee_revenue) - ref_f))) / pool,
        float(np.max(np.abs(np.asarray(out.arb_volume) - ref_v))) / pool,
    )


# ---- tests -------------------------------------------------------------------------------------------


def test_scalar_path_matches_numpy_restatement():
    prices, weights, r0 = _path(600, seed=31, vol=2e-3)
    kw = dict(fees=0.003, gas_cost=2.0, arb_fees=1e-4, noise_trader_ratio=0.8)
    out = g3m_reserves_with_fees(prices, weights, r0, protocol_fee_split=0.3, **kw)
    ref = np_split_path(prices, weights, r0, fees=0.003, phi=0.3, dynamic=False, gas=2.0, arb_fees=1e-4, noise=0.8)
    assert max(_agree(out, ref)) < 1e-12
    executed = np.asarray(out.arb_volume) > 0
    assert 0.05 < executed.mean() < 0.95
    # the split moves the path: not the phi = 0 result
    plain = g3m_reserves_with_fees(prices, weights, r0, **kw)
    assert _close(out.reserves[-1], plain.reserves[-1]) > 1e-6


def test_dynamic_path_matches_numpy_restatement():
    """Per-minute fees (zero-fee minutes inside), gas and arb fees, explicit trades, noise."""
    prices, weights, r0 = _path(500, seed=11, vol=2e-3)
    t_len = len(prices)
    fees = _fee_series(t_len)
    gas = np.linspace(0.0, 20.0, t_len)
    arb_fees = np.where(np.arange(t_len) % 7 == 0, 0.0, 1e-4)
    trades = np.zeros((t_len, 3))
    trades[41] = [0, 2, 0.01 * r0[0]]  # in a zero-fee minute: nothing to split
    trades[200] = [2, 1, 0.02 * r0[2]]
    trades[300] = [1, 0, 0.03 * r0[1]]
    out = g3m_reserves_with_fees(prices, weights, r0, fees=fees, gas_cost=gas, arb_fees=arb_fees,
                                 noise_trader_ratio=0.5, trades=trades, protocol_fee_split=0.4)
    ref = np_split_path(prices, weights, r0, fees=fees, phi=0.4, dynamic=True, gas=gas, arb_fees=arb_fees,
                        noise=0.5, trades=trades)
    assert max(_agree(out, ref)) < 1e-12
    # the other path's rule gives a different result: the engine picked the dynamic one
    scalar_rule = np_split_path(prices, weights, r0, fees=fees, phi=0.4, dynamic=False, gas=gas,
                                arb_fees=arb_fees, noise=0.5, trades=trades)
    assert _close(out.reserves[-1], scalar_rule[0][-1]) > 1e-9


def test_any_per_minute_input_or_trades_selects_the_dynamic_path():
    """As the reference's forward pass: a gas_cost series alone (scalar fees) runs the dynamic-inputs scan;
    so do trades with scalar fees."""
    prices, weights, r0 = _path(300, seed=32, vol=2e-3)
    gas = np.full(len(prices), 1.0)
    out = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=gas, noise_trader_ratio=1.0,
                                 protocol_fee_split=0.5)
    ref = np_split_path(prices, weights, r0, fees=0.003, phi=0.5, dynamic=True, gas=gas, noise=1.0)
    assert max(_agree(out, ref)) < 1e-12
    scalar = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=1.0, noise_trader_ratio=1.0,
                                    protocol_fee_split=0.5)
    ref_scalar = np_split_path(prices, weights, r0, fees=0.003, phi=0.5, dynamic=False, gas=1.0, noise=1.0)
    assert max(_agree(scalar, ref_scalar)) < 1e-12
    trades = np.zeros((len(prices), 3))
    trades[100] = [0, 1, 0.02 * r0[0]]
    traded = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trades=trades, protocol_fee_split=0.5,
                                    do_arb=False)
    # no arbitrage: the trade, then phi * fees * amount in of the token paid in leaves the pool
    ref_t = np_split_path(prices, weights, r0, fees=0.003, phi=0.5, dynamic=True, trades=trades,
                          do_arb=False)
    assert _close(traded.reserves, ref_t[0]) < 1e-14
    paid_in = np.asarray(traded.reserves[100] - traded.reserves[99])[0]
    assert abs(paid_in - (1.0 - 0.5 * 0.003) * trades[100, 2]) < 1e-9 * trades[100, 2]


def test_zero_split_and_zero_fees_change_nothing():
    prices, weights, r0 = _path(300, seed=33)
    kw = dict(fees=0.003, gas_cost=1.0, noise_trader_ratio=0.5)
    base = g3m_reserves_with_fees(prices, weights, r0, **kw)
    for name in ("reserves", "fee_revenue", "arb_volume"):  # a Python 0 is dropped at trace time
        np.testing.assert_array_equal(getattr(g3m_reserves_with_fees(prices, weights, r0, protocol_fee_split=0.0,
                                                                     **kw), name), getattr(base, name))
    traced = jax.jit(lambda phi: g3m_reserves_with_fees(prices, weights, r0, protocol_fee_split=phi, **kw))(0.0)
    assert _close(traced.reserves, base.reserves) < 1e-14
    zero_fee = dict(fees=0.0, gas_cost=1.0)
    np.testing.assert_array_equal(
        g3m_reserves_with_fees(prices, weights, r0, protocol_fee_split=0.7, **zero_fee).reserves,
        g3m_reserves_with_fees(prices, weights, r0, **zero_fee).reserves,
    )


@pytest.mark.parametrize("dynamic", [False, True])
def test_value_and_lp_income_fall_with_split_vmap_and_grad(dynamic):
    prices, weights, r0 = _path(400, seed=34, vol=2e-3)
    gas = np.full(len(prices), 1.0) if dynamic else 1.0

    def run(phi):
        return g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=gas, noise_trader_ratio=0.5,
                                      protocol_fee_split=phi)

    phis = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0])
    many = jax.jit(jax.vmap(run))(phis)
    value = np.asarray(jnp.sum(many.reserves[:, -1] * prices[-1], axis=1))
    income = np.asarray(many.fee_revenue.sum(axis=1))
    assert np.all(np.diff(value) < 0) and np.all(np.diff(income) < 0)
    one = run(0.5)  # vmap (traced phi) against a single call (Python number)
    assert _close(many.reserves[2], one.reserves) < 1e-13
    assert abs(float(many.fee_revenue[2].sum() - one.fee_revenue.sum())) < 1e-12 * 1e6
    ref = np_split_path(prices, weights, r0, fees=0.003, phi=0.75, dynamic=dynamic, gas=gas, noise=0.5)
    assert _close(many.reserves[3], ref[0]) < 1e-12

    def final_value(phi):
        return jnp.sum(run(phi).reserves[-1] * prices[-1])

    g = float(jax.jit(jax.grad(final_value))(0.3))
    h = 1e-4
    fd = (float(final_value(0.3 + h)) - float(final_value(0.3 - h))) / (2 * h)
    assert g < 0 and abs(g - fd) < 1e-4 * abs(fd)


def test_rejects_bad_split():
    prices, weights, r0 = _path(10)
    with pytest.raises(ValueError, match="protocol_fee_split"):
        g3m_reserves_with_fees(prices, weights, r0, fees=0.003, protocol_fee_split=1.5)
    with pytest.raises(ValueError, match="protocol_fee_split"):
        g3m_reserves_with_fees(prices, weights, r0, fees=0.003, protocol_fee_split=np.array([0.1, 0.2]))
