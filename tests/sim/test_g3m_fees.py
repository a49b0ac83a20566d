"""G3M reserves with fees: against a plain-NumPy restatement of the reference's fee path, and invariants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quant_core  # noqa: F401  (float64)
from quant_core.sim.amm.g3m_fees import FeeReserves, g3m_reserves_with_fees

N_MIN = 2000


def _path(t_len: int = N_MIN, seed: int = 0, vol: float = 1.2e-3, n: int = 3, wiggle: float = 0.4):
    """Random-walk prices and slowly varying random weights (rows sum to 1), reserves in equilibrium."""
    rng = np.random.default_rng(seed)
    log_p = np.cumsum(rng.normal(0.0, vol, (t_len, n)), axis=0) + np.log(np.geomspace(1.0, 3e4, n))
    prices = np.exp(log_p)
    t = np.arange(t_len)[:, None]
    freq = rng.uniform(0.5, 2.0, (1, n)) * 2 * np.pi / t_len
    phase = rng.uniform(0, 2 * np.pi, (1, n))
    raw = np.exp(wiggle * np.sin(freq * t + phase))
    weights = raw / raw.sum(axis=1, keepdims=True)
    r0 = 1e6 * weights[0] / prices[0]
    return prices, weights, r0


# ---- plain NumPy restatement of the reference's fee path (tfmm-reference-details.md §6-7) ---------


def _np_optimal_trade(r, w, p, gamma, tol):
    """OPT: the best one-in/one-out trade as in §6, all n(n-1) signatures, tied trades summed.

    Delta_k = gamma^-d_k (K * per_asset_k * others_k - R_k) is evaluated as
    gamma^-d_k R_k expm1(log K + log per_asset_k + log others_k - log R_k): the same formula, but
    without the cancellation that makes the profit of near-zero trades (~1e-11 of the pool) a
    matter of rounding in linear space.
    """
    n = len(r)
    trades, profits = [], []
    for i_in in range(n):
        for j_out in range(n):
            if i_in == j_out:
                continue
            active = [i_in, j_out]
            d = {i_in: 1, j_out: 0}
            wt = {k: w[k] / (w[i_in] + w[j_out]) for k in active}
            log_k = sum(wt[k] * np.log(r[k]) for k in active)
            delta = np.zeros(n)
            for k in active:
                other = [m for m in active if m != k][0]
                log_per_asset = (1.0 - wt[k]) * (np.log(wt[k]) + d[k] * np.log(gamma) - np.log(p[k]))
                log_others = wt[other] * (np.log(p[other]) - d[other] * np.log(gamma) - np.log(wt[other]))
                delta[k] = gamma ** (-d[k]) * r[k] * np.expm1(log_k + log_per_asset + log_others - np.log(r[k]))
            ok = np.all(r + delta > 0)
            if ok:  # post-trade invariant (fee only on inflows) against the pre-trade one, in logs
                change = np.sum(w * np.log1p(delta * np.where(delta > 0, gamma, 1.0) / r))
                ok = change >= (np.log1p(-tol) if tol > 0 else 0.0)
            trade = delta if ok else np.zeros(n)
            trades.append(trade)
            profits.append(-trade @ p)
    profits = np.array(profits)
    return sum(t for t, pr in zip(trades, profits, strict=True) if pr == profits.max())


def _np_zero_fee_trade(r, w, p):
    value = r @ p
    quoted = value * w / r
    ratio = p / quoted
    return r * np.prod(ratio**w) / ratio - r


def _np_arb(r, w, p, fees, gas, arb_fees, noise, tol):
    gamma = 1.0 - fees
    delta = _np_optimal_trade(r, w, p, gamma, tol) if fees > 0 else _np_zero_fee_trade(r, w, p)
    flow = delta * p
    if -flow.sum() - gas < 0.5 * arb_fees * np.abs(flow).sum():
        return r, 0.0, 0.0
    after = r + delta
    income = fees * np.maximum(flow, 0.0).sum()
    if noise > 0:  # noise_trades.py: fee income on noise volume, added pro rata
        after = after * (1.0 + noise * income / (after @ p))
    return after, income * (1.0 + noise), np.abs(flow).sum() * (1.0 + noise)


def _np_trade(r, w, p, trade, fees):
    i_in, i_out, amount = int(trade[0]), int(trade[1]), trade[2]
    if amount == 0 or i_in == i_out:
        return r, 0.0, 0.0
    gamma = 1.0 - fees
    out = r[i_out] * (1.0 - (1.0 / (1.0 + gamma * amount / r[i_in])) ** (w[i_in] / w[i_out]))
    delta = np.zeros_like(r)
    delta[i_in], delta[i_out] = amount, -out
    return r + delta, fees * amount * p[i_in], amount * p[i_in] + out * p[i_out]


def np_fee_path(prices, weights, r0, *, fees, gas=0.0, arb_fees=0.0, noise=0.0, tol=1e-9, trades=None,
                mask=None):
    r = np.array(r0, dtype=float)
    w_prev = weights[0]
    rows, income, volume = [], [], []
    for t in range(len(prices)):
        p, w = prices[t], weights[t]
        if mask is not None and not mask[t]:  # closed: hold the reserves
            rows.append(r)
            income.append(0.0)
            volume.append(0.0)
            w_prev = w
            continue
        r, f1, v1 = _np_arb(r, w_prev, p, fees, gas, arb_fees, noise, tol)
        f2 = v2 = 0.0
        if trades is not None:
            r, f2, v2 = _np_trade(r, w, p, trades[t], fees)
        r, f3, v3 = _np_arb(r, w, p, fees, gas, arb_fees, noise, tol)
        rows.append(r)
        income.append(f1 + f2 + f3)
        volume.append(v1 + v2 + v3)
        w_prev = w
    return np.array(rows), np.array(income), np.array(volume)


def _close(a, b) -> float:
    """Largest relative difference."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.abs(a - b) / scale))


