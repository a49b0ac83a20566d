import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.sim.estimators import (
    ewma,
    ewma_gradient,
    ewma_return_variance,
    lamb_to_memory_days,
    linear_recurrence,
    memory_days_to_lamb,
)


def test_memory_days_known_value():
    # docs/tfmm-reference-details.md section 1: 10 days at chunk_period 1440 -> lambda 0.680361
    assert float(memory_days_to_lamb(10.0, 1440)) == pytest.approx(0.680361, abs=1e-6)


@given(st.floats(0.05, 500.0), st.sampled_from([60, 240, 1440, 2880]))
@settings(max_examples=60, deadline=None)
def test_memory_lambda_round_trip(days, chunk_period):
    lamb = memory_days_to_lamb(days, chunk_period)
    assert 0 < float(lamb) < 1
    assert float(lamb_to_memory_days(lamb, chunk_period)) == pytest.approx(days, rel=1e-8)


def _gradient_loop(x, lamb):
    g_inf, b = 1 / (1 - lamb), lamb / (1 - lamb) ** 3
    ewma, a, out = x[0].copy(), np.zeros_like(x[0]), [np.zeros_like(x[0])]
    for xc in x[1:]:
        ewma = ewma + (xc - ewma) / g_inf
        a = lamb * a + g_inf * (xc - ewma)
        a = np.where(np.abs(a) < 1e-10, 0.0, a)
        out.append(a / (b * ewma))
    return np.array(out)


def test_gradient_scan_equals_plain_loop():
    rng = np.random.default_rng(1)
    x = np.exp(np.cumsum(rng.normal(0, 0.05, (200, 3)), axis=0))
    lamb = np.array([0.5, 0.8, 0.95])
    np.testing.assert_allclose(np.asarray(ewma_gradient(x, lamb)), _gradient_loop(x, lamb), rtol=1e-12, atol=1e-15)


def test_gradient_sign_follows_trend():
    x = np.stack([np.linspace(1, 2, 50), np.linspace(2, 1, 50)], axis=1)
    g = np.asarray(ewma_gradient(x, np.array([0.7, 0.7])))
    assert g[0].tolist() == [0.0, 0.0]
    assert (g[5:, 0] > 0).all() and (g[5:, 1] < 0).all()


# ---------------------------------------------------------------------------------------------
# both estimator paths (method="scan" | "vectorized")

def _walk(n_rows=300, seed=2, sigma=0.03):
    rng = np.random.default_rng(seed)
    return np.exp(np.cumsum(rng.normal(0, sigma, (n_rows, 3)), axis=0)) * np.array([30000.0, 2000.0, 1.0])


def _flat_stretches(n_rows=300, seed=3):
    """A stablecoin-like series: most chunks unchanged, tiny moves otherwise, so the gradient
    accumulator decays below 1e-10 and the reference zeroes it."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1e-3, (n_rows, 3)) * (rng.random((n_rows, 3)) < 0.15)
    return np.exp(np.cumsum(steps, axis=0))


def _lambdas(*days):
    return np.asarray(memory_days_to_lamb(np.array(days), 1440))


def test_linear_recurrence_equals_a_loop():
    """The blocked parallel solver, across one, two and three block levels, with breaks."""
    rng = np.random.default_rng(0)
    lamb = np.array([0.3, 0.9, 0.999])
    for n_rows in (1, 32, 33, 1100):
        inputs = rng.normal(size=(n_rows - 1, 3))
        breaks = rng.random((n_rows - 1, 3)) < 0.05
        y0 = rng.normal(size=3)
        for brk in (None, breaks):
            want = [y0]
            for c in range(n_rows - 1):
                coef = np.where(brk[c], 0.0, lamb) if brk is not None else lamb
                want.append(coef * want[-1] + inputs[c])
            got = linear_recurrence(jnp.asarray(lamb), jnp.asarray(inputs), jnp.asarray(y0),
                                    None if brk is None else jnp.asarray(brk))
            np.testing.assert_allclose(np.asarray(got), np.array(want), rtol=1e-12, atol=1e-12)


def test_ewma_both_paths_equal_the_loop():
    x = _walk()
    lamb = _lambdas(2.0, 10.0, 100.0)
    want = [x[0]]
    for xc in x[1:]:
        want.append(want[-1] + (xc - want[-1]) / (1 / (1 - lamb)))
    for method in ("scan", "vectorized"):
        np.testing.assert_allclose(np.asarray(ewma(x, lamb, method)), np.array(want), rtol=1e-13)


@pytest.mark.parametrize("series", [_walk, _flat_stretches])
def test_gradient_vectorized_equals_scan(series):
    x = series()
    lamb = _lambdas(0.6, 3.0, 40.0)
    scan = np.asarray(ewma_gradient(x, lamb, "scan"))
    np.testing.assert_allclose(scan, _gradient_loop(x, lamb), rtol=1e-12, atol=1e-15)
    vec = np.asarray(ewma_gradient(x, lamb, "vectorized"))
    np.testing.assert_allclose(vec, scan, rtol=1e-10, atol=1e-13)


def test_gradient_zeroing_is_reproduced_not_approximated():
    """On flat stretches the scan zeroes |a| < 1e-10 and carries the zero forward. Solving the
    linear recurrence and zeroing afterwards is off by up to ~1e-10 in g (x k in the weights); the
    vectorised path iterates the zeroing mask to the scan's own and matches to rounding."""
    x = _flat_stretches()
    lamb = _lambdas(0.6, 1.0, 3.0)
    scan = np.asarray(ewma_gradient(x, lamb, "scan"))
    assert (scan[1:] == 0).sum() > 100  # the zeroing really happens here
    vec = np.asarray(ewma_gradient(x, lamb, "vectorized"))
    assert np.abs(vec - scan).max() < 1e-13
    np.testing.assert_array_equal(vec == 0, scan == 0)
    # the naive alternative is measurably off
    e = np.asarray(ewma(x, lamb, "scan"))
    a = np.asarray(linear_recurrence(jnp.asarray(lamb), jnp.asarray((x[1:] - e[1:]) / (1 - lamb)), jnp.zeros(3)))
    a = np.where(np.abs(a) < 1e-10, 0.0, a)
    naive = np.concatenate([np.zeros((1, 3)), a[1:] / (lamb / (1 - lamb) ** 3 * e[1:])])
    assert np.abs(naive - scan).max() > 1e-11


