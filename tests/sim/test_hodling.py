"""HODLing index pool engines (quant_core/sim/amm/hodling.py) against plain NumPy restatements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.sim.amm.g3m import g3m_log_reserves_from_minute_weights
from quant_core.sim.amm.hodling import (
    hodling_g3m_log_reserves,
    per_step_streaming_fee,
    trad_hodling_reserves,
    trading_mask,
    trading_steps_per_year,
)
from quant_core.sim.hooks import rebalancing_log_growth


def _market(n_steps=120, n=3, seed=0):
    rng = np.random.default_rng(seed)
    prices = np.exp(np.cumsum(rng.normal(0, 0.01, (n_steps, n)), axis=0)) * np.linspace(1.0, 50.0, n)
    logits = np.cumsum(rng.normal(0, 0.05, (n_steps, n)), axis=0)
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    spread = rng.uniform(1e-4, 3e-3, (n_steps, n))
    return prices, weights, spread


def _g3m_loop(prices, weights, r0, mask):
    """Section 5's per-minute product, the ratio into row t applied only when mask[t-1]."""
    r = [np.array(r0, dtype=float)]
    for t in range(1, len(prices)):
        if not mask[t - 1]:
            r.append(r[-1].copy())
            continue
        rel = prices[t] / prices[t - 1]
        s = weights[t] / weights[t - 1]
        r.append(r[-1] * (np.prod(rel ** weights[t - 1]) / rel) * (s / np.prod(s ** weights[t])))
    return np.array(r)


def _trad_loop(prices, weights, v0, mask, tau, spread, step_fee):
    """The reference's CEX scan, step by step (carry: previous weights and token amounts)."""
    r = weights[0] * v0 / prices[0]
    w_prev = weights[0]
    out = []
    for t in range(len(prices)):
        p, w = prices[t], weights[t]
        if mask[t]:
            val = (r * p).sum()
            d1 = w_prev * val / p - r
            val -= tau * (np.maximum(-d1, 0) * p).sum() + 0.5 * (spread[t] * np.abs(d1) * p).sum()
            d2 = (w - w_prev) * val / p
            val -= tau * (np.maximum(-d2, 0) * p).sum() + 0.5 * (spread[t] * np.abs(d2) * p).sum()
            r = w * val / p * (1.0 - step_fee)
        w_prev = w
        out.append(r.copy())
    return np.array(out)


