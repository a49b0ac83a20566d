"""The closed-form per-step sums equal the minute-by-minute reserves."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.sim.amm.g3m import g3m_log_reserves, g3m_log_reserves_per_minute
from quant_core.sim.weights import WeightSchedule, chunk_weights


def _schedule(seed, n_chunks, cp, wip, scale, max_change):
    rng = np.random.default_rng(seed)
    deltas = rng.normal(0, scale, (n_chunks, 3))
    deltas -= deltas.mean(axis=1, keepdims=True)
    w0 = np.array([0.5, 0.3, 0.2])
    w, d = chunk_weights(w0, deltas, minimum_weight=0.1 / 3, maximum_change=max_change, interpolation_period=wip)
    return WeightSchedule(jnp.asarray(w0), w, d, cp, wip)


@given(
    st.integers(0, 10_000),
    st.sampled_from([(1440, 1440, 1440), (1440, 1440, 600), (2880, 1440, 2000), (240, 60, 100), (60, 60, 60)]),
    st.sampled_from([1e-9, 1e-4, 3e-4, 1e-2]),
)
@settings(max_examples=25, deadline=None)
def test_closed_form_equals_minute_sum(seed, timing, max_change):
    cp, step, wip = timing
    n_steps = 12
    sched = _schedule(seed, n_steps * step // cp + 2, cp, wip, 0.3, max_change)
    rng = np.random.default_rng(seed + 1)
    lp = jnp.asarray(np.cumsum(rng.normal(0, 0.05, (n_steps, 3)), axis=0))
    r0 = jnp.log(jnp.array([1.0, 2.0, 3.0]))
    fast = np.asarray(g3m_log_reserves(lp, sched, step, r0))
    slow = np.asarray(g3m_log_reserves_per_minute(lp, sched.at, step, r0))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)


@pytest.mark.parametrize("slope", [0.0, 1e-14, 1e-10, 1e-7, -1e-7, 3e-4, -3e-4])
def test_tiny_and_zero_slopes(slope):
    w0 = jnp.array([0.4, 0.35, 0.25])
    step = jnp.array([slope, -slope / 2, -slope / 2])
    d = jnp.stack([step] * 3)
    w_start = jnp.stack([w0 + c * 1440 * step for c in range(3)])
    sched = WeightSchedule(w0, w_start, d, 1440, 1440)
    lp = jnp.log(jnp.array([[1.0, 2.0, 3.0], [1.1, 1.9, 3.0], [1.2, 2.0, 2.9]]))
    fast = g3m_log_reserves(lp, sched, 1440, jnp.zeros(3))
    slow = g3m_log_reserves_per_minute(lp, sched.at, 1440, jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=0, atol=1e-12)


@given(
    st.integers(0, 10_000),
    st.sampled_from([(60, 60), (60, 25), (100, 1), (37, 37)]),
    st.sampled_from([1e-9, 1e-4, 3e-3]),
)
@settings(max_examples=25, deadline=None)
def test_values_at_chosen_minutes_equal_the_minute_path(seed, timing, max_change):
    """g3m_minute_log_growth_at (per chunk, prefix sums) == g3m_minute_log_growth on every minute."""
    from quant_core.sim.amm.g3m import g3m_minute_log_growth, g3m_minute_log_growth_at

    cp, wip = timing
    n_minutes = 7 * cp + 13
    schedule = _schedule(seed, 8, cp, wip, 0.2, max_change)
    rng = np.random.default_rng(seed + 1)
    log_p = jnp.asarray(np.cumsum(rng.normal(0, 0.01, (n_minutes, 3)), axis=0))
    full = g3m_minute_log_growth(jnp.exp(log_p), schedule.per_minute(n_minutes))
    minutes = jnp.asarray(np.unique(np.concatenate([rng.integers(0, n_minutes, 40), [0, cp - 1, cp, n_minutes - 1]])))
    np.testing.assert_allclose(g3m_minute_log_growth_at(log_p, schedule, minutes), full[minutes], rtol=0, atol=1e-12)


@pytest.mark.parametrize("a,d", [(0.2, 0.25 / 1440), (0.45, -0.25 / 1440), (0.3, 0.1 / 1440), (0.5, 1e-13)])
def test_ramp_loss_and_its_gradient_are_finite_where_the_unused_branch_has_a_pole(a, d):
    """A rising 1440-minute ramp with a/d an integer below k (0.2 -> 0.45: a/d = 1152) used to give NaN gradients
    for every trained parameter: the falling branch's gammaln sat on a pole. Value: the direct sum."""
    import jax

    from quant_core.sim.amm.g3m import _ramp_arbitrage_loss

    k = 1440.0
    x = a + d * np.arange(1441)
    want = float(np.sum(x[1:] * np.log(x[1:] / x[:-1])))
    assert float(_ramp_arbitrage_loss(jnp.float64(a), jnp.float64(d), k)) == pytest.approx(want, rel=1e-9, abs=1e-15)
    grads = jax.grad(lambda a, d: _ramp_arbitrage_loss(a, d, k), argnums=(0, 1))(jnp.float64(a), jnp.float64(d))
    assert all(np.isfinite(float(g)) for g in grads)
