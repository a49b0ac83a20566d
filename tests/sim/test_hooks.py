"""Hooks (bounded__, ensemble__, lvr__, rvr__), interpolation methods and straight-through clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.hooks import rebalancing_log_growth
from quant_core.sim.pool import get_pool
from quant_core.sim.simulate import simulate
from quant_core.sim.weights import WeightSchedule, chunk_weights, per_asset_bounds
from quant_core.spec import RunSpecError

BASE = {"tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-11", "endDateString": "2024-02-10",
        "max_memory_days": 10, "parameters": {"memory_days": 3, "k_per_day": 40}}


def _spec(rule="momentum", **kw):
    return load_run_spec({**BASE, "rule": rule, **kw})


@pytest.fixture(scope="module")
def panel():
    return random_walk_panel(45)


def test_hook_names_parse_and_fail_clearly():
    pool = get_pool("ensemble__bounded__momentum")
    assert tuple(h.name for h in pool.name.hooks) == ("ensemble", "bounded") and pool.name.base == "momentum"
    assert pool.name.full == "ensemble__bounded__momentum" and pool.rebalancer is None
    assert {"min_weights_per_asset", "max_weights_per_asset"} <= {p.name for p in pool.params}
    with pytest.raises(RunSpecError, match="unknown hook"):
        _spec("boundd__momentum")
    with pytest.raises(RunSpecError, match="lvr__ and rvr__"):
        _spec("lvr__rvr__momentum")
    with pytest.raises(RunSpecError, match="fixed weights"):
        _spec("bounded__balancer")
    with pytest.raises(RunSpecError, match="did you mean 'momentum'"):
        _spec("bounded__momentun")


@given(arrays(np.float64, (4,), elements=st.floats(0.01, 1.0)), st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_per_asset_bounds_respected_and_normalised(raw, seed):
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.0, 0.2, 4)
    high = np.minimum(1.0, low + rng.uniform(0.15, 0.8, 4))
    if high.sum() < 1:
        high = high / high.sum() * 1.01
        high = np.minimum(high, 1.0)
    u = raw / raw.sum()
    out = np.asarray(per_asset_bounds(jnp.asarray(u), jnp.asarray(low), jnp.asarray(high)))
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-12)
    assert np.all(out >= low - 1e-9) and np.all(out <= high + 1e-9)


def test_bounded_momentum_keeps_weights_in_bounds(panel):
    bounds = {"min_weights_per_asset": [0.1, 0.2, 0.1], "max_weights_per_asset": [0.5, 0.45, 0.6]}
    spec = _spec("bounded__momentum", parameters={**BASE["parameters"], **bounds}, maximum_change=0.01)
    res = simulate(panel, spec)
    free = simulate(panel, _spec(maximum_change=0.01))
    assert np.abs(res.weights - free.weights).max() > 1e-3  # the bounds bind on this path
    assert np.all(res.weights >= np.array(bounds["min_weights_per_asset"]) - 1e-9)
    assert np.all(res.weights <= np.array(bounds["max_weights_per_asset"]) + 1e-9)
    with pytest.raises(ValueError, match="sums to"):
        simulate(panel, _spec("bounded__momentum", parameters={"max_weights_per_asset": [0.3, 0.3, 0.3]}))


def test_ensemble_of_identical_members_is_the_rule(panel):
    one = simulate(panel, _spec())
    ens = simulate(panel, _spec("ensemble__momentum", parameters={"memory_days": [[3] * 3, [3] * 3],
                                                                  "k_per_day": [[40] * 3, [40] * 3]}))
    np.testing.assert_allclose(ens.values, one.values, rtol=1e-13)


def test_ensemble_averages_rule_outputs(panel):
    """Two members: the weights follow the mean of the members' weight changes."""
    spec = _spec("ensemble__momentum",
                 parameters={"memory_days": [[2] * 3, [8] * 3], "k_per_day": [[30] * 3, [90] * 3]})
    ens = simulate(panel, spec)
    pool = get_pool("momentum")
    from quant_core.sim.settings import static_settings
    from quant_core.sim.window import plan_window, sorted_panel_rows

    window = plan_window(panel, spec)
    st_ = static_settings(spec, window)
    rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
    idx = jnp.minimum(jnp.arange(window.warmup_rows + 40) * window.stride, rows.shape[0] - 1)
    outs = [pool.rule.deltas(rows[idx], {"memory_days": jnp.full(3, m), "k_per_day": jnp.full(3, k)},
                             st_.rule_context, {}) for m, k in [(2, 30), (8, 90)]]
    mean = (outs[0] + outs[1]) / 2
    start = window.warmup_rows // window.stride
    w0 = jnp.full(3, 1 / 3)
    w, d = chunk_weights(w0, mean[start + 1 : start + 1 + 31], minimum_weight=0.1 / 3, maximum_change=3e-4,
                         interpolation_period=1440)
    sched = WeightSchedule(w0, w, d, 1440, 1440)
    np.testing.assert_allclose(ens.weights, np.asarray(sched.at(jnp.arange(30) * 1440)), atol=1e-13)


