import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.sim.estimators import ewma_gradient, lamb_to_memory_days, memory_days_to_lamb


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
