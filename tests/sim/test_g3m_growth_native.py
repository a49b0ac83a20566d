"""The CPU's compiled zero-fee growth (quant_core.sim.amm.g3m_growth_native) against the XLA version it replaces there,
and its logs against exact arithmetic.

The kernel is built with the machine's C++ compiler (CI has g++) and called by XLA as an FFI custom call; whether a
compiled function calls it is read from its HLO (the custom call's target name).
"""

from __future__ import annotations

import logging
from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.sim.amm import g3m_growth_native
from quant_core.sim.amm.g3m import _minute_log_growth_xla, g3m_minute_log_growth


def _paths(seed: int, n_minutes: int, n: int, sets: int = 0, vol: float = 0.002, weight_vol: float = 0.002):
    """Prices [T, n] and weights ([sets,] T, n) as random walks; `vol` per minute (0.05: daily-scale moves)."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(40_000.0, 0.5, n)
    prices = np.exp(np.cumsum(rng.normal(0, vol, (n_minutes, n)), axis=0)) * scale
    logits = np.cumsum(rng.normal(0, weight_vol, (max(sets, 1), n_minutes, n)), axis=1)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return jnp.asarray(prices), jnp.asarray(weights if sets else weights[0])


def _kernel_calls(fn, *args) -> int:
    """How many times the compiled fn calls the kernel (a fresh function: jit's trace cache would keep an earlier
    decision)."""
    return jax.jit(lambda *a: fn(*a)).lower(*args).as_text().count(f"@{g3m_growth_native.TARGET}")


@pytest.mark.parametrize("n_minutes, n, vol", [(1, 2, 0.002), (2, 3, 0.002), (700, 2, 0.05), (5_000, 3, 0.002),
                                               (40_001, 3, 0.001), (3_001, 8, 0.02), (500, 3, 0.5)])
def test_the_kernel_equals_the_xla_version(n_minutes, n, vol):
    """Every minute's log growth, one set (long paths split over threads; 40,001 minutes make several segments;
    vol 0.5: ratios past sqrt 2 and 1 / sqrt 2, the range reduction's other exponents)."""
    prices, weights = _paths(n_minutes + n, n_minutes, n, vol=vol)
    assert _kernel_calls(g3m_minute_log_growth, prices, weights) == 1
    got = jax.jit(g3m_minute_log_growth)(prices, weights)
    want = _minute_log_growth_xla(prices, weights)
    assert got.shape == (n_minutes,) and float(got[0]) == 0.0
    # libm's log of the rounded ratio is off by up to ~1e-16 absolute per term; the kernel's logs are within ulps
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-16 * 4 * n * n_minutes)


def test_the_logs_are_exact_to_ulps_for_small_moves_and_extreme_ratios():
    """Two minutes: growth[1] = w0 . log(p1 / p0) - w1 . log(w1 / w0), against 40-digit decimal arithmetic; price
    ratios from 1 + 1e-12 to 1e300 (every exponent path of the kernel's range reduction), both directions."""
    getcontext().prec = 40
    ratios = [1 + 1e-12, 1 - 3e-9, 1.0004, 0.9991, 1.41421, 1.41422, 0.70710, 0.70711, 2.0, 0.5, 3.7, 1e-5, 1e300,
              1e-300]
    for ratio in ratios:
        p0 = np.array([3.3e-7, 2.2e5])
        p1 = p0 * np.array([ratio, 1.0 / ratio])
        w0, w1 = np.array([0.3, 0.7]), np.array([0.30001, 0.69999])
        got = float(g3m_minute_log_growth(jnp.asarray(np.stack([p0, p1])), jnp.asarray(np.stack([w0, w1])))[1])
        dec = [Decimal(float(x)) for x in (*p0, *p1, *w0, *w1)]
        terms = [dec[4] * (dec[2] / dec[0]).ln(), dec[5] * (dec[3] / dec[1]).ln(),
                 -dec[6] * (dec[6] / dec[4]).ln(), -dec[7] * (dec[7] / dec[5]).ln()]
        size = float(sum(abs(t) for t in terms))  # a few ulps of the terms' size (their sum may cancel)
        assert abs(got - float(sum(terms))) <= 1e-15 * size, (ratio, got, float(sum(terms)))


def test_out_of_domain_inputs_give_nan():
    prices, weights = _paths(1, 6, 2)
    for bad in (0.0, -1.0, np.nan, np.inf, 1e-310):
        p = prices.at[3, 1].set(bad)
        got = g3m_minute_log_growth(p, weights)
        assert bool(jnp.all(jnp.isfinite(got[:3]))) and bool(jnp.all(jnp.isnan(got[3:]))), bad