# ---- tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gas, arb_fees", [(0.0, 0.0), (5.0, 2e-4)])
def test_matches_numpy_restatement(gas, arb_fees):
    prices, weights, r0 = _path()
    out = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=gas, arb_fees=arb_fees)
    assert isinstance(out, FeeReserves)
    ref_r, ref_f, ref_v = np_fee_path(prices, weights, r0, fees=0.003, gas=gas, arb_fees=arb_fees)
    assert _close(out.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(out.fee_revenue) - ref_f)) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(out.arb_volume) - ref_v)) < 1e-12 * 1e6
    executed = np.asarray(out.arb_volume) > 0
    assert 0.05 < executed.mean() < 0.95  # the path exercises both trading and no-trade minutes
    np.testing.assert_array_equal(np.asarray(out.reserves[0]), r0)  # step 0 trades against itself


def test_traced_scalars_match_python_numbers():
    prices, weights, r0 = _path(600, seed=1)
    static = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=1.0, noise_trader_ratio=0.5)
    run = jax.jit(
        lambda f, g, nz: g3m_reserves_with_fees(prices, weights, r0, fees=f, gas_cost=g, noise_trader_ratio=nz)
    )
    traced = run(0.003, 1.0, 0.5)
    assert _close(traced.reserves, static.reserves) < 1e-13
    assert _close(traced.fee_revenue.sum(), static.fee_revenue.sum()) < 1e-12


def _np_zero_fee_closed_form(prices, weights, r0):
    """§5: R_t = R_{t-1} * [price move at old weights] * [weight change at new prices], as a cumprod."""
    price_ratio = prices[1:] / prices[:-1]
    w0, w1 = weights[:-1], weights[1:]
    price_part = np.prod(price_ratio**w0, axis=1, keepdims=True) / price_ratio
    weight_ratio = w1 / w0
    weight_part = weight_ratio / np.prod(weight_ratio**w1, axis=1, keepdims=True)
    return np.vstack([r0, r0 * np.cumprod(price_part * weight_part, axis=0)])


def test_zero_fees_equal_closed_form():
    prices, weights, r0 = _path(seed=2)
    closed = _np_zero_fee_closed_form(prices, weights, r0)
    out = g3m_reserves_with_fees(prices, weights, r0, fees=0.0)
    assert _close(out.reserves, closed) < 1e-9
    traced = jax.jit(lambda f: g3m_reserves_with_fees(prices, weights, r0, fees=f))(0.0)  # both branches
    assert _close(traced.reserves, closed) < 1e-9
    assert float(jnp.abs(out.fee_revenue).max()) == 0.0