def test_alt_ewma_gradient_equals_the_loop():
    x = _walk()
    lamb, alt = _lambdas(5.0, 10.0, 20.0), _lambdas(15.0, 3.0, 20.0)
    g_inf, alt_g_inf, b = 1 / (1 - lamb), 1 / (1 - alt), lamb / (1 - lamb) ** 3
    e, ea, a, want = x[0].copy(), x[0].copy(), np.zeros(3), [np.zeros(3)]
    for xc in x[1:]:
        e = e + (xc - e) / g_inf
        ea = ea + (xc - ea) / alt_g_inf
        a = lamb * a + g_inf * (xc - e)
        a = np.where(np.abs(a) < 1e-10, 0.0, a)
        want.append(a / (b * ea))
    for method in ("scan", "vectorized"):
        got = np.asarray(ewma_gradient(x, lamb, method, alt_lamb=alt))
        np.testing.assert_allclose(got, np.array(want), rtol=1e-10, atol=1e-14)
    # equal lambdas give the plain estimator
    np.testing.assert_allclose(np.asarray(ewma_gradient(x, lamb, alt_lamb=lamb)), np.asarray(ewma_gradient(x, lamb)))


def test_return_variance_equals_the_loop():
    x = _walk()
    lamb = _lambdas(2.0, 10.0, 60.0)
    r = np.diff(x, axis=0) / x[:-1]
    g_inf = 1 / (1 - lamb)
    m, s, want = r[0].copy(), np.zeros(3), [np.ones(3), np.ones(3)]
    for rc in r[1:]:
        d = rc - m
        m = m + d / g_inf
        s = lamb * s + d * (d * (1 - 1 / g_inf))
        want.append(s * (1 - lamb))
    for method in ("scan", "vectorized"):
        np.testing.assert_allclose(np.asarray(ewma_return_variance(x, lamb, method)), np.array(want), rtol=1e-10)


def test_estimator_derivatives_agree_between_paths_and_vmap():
    x = jnp.asarray(_walk(200))
    lamb = jnp.asarray(_lambdas(2.0, 10.0, 60.0))
    weights = jnp.linspace(-1.0, 1.0, 200)[:, None]
    for fn in (ewma_gradient, ewma_return_variance):
        grads = [jax.jit(jax.grad(lambda lam, m=m, fn=fn: jnp.sum(fn(x, lam, m) * weights)))(lamb)
                 for m in ("scan", "vectorized")]
        assert np.isfinite(np.asarray(grads[0])).all()
        np.testing.assert_allclose(np.asarray(grads[1]), np.asarray(grads[0]), rtol=1e-8)
        batch = jnp.stack([lamb, lamb * 0.9])
        out = jax.vmap(lambda lam, fn=fn: fn(x, lam, "vectorized"))(batch)
        np.testing.assert_allclose(np.asarray(out[1]), np.asarray(fn(x, lamb * 0.9, "scan")), rtol=1e-10, atol=1e-14)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="scan"):
        ewma_gradient(np.ones((5, 2)), 0.5, "fft")