def test_vmapped_sets_go_to_one_call_and_equal_the_xla_version():
    """Shared prices with batched weights, batched prices with shared weights, and both nested (the kernel
    broadcasts the set dimensions: no copy of shared prices)."""
    prices, weights = _paths(2, 3_000, 3, sets=4)
    many_prices = jnp.stack([prices, prices * 1.5, prices[::-1]])
    cases = [
        (jax.vmap(g3m_minute_log_growth, in_axes=(None, 0)), jax.vmap(_minute_log_growth_xla, in_axes=(None, 0)),
         (prices, weights)),
        (jax.vmap(g3m_minute_log_growth, in_axes=(0, None)), jax.vmap(_minute_log_growth_xla, in_axes=(0, None)),
         (many_prices, weights[0])),
        (jax.vmap(jax.vmap(g3m_minute_log_growth, in_axes=(None, 0)), in_axes=(0, None)),
         jax.vmap(jax.vmap(_minute_log_growth_xla, in_axes=(None, 0)), in_axes=(0, None)), (many_prices, weights)),
    ]
    for fn, xla, args in cases:
        assert _kernel_calls(fn, *args) == 1
        np.testing.assert_allclose(jax.jit(fn)(*args), xla(*args), rtol=1e-12, atol=1e-13)


def test_derivatives_are_the_xla_versions():
    """A custom JVP: forward and reverse mode give exactly the XLA version's derivative."""
    prices, weights = _paths(3, 400, 3)

    mix = jnp.linspace(-1.0, 2.0, prices.shape[0])

    def loss(growth):  # linear in the growth: the derivative does not depend on the primal's last bits
        return lambda p, w: jnp.sum(mix * growth(p, w))

    got = jax.grad(loss(g3m_minute_log_growth), argnums=(0, 1))(prices, weights)
    want = jax.grad(loss(_minute_log_growth_xla), argnums=(0, 1))(prices, weights)
    for g, x in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, x)
    tangent = jnp.ones_like(weights) * 1e-3
    _, jvp = jax.jvp(lambda w: g3m_minute_log_growth(prices, w), (weights,), (tangent,))
    _, jvp_x = jax.jvp(lambda w: _minute_log_growth_xla(prices, w), (weights,), (tangent,))
    np.testing.assert_array_equal(jvp, jvp_x)


def test_the_switch_keeps_the_xla_version_and_a_bad_value_is_refused_by_name(monkeypatch):
    prices, weights = _paths(4, 50, 2)
    monkeypatch.setenv(g3m_growth_native.NATIVE_ENV, "0")
    assert _kernel_calls(g3m_minute_log_growth, prices, weights) == 0
    monkeypatch.setenv(g3m_growth_native.NATIVE_ENV, "on")
    with pytest.raises(ValueError, match="QUANT_NATIVE_GROWTH='on'.*set it to 1"):
        g3m_minute_log_growth(prices, weights)


def test_no_working_compiler_falls_back_to_xla_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CXX", "false")  # a 'compiler' that always fails
    monkeypatch.setenv("QUANT_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(g3m_growth_native, "_library", [])
    prices, weights = _paths(5, 50, 2)
    with caplog.at_level(logging.WARNING, logger=g3m_growth_native.__name__):
        assert _kernel_calls(g3m_minute_log_growth, prices, weights) == 0
    assert "zero-fee G3M passes run XLA's log" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    np.testing.assert_allclose(g3m_minute_log_growth(prices, weights), _minute_log_growth_xla(prices, weights))


def test_mismatched_shapes_are_refused_by_name():
    prices, weights = _paths(6, 50, 3, sets=2)
    with pytest.raises(ValueError, match=r"prices and weights must both be \[T, n\].*vmap over parameter sets"):
        g3m_minute_log_growth(prices, weights)


@pytest.mark.parametrize("env", ["QUANT_NATIVE_GROWTH", "QUANT_NATIVE_FEES"])
def test_a_bad_switch_is_refused_even_by_a_run_that_never_reaches_its_kernel(env, monkeypatch):
    """A daily zero-fee pool steps by days (no per-minute growth, no fee loop): the switch is still checked."""
    from helpers import random_walk_panel

    from quant_core.runspec import load_run_spec
    from quant_core.sim.simulate import simulate

    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-05",
                          "endDateString": "2024-01-25", "chunk_period": 1440, "weight_interpolation_period": 1440,
                          "max_memory_days": 3, "fees": 0.0})
    monkeypatch.setenv(env, "yes")
    with pytest.raises(ValueError, match=f"{env}='yes': set it to 1"):
        simulate(random_walk_panel(30), spec)
    monkeypatch.setenv(env, "0")
    assert np.isfinite(simulate(random_walk_panel(30), spec).values).all()