def test_arbitrageur_is_paid_and_fees_only_help_lps():
    prices, weights, r0 = _path(seed=3)
    const_w = np.broadcast_to(weights[0], weights.shape)
    gas, arb_fees, tol = 2.0, 1e-4, 1e-9
    out = g3m_reserves_with_fees(prices, const_w, r0, fees=0.003, gas_cost=gas, arb_fees=arb_fees)
    r = np.asarray(out.reserves)
    vol = np.asarray(out.arb_volume)
    # arbitrage profit in minute t = value of the reserves before minus after, at p_t
    before = np.vstack([r0, r[:-1]])
    profit = np.sum((before - r) * prices, axis=1)
    traded = vol > 0
    assert traded.mean() > 0.05
    assert np.all(profit[traded] >= gas + 0.5 * arb_fees * vol[traded] - 1e-9 * 1e6)
    np.testing.assert_array_equal(r[~traded], before[~traded])
    # every minute (two arbitrages) the invariant falls by at most the tolerance, twice
    log_inv = np.log(np.vstack([r0, r])) @ weights[0]
    assert np.all(np.diff(log_inv) >= 2 * np.log1p(-tol) - 1e-15)
    # with constant weights the fee pool is worth at least the zero-fee pool, minute by minute
    zero = np.asarray(g3m_reserves_with_fees(prices, const_w, r0, fees=0.0).reserves)
    assert np.all(np.sum(r * prices, axis=1) >= np.sum(zero * prices, axis=1) * (1 - 1e-12))
    assert np.sum(r[-1] * prices[-1]) > np.sum(zero[-1] * prices[-1])


def _dropped_price_arbitrages(prices, weights, out, fees):
    """Minutes where the price arbitrage met a clearly profitable mispricing (z > 1e-9) but nothing traded."""
    r_prev = np.vstack([np.asarray(out.reserves[0]), np.asarray(out.reserves[:-1])])
    w_prev = np.vstack([weights[:1], weights[:-1]])
    u = np.log(w_prev) - np.log(prices) - np.log(r_prev)
    n = prices.shape[1]
    z = np.max([np.log1p(-fees) + u[:, i] - u[:, j] for i in range(n) for j in range(n) if i != j], axis=0)
    return int(np.sum((z > 1e-9) & (np.asarray(out.arb_volume) == 0))), int(np.sum(z > 1e-9))


def test_strict_invariant_check_drops_trades_tolerant_does_not():
    prices, weights, r0 = _path(8000, seed=4)
    strict = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, invariant_tolerance=0.0)
    tolerant = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, invariant_tolerance=1e-9)
    dropped_strict, chances = _dropped_price_arbitrages(prices, weights, strict, 0.003)
    dropped_tolerant, _ = _dropped_price_arbitrages(prices, weights, tolerant, 0.003)
    assert chances > 500
    assert dropped_strict > 0.01 * chances
    assert dropped_tolerant == 0
    v_strict = np.sum(np.asarray(strict.reserves[-1]) * prices[-1])
    v_tolerant = np.sum(np.asarray(tolerant.reserves[-1]) * prices[-1])
    assert v_strict != v_tolerant


def test_arb_frequency_is_subsampling_and_repeating():
    prices, weights, r0 = _path(1003, seed=5)
    f = 5
    out = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, arb_frequency=f)
    sub = g3m_reserves_with_fees(prices[::f], weights[::f], r0, fees=0.003)
    expected = np.repeat(np.asarray(sub.reserves), f, axis=0)[: len(prices)]
    np.testing.assert_array_equal(np.asarray(out.reserves), expected)
    fee = np.asarray(out.fee_revenue)
    np.testing.assert_array_equal(fee[::f], np.asarray(sub.fee_revenue))
    assert np.all(np.delete(fee, np.arange(0, len(fee), f)) == 0)
    assert out.reserves.shape == (len(prices), 3) and out.arb_volume.shape == (len(prices),)


def test_vmap_over_weights_equals_separate_calls():
    prices, _, _ = _path(800, seed=6)
    batch = np.stack([_path(800, seed=10 + k)[1] for k in range(4)])
    r0 = 1e6 * batch[:, 0] / prices[0]
    kw = dict(fees=0.003, gas_cost=1.0, noise_trader_ratio=0.5)
    run = jax.jit(jax.vmap(lambda w, r: g3m_reserves_with_fees(prices, w, r, **kw)))
    out = run(batch, r0)
    for k in range(len(batch)):
        one = g3m_reserves_with_fees(prices, batch[k], r0[k], **kw)
        assert _close(out.reserves[k], one.reserves) < 1e-13
        assert _close(out.fee_revenue[k].sum(), one.fee_revenue.sum()) < 1e-12