def test_lvr_hook_is_the_rebalancing_benchmark_and_lvr_is_nonnegative(panel):
    pool = simulate(panel, _spec())
    lvr_pool = simulate(panel, _spec("lvr__momentum"))
    np.testing.assert_allclose(lvr_pool.values, pool.rebalancing_values, rtol=1e-12)
    # zero fees: the AMM under arbitrage never beats rebalancing to the same weights (AM-GM, KL >= 0)
    assert np.all(pool.lvr >= -1e-9 * pool.values)
    assert pool.lvr[-1] > 0


def test_rvr_spread_costs_and_lvr_fees(panel):
    minutes = 29 * 1440 + 1
    zero = simulate(panel, _spec("rvr__momentum"), aux={"spread": np.zeros((minutes, 3))})
    lvr = simulate(panel, _spec("lvr__momentum"))
    np.testing.assert_allclose(zero.values, lvr.values, rtol=1e-12)
    wide = simulate(panel, _spec("rvr__momentum"), aux={"spread": np.full((minutes, 3), 0.002)})
    assert np.all(wide.values[1:] < zero.values[1:])
    costly = simulate(panel, _spec("lvr__momentum", fees=0.003))
    assert np.all(costly.values[1:] < lvr.values[1:])
    with pytest.raises(ValueError, match="spread"):
        simulate(panel, _spec("rvr__momentum"))


def test_rebalancing_growth_matches_a_direct_loop():
    rng = np.random.default_rng(3)
    p = np.exp(np.cumsum(rng.normal(0, 0.01, (50, 3)), axis=0))
    w = rng.dirichlet(np.ones(3), 50)
    spread = rng.uniform(0, 0.01, (50, 3))
    tau = 0.002
    v, r = 1.0, w[0] / p[0]
    vals = [v]
    for t in range(1, 50):
        val = (r * p[t]).sum()
        tmp = w[t - 1] * val / p[t]
        dlt = tmp - r
        val -= tau * (np.maximum(-dlt, 0) * p[t]).sum() + 0.5 * (spread[t] * np.abs(dlt) * p[t]).sum()
        r = w[t - 1] * val / p[t]
        dlt = w[t] * val / p[t] - r
        val -= tau * (np.maximum(-dlt, 0) * p[t]).sum() + 0.5 * (spread[t] * np.abs(dlt) * p[t]).sum()
        r = w[t] * val / p[t]
        vals.append(val)
    growth = rebalancing_log_growth(jnp.asarray(p), jnp.asarray(w), tau, jnp.asarray(spread))
    np.testing.assert_allclose(np.exp(np.cumsum(np.asarray(growth))), vals, rtol=1e-12)


def test_optimal_interpolation_loses_less_to_arbitrage():
    """Constant prices: every loss is arbitrage on the weight moves; the approximately optimal path
    (arXiv 2403.18737) loses less than the linear ramp between the same weights."""
    ts = np.datetime64("2024-01-01", "ms") + np.arange(40) * np.timedelta64(1, "D")
    prices = np.ones((40, 3)) * np.array([1.0, 2.0, 3.0])
    prices[:10] *= np.exp(np.linspace(0, 0.3, 10))[:, None] ** np.array([1.0, 0.0, -1.0])  # a trend to react to
    prices[10:] = prices[9]
    flat = PricePanel(ts, ("AAA", "BBB", "CCC"), prices, 1440, {})
    kw = {"maximum_change": 0.01, "parameters": {"memory_days": 2, "k_per_day": 200}}
    lin = simulate(flat, _spec(**kw))
    opt = simulate(flat, _spec(weight_interpolation_method="optimal", **kw))
    np.testing.assert_allclose(opt.weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(opt.weights, lin.weights, atol=1e-12)  # same chunk boundaries
    assert lin.values[-1] < lin.values[0] and opt.values[-1] > lin.values[-1]


def test_straight_through_clipping_keeps_values_and_passes_gradients():
    rng = np.random.default_rng(0)
    deltas = jnp.asarray(rng.normal(0, 0.3, (20, 3)))
    w0 = jnp.full(3, 1 / 3)

    def final(scale, ste):
        w, d = chunk_weights(w0, deltas * scale, minimum_weight=0.1, maximum_change=1e-4, interpolation_period=1440,
                             ste_max_change=ste, ste_min_max_weight=ste)
        return jnp.sum((w[-1] + 1440 * d[-1]) * jnp.array([1.0, 2.0, 3.0]))

    assert final(1.0, True) == final(1.0, False)
    g_ste = jax.grad(final)(1.0, True)
    assert np.isfinite(g_ste) and g_ste != jax.grad(final)(1.0, False)