def test_trading_mask_small_cases():
    np.testing.assert_array_equal(trading_mask(10, 4, 2), [1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    # arb_frequency 3 acts on minutes 0, 3, 6, 9
    np.testing.assert_array_equal(trading_mask(10, 4, 2, arb_frequency=3), [1, 0, 0, 1])
    assert bool(jnp.all(trading_mask(50, 7, 7)))  # wip = cp (the reference's default): always trading
    for n_minutes, cp, wip, f in [(100, 10, 3, 1), (101, 10, 3, 4), (97, 6, 1, 5), (60, 60, 30, 7)]:
        full = (np.arange(n_minutes) % cp) < wip
        np.testing.assert_array_equal(trading_mask(n_minutes, cp, wip, f), full[::f])
    # a traced interpolation period
    np.testing.assert_array_equal(jax.jit(lambda w: trading_mask(10, 4, w))(3), [1, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    with pytest.raises(ValueError):
        trading_mask(10, 4, 2, arb_frequency=0)


def test_steps_per_year_and_fee():
    assert trading_steps_per_year(1440, 60) == 60 * 525960 / 1440
    assert trading_steps_per_year(1440, 60, 5) == 60 * 525960 / 1440 / 5
    steps = trading_steps_per_year(1440, 1440)
    fee = per_step_streaming_fee(0.04, steps)
    np.testing.assert_allclose((1.0 - fee) ** steps, 0.96, rtol=1e-9)


def test_hodling_all_true_is_the_ordinary_zero_fee_pool():
    prices, weights, _ = _market()
    r0 = 1000.0 * weights[0] / prices[0]
    mask = np.ones(len(prices), bool)
    got = np.exp(hodling_g3m_log_reserves(jnp.log(prices), jnp.asarray(weights), jnp.log(r0), jnp.asarray(mask)))
    np.testing.assert_allclose(got, _g3m_loop(prices, weights, r0, mask), rtol=1e-12)
    plain = g3m_log_reserves_from_minute_weights(prices, jnp.asarray(weights), jnp.log(r0))
    np.testing.assert_allclose(got, np.exp(plain), rtol=1e-13)


@pytest.mark.parametrize("cp,wip", [(10, 3), (7, 1), (12, 11)])
def test_hodling_masked_matches_loop_and_holds_outside_window(cp, wip):
    prices, weights, _ = _market(seed=cp)
    r0 = 1000.0 * weights[0] / prices[0]
    mask = np.asarray(trading_mask(len(prices), cp, wip))
    got = np.exp(np.asarray(hodling_g3m_log_reserves(jnp.log(prices), jnp.asarray(weights), jnp.log(r0),
                                                     jnp.asarray(mask))))
    np.testing.assert_allclose(got, _g3m_loop(prices, weights, r0, mask), rtol=1e-12)
    frozen = ~mask[:-1]  # transitions into rows t with mask[t-1] false
    assert frozen.any()
    np.testing.assert_array_equal(got[1:][frozen], got[:-1][frozen])
    assert np.all(np.abs(got[1:][~frozen] - got[:-1][~frozen]) > 0)


@pytest.mark.parametrize("cp,wip,first_off", [(10, 3, False), (6, 6, False), (9, 2, True)])
def test_trad_hodling_matches_reference_loop(cp, wip, first_off):
    prices, weights, spread = _market(seed=cp + wip)
    mask = np.asarray(trading_mask(len(prices), cp, wip))
    if first_off:  # a general mask (the reference's always trades at minute 0)
        mask = mask.copy()
        mask[:4] = False
    fees, annual, steps = 0.003, 0.3, 500.0
    got = trad_hodling_reserves(jnp.asarray(prices), jnp.asarray(weights), 1000.0, jnp.asarray(mask), fees=fees,
                                spread=jnp.asarray(spread), annual_streaming_fee=annual, steps_per_year=steps)
    want = _trad_loop(prices, weights, 1000.0, mask, 1.0 - (1.0 - fees), spread,
                      1.0 - (1.0 - annual) ** (1.0 / steps))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    frozen = ~mask[1:]
    np.testing.assert_array_equal(np.asarray(got)[1:][frozen], np.asarray(got)[:-1][frozen])


def test_trad_hodling_free_and_always_on_is_the_rebalancing_portfolio():
    prices, weights, _ = _market(seed=3)
    mask = jnp.ones(len(prices), bool)
    got = trad_hodling_reserves(jnp.asarray(prices), jnp.asarray(weights), 1000.0, mask, fees=0.0,
                                annual_streaming_fee=0.0, steps_per_year=1.0)
    growth = rebalancing_log_growth(jnp.asarray(prices), jnp.asarray(weights), 0.0)
    np.testing.assert_allclose(np.sum(np.asarray(got) * prices, axis=1), 1000.0 * np.exp(np.cumsum(growth)),
                               rtol=1e-12)
    # with costs too (every minute trading, the drifted basket is always at the previous weights)
    _, _, spread = _market(seed=3)
    got = trad_hodling_reserves(jnp.asarray(prices), jnp.asarray(weights), 1000.0, mask, fees=0.002,
                                spread=jnp.asarray(spread), annual_streaming_fee=0.0, steps_per_year=1.0)
    growth = rebalancing_log_growth(jnp.asarray(prices), jnp.asarray(weights), 0.002, jnp.asarray(spread))
    np.testing.assert_allclose(np.sum(np.asarray(got) * prices, axis=1), 1000.0 * np.exp(np.cumsum(growth)),
                               rtol=1e-12)


def test_streaming_fee_compounds_per_trading_step():
    n_steps, cp, wip = 200, 20, 5
    mask = trading_mask(n_steps, cp, wip)
    steps = trading_steps_per_year(cp, wip)
    fee = per_step_streaming_fee(0.04, steps)
    # constant market: only the streaming fee moves the value
    prices = jnp.ones((n_steps, 3)) * jnp.array([1.0, 2.0, 3.0])
    weights = jnp.full((n_steps, 3), 1.0 / 3.0)
    got = trad_hodling_reserves(prices, weights, 1000.0, mask, fees=0.0, annual_streaming_fee=0.04,
                                steps_per_year=steps)
    values = np.sum(np.asarray(got * prices), axis=1)
    np.testing.assert_allclose(values, 1000.0 * (1.0 - fee) ** np.cumsum(np.asarray(mask)), rtol=1e-12)
    assert values[0] < 1000.0  # charged at minute 0 as well
    # moving market: the fee is a pure compounding factor on the fee-free path
    p, w, _ = _market(n_steps, seed=5)
    kw = dict(fees=0.0, steps_per_year=steps)
    free = trad_hodling_reserves(jnp.asarray(p), jnp.asarray(w), 1000.0, mask, annual_streaming_fee=0.0, **kw)
    paid = trad_hodling_reserves(jnp.asarray(p), jnp.asarray(w), 1000.0, mask, annual_streaming_fee=0.04, **kw)
    factor = (1.0 - fee) ** np.cumsum(np.asarray(mask))
    np.testing.assert_allclose(np.asarray(paid), np.asarray(free) * factor[:, None], rtol=1e-12)


def test_vmap_and_jit_match_separate_calls():
    prices, _, spread = _market(80, seed=7)
    batch = np.stack([_market(80, seed=s)[1] for s in (11, 12, 13)])
    fees = jnp.array([0.0, 0.001, 0.004])
    mask = trading_mask(80, 8, 3)
    lp = jnp.log(prices)
    r0 = jnp.log(1000.0 * batch[:, 0] / prices[0])

    hod = jax.jit(jax.vmap(lambda w, r: hodling_g3m_log_reserves(lp, w, r, mask)))(jnp.asarray(batch), r0)

    def trad(w, f, annual):
        return trad_hodling_reserves(jnp.asarray(prices), w, 1000.0, mask, fees=f, spread=jnp.asarray(spread),
                                     annual_streaming_fee=annual, steps_per_year=trading_steps_per_year(8, 3))

    annual = jnp.array([0.0, 0.04, 0.1])
    tr = jax.jit(jax.vmap(trad))(jnp.asarray(batch), fees, annual)
    for b in range(3):
        np.testing.assert_allclose(hod[b], hodling_g3m_log_reserves(lp, jnp.asarray(batch[b]), r0[b], mask),
                                   rtol=1e-14)
        np.testing.assert_allclose(tr[b], trad(jnp.asarray(batch[b]), float(fees[b]), float(annual[b])), rtol=1e-13)