def test_noise_traders_add_fee_income():
    prices, weights, r0 = _path(1500, seed=7)
    base = g3m_reserves_with_fees(prices, weights, r0, fees=0.003)
    noisy = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, noise_trader_ratio=1.5)
    ref_r, ref_f, ref_v = np_fee_path(prices, weights, r0, fees=0.003, noise=1.5)
    assert _close(noisy.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(noisy.fee_revenue) - ref_f)) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(noisy.arb_volume) - ref_v)) < 1e-12 * 1e6
    assert float(noisy.fee_revenue.sum()) > 2.0 * float(base.fee_revenue.sum())
    value = lambda out: float(np.asarray(out.reserves[-1]) @ prices[-1])  # noqa: E731
    assert value(noisy) > value(base)
    # the first executed arbitrage: the reserves it leaves are scaled by 1 + ratio * fee income / value
    k = int(np.argmax(np.asarray(base.arb_volume) > 0))
    r_base, r_noisy = np.asarray(base.reserves[k]), np.asarray(noisy.reserves[k])
    income = float(base.fee_revenue[k])
    np.testing.assert_allclose(r_noisy / r_base, 1.0 + 1.5 * income / float(r_base @ prices[k]), rtol=1e-13)


def test_explicit_trades_are_applied():
    prices, weights, r0 = _path(400, seed=8)
    trades = np.zeros((len(prices), 3))
    trades[50] = [0, 2, 0.7 * r0[0] * 0.01]  # pay in 1% of token 0, take token 2
    trades[120] = [2, 1, 3.0 * r0[2] * 0.02]
    trades[200] = [1, 1, 5.0]  # in == out: no trade
    # without arbitrage only the trades move the reserves
    only = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trades=trades, do_arb=False)
    r = np.asarray(only.reserves)
    np.testing.assert_array_equal(r[:50], np.broadcast_to(r0, (50, 3)))
    exp50, fee50, vol50 = _np_trade(np.array(r0), weights[50], prices[50], trades[50], 0.003)
    assert _close(r[50], exp50) < 1e-14
    assert abs(float(only.fee_revenue[50]) - fee50) < 1e-9 and abs(float(only.arb_volume[50]) - vol50) < 1e-9
    np.testing.assert_array_equal(r[199], r[200])
    assert float(only.fee_revenue[200]) == 0.0
    # with arbitrage: the trade sits between the price and the weight arbitrage, as in the reference
    both = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trades=trades)
    ref_r, ref_f, ref_v = np_fee_path(prices, weights, r0, fees=0.003, trades=trades)
    assert _close(both.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(both.arb_volume) - ref_v)) < 1e-12 * 1e6


def test_reverse_mode_gradient_runs():
    prices, weights, r0 = _path(300, seed=9)

    def final_value(scale):
        w = weights * jnp.exp(scale * jnp.array([0.1, 0.0, -0.1]))
        w = w / w.sum(axis=1, keepdims=True)
        out = g3m_reserves_with_fees(prices, w, r0, fees=0.003)
        return jnp.sum(out.reserves[-1] * prices[-1])

    g = jax.grad(final_value)(0.0)
    assert np.isfinite(float(g))
    # through the skipped quiet arbitrages too, against central differences
    h = 1e-5
    fd = (float(final_value(0.3 + h)) - float(final_value(0.3 - h))) / (2 * h)
    assert abs(float(jax.grad(final_value)(0.3)) - fd) < 1e-6 * abs(fd)


def test_vmapped_reverse_mode_gradient_equals_single():
    """It did not while the scan body indexed closed-over [T, k] arrays (XLA miscompiled the batched reverse pass,
    0.3-20 % off); the differentiated path now slices packed per-step rows (g3m_fees, rows_as_xs)."""
    prices, weights, r0 = _path(300, seed=9)

    def final_value(scale):
        w = weights * jnp.exp(scale * jnp.array([0.1, 0.0, -0.1]))
        w = w / w.sum(axis=1, keepdims=True)
        return jnp.sum(g3m_reserves_with_fees(prices, w, r0, fees=0.003).reserves[-1] * prices[-1])

    single = float(jax.grad(final_value)(0.0))
    many = jax.jit(jax.vmap(jax.grad(final_value)))(jnp.array([0.0, 0.0]))
    assert abs(float(many[0]) - single) < 1e-9 * abs(single)


def test_quiet_arbitrages_are_skipped_without_changing_the_path():
    """A Python fee skips the arbitrages with no candidate near validity (see "Quiet steps"); a traced fee runs
    every search. Same path, single and vmapped (where members trade in different minutes)."""
    prices, weights, r0 = _path(3000, seed=41, vol=4e-4, wiggle=0.05)
    skipping = g3m_reserves_with_fees(prices, weights, r0, fees=0.003)
    searching = jax.jit(lambda f: g3m_reserves_with_fees(prices, weights, r0, fees=f))(0.003)
    traded = np.asarray(skipping.arb_volume) > 0
    assert 0.05 < traded.mean() < 0.7  # both kinds of minute occur
    assert _close(skipping.reserves, searching.reserves) < 1e-13
    np.testing.assert_array_equal(np.asarray(searching.arb_volume) > 0, traded)
    ref_r, _, _ = np_fee_path(prices, weights, r0, fees=0.003)
    assert _close(skipping.reserves, ref_r) < 1e-12
    batch = np.stack([weights, _path(3000, seed=42, vol=4e-4, wiggle=0.05)[1]])
    many = jax.jit(jax.vmap(lambda w: g3m_reserves_with_fees(prices, w, r0, fees=0.003)))(batch)
    assert _close(many.reserves[0], skipping.reserves) < 1e-13
    other = g3m_reserves_with_fees(prices, batch[1], r0, fees=0.003)
    assert _close(many.reserves[1], other.reserves) < 1e-13
    assert np.any((np.asarray(many.arb_volume[0]) > 0) != (np.asarray(many.arb_volume[1]) > 0))


def test_rejects_bad_arguments():
    prices, weights, r0 = _path(10)
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights, r0, fees=0.003, arb_frequency=0)
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights[:, :2], r0, fees=0.003)
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights, r0, fees=1.5)
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trades=np.zeros((10, 2)))


def test_trade_mask_closes_the_pool_between_windows(monkeypatch):
    """The hodling index pool's fee path: minutes outside the mask hold the reserves and earn
    nothing; when the pool reopens the drift since it closed is arbitraged at once. (The scan throughout: a mask
    keeps it, and the unmasked pass it is compared with bit for bit would otherwise run as the CPU's C loop.)"""
    monkeypatch.setenv("QUANT_NATIVE_FEES", "0")
    prices, weights, r0 = _path()
    mask = (np.arange(len(prices)) % 100) < 30
    out = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trade_mask=mask)
    ref_r, ref_f, _ = np_fee_path(prices, weights, r0, fees=0.003, mask=mask)
    assert _close(out.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(out.fee_revenue) - ref_f)) < 1e-12 * 1e6
    closed = np.flatnonzero(~mask[1:]) + 1
    np.testing.assert_array_equal(np.asarray(out.reserves)[closed], np.asarray(out.reserves)[closed - 1])
    assert np.all(np.asarray(out.fee_revenue)[~mask] == 0.0)
    everywhere = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, trade_mask=np.ones(len(prices), bool))
    plain = g3m_reserves_with_fees(prices, weights, r0, fees=0.003)
    np.testing.assert_array_equal(np.asarray(everywhere.reserves), np.asarray(plain.reserves))


# ---- dynamic inputs: per-minute fees, gas_cost and arb_fees ------------------------------------------


def np_fee_path_per_minute(prices, weights, r0, *, fees, gas=0.0, arb_fees=0.0, noise=0.0, tol=1e-9, trades=None):
    """The restatement above with minute t's fees / gas / arb_fees (scalar or [T]) for all of step t's trades."""
    def at(x, t):
        return x[t] if np.ndim(x) else x

    r = np.array(r0, dtype=float)
    w_prev = weights[0]
    rows, income, volume = [], [], []
    for t in range(len(prices)):
        p, w, fee = prices[t], weights[t], at(fees, t)
        r, f1, v1 = _np_arb(r, w_prev, p, fee, at(gas, t), at(arb_fees, t), noise, tol)
        f2 = v2 = 0.0
        if trades is not None:
            r, f2, v2 = _np_trade(r, w, p, trades[t], fee)
        r, f3, v3 = _np_arb(r, w, p, fee, at(gas, t), at(arb_fees, t), noise, tol)
        rows.append(r)
        income.append(f1 + f2 + f3)
        volume.append(v1 + v2 + v3)
        w_prev = w
    return np.array(rows), np.array(income), np.array(volume)


def _fee_series(t_len: int, seed: int = 0) -> np.ndarray:
    """Fees between 0.0005 and 0.01 that change every minute, with zero-fee minutes inside."""
    rng = np.random.default_rng(seed)
    fees = 0.0005 + 0.0095 * rng.uniform(size=t_len) ** 2
    fees[[40, 41, 42, 150, 151, 333]] = 0.0
    return fees


def test_per_minute_inputs_match_numpy_restatement():
    tol = 1e-9  # (the knife-edge test, tolerance 0, matches only statistically; see the module docstring)
    prices, weights, r0 = _path(500, seed=11, vol=2e-3)
    fees = _fee_series(len(prices))
    gas = np.linspace(0.0, 20.0, len(prices))
    arb_fees = np.where(np.arange(len(prices)) % 7 == 0, 0.0, 1e-4)
    trades = np.zeros((len(prices), 3))
    trades[41] = [0, 2, 0.01 * r0[0]]  # a trade in a zero-fee minute
    trades[200] = [2, 1, 0.02 * r0[2]]
    kw = dict(gas_cost=gas, arb_fees=arb_fees, noise_trader_ratio=0.5, trades=trades, invariant_tolerance=tol)
    out = g3m_reserves_with_fees(prices, weights, r0, fees=fees, **kw)
    ref_r, ref_f, ref_v = np_fee_path_per_minute(prices, weights, r0, fees=fees, gas=gas, arb_fees=arb_fees,
                                                 noise=0.5, tol=tol, trades=trades)
    assert _close(out.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(out.fee_revenue) - ref_f)) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(out.arb_volume) - ref_v)) < 1e-12 * 1e6
    vol = np.asarray(out.arb_volume)
    assert np.all(vol[[40, 42, 150, 151]] > 0)  # zero-fee minutes trade (the all-token trade) ...
    assert np.all(np.asarray(out.fee_revenue)[[40, 42, 150, 151]] == 0.0)  # ... and earn nothing
    # the fee of minute t, not t - 1, prices step t's price arbitrage: shifting the series changes the path
    shifted = g3m_reserves_with_fees(prices, weights, r0, fees=np.roll(fees, 1), **kw)
    assert _close(shifted.reserves, ref_r) > 1e-6


def test_constant_series_equal_scalars():
    prices, weights, r0 = _path(600, seed=12)
    t_len = len(prices)
    scalar = g3m_reserves_with_fees(prices, weights, r0, fees=0.003, gas_cost=2.0, arb_fees=1e-4)
    series = g3m_reserves_with_fees(prices, weights, r0, fees=np.full(t_len, 0.003), gas_cost=np.full(t_len, 2.0),
                                    arb_fees=np.full(t_len, 1e-4))
    assert _close(series.reserves, scalar.reserves) < 1e-12
    assert np.max(np.abs(np.asarray(series.fee_revenue) - np.asarray(scalar.fee_revenue))) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(series.arb_volume) - np.asarray(scalar.arb_volume))) < 1e-12 * 1e6


def test_per_minute_inputs_under_arb_frequency_and_vmap():
    prices, weights, r0 = _path(500, seed=11, vol=2e-3)
    fees = _fee_series(len(prices))  # zero-fee minutes included
    f = 4
    out = g3m_reserves_with_fees(prices, weights, r0, fees=fees, gas_cost=1.0, arb_frequency=f)
    sub = g3m_reserves_with_fees(prices[::f], weights[::f], r0, fees=fees[::f], gas_cost=1.0)
    np.testing.assert_array_equal(np.asarray(out.reserves), np.repeat(np.asarray(sub.reserves), f, 0)[: len(prices)])
    # vmap over fee series (on the subsampled path: the single calls reuse the compiled engine above)
    batch = np.stack([fees, 0.5 * fees, np.roll(fees, 3)])[:, ::f]
    many = jax.jit(jax.vmap(lambda fs: g3m_reserves_with_fees(prices[::f], weights[::f], r0, fees=fs, gas_cost=1.0)))(
        batch
    )
    for k in range(len(batch)):
        one = g3m_reserves_with_fees(prices[::f], weights[::f], r0, fees=batch[k], gas_cost=1.0)
        assert _close(many.reserves[k], one.reserves) < 1e-13
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights, r0, fees=fees[:-1])
    with pytest.raises(ValueError):
        g3m_reserves_with_fees(prices, weights, r0, fees=np.full(len(prices), 1.2))


def np_balancer_path(prices, w, r0, *, fees, gas=0.0, arb_fees=0.0, tol=1e-9, trades=None):
    """The reference's BalancerPool scan (balancer_reserves.py): at its constant weights one arbitrage per
    minute (minute t's fees / gas / arb_fees, scalar or [T]), then minute t's explicit trade; no noise traders."""
    def at(x, t):
        return x[t] if np.ndim(x) else x

    r = np.array(r0, dtype=float)
    rows, income, volume = [], [], []
    for t in range(len(prices)):
        p, fee = prices[t], at(fees, t)
        r, f1, v1 = _np_arb(r, w, p, fee, at(gas, t), at(arb_fees, t), 0.0, tol)
        f2 = v2 = 0.0
        if trades is not None:
            r, f2, v2 = _np_trade(r, w, p, trades[t], fee)
        rows.append(r)
        income.append(f1 + f2)
        volume.append(v1 + v2)
    return np.array(rows), np.array(income), np.array(volume)


def test_without_weight_arbitrage_one_arbitrage_per_step():
    """weight_arbitrage=False (the constant-weight balancer): the reference's one arbitrage per minute."""
    prices, weights, r0 = _path(600, seed=13, vol=2e-3)
    w = weights[0]
    const = np.broadcast_to(w, prices.shape)
    out = g3m_reserves_with_fees(prices, const, r0, fees=0.003, gas_cost=0.1, arb_fees=1e-4, weight_arbitrage=False)
    ref_r, ref_f, ref_v = np_balancer_path(prices, w, r0, fees=0.003, gas=0.1, arb_fees=1e-4)
    assert _close(out.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(out.fee_revenue) - ref_f)) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(out.arb_volume) - ref_v)) < 1e-12 * 1e6
    # with 3 tokens the default's second (weight) arbitrage trades even at constant weights: a pair trade
    # cannot reach the 3-token optimum in one step
    twice = g3m_reserves_with_fees(prices, const, r0, fees=0.003, gas_cost=0.1, arb_fees=1e-4)
    assert _close(twice.reserves, ref_r) > 1e-4
    # per-minute fees (zero-fee minutes included) with trades: the reference's dynamic-inputs scan, the trade
    # after the arbitrage
    fees = _fee_series(len(prices))
    trades = np.zeros((len(prices), 3))
    trades[41] = [0, 2, 0.01 * r0[0]]
    trades[200] = [2, 1, 0.02 * r0[2]]
    dyn = g3m_reserves_with_fees(prices, const, r0, fees=fees, gas_cost=1.0, trades=trades, weight_arbitrage=False)
    ref_r, ref_f, ref_v = np_balancer_path(prices, w, r0, fees=fees, gas=1.0, trades=trades)
    assert _close(dyn.reserves, ref_r) < 1e-12
    assert np.max(np.abs(np.asarray(dyn.fee_revenue) - ref_f)) < 1e-12 * 1e6
    assert np.max(np.abs(np.asarray(dyn.arb_volume) - ref_v)) < 1e-12 * 1e6


def test_the_differentiated_path_is_chosen_under_every_derivative():
    """Under a derivative the engine scans packed rows (linear-time reverse pass); otherwise it indexes in place."""
    from quant_core.sim.amm.fee_inputs import _differentiated

    seen = []

    def f(x):
        seen.append(_differentiated(x))
        return x * 2.0

    jax.grad(f)(1.0)
    jax.jacfwd(f)(1.0)
    jax.vmap(jax.grad(f))(jnp.ones(2))
    jax.grad(lambda x: jnp.sum(jax.vmap(f)(x)))(jnp.ones(2))
    assert seen == [True] * 4
    f(1.0)
    jax.jit(f)(1.0)
    jax.vmap(f)(jnp.ones(2))
    assert seen[4:] == [False] * 3
