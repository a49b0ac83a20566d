"""The CPU's compiled fee loop (quant_core.sim.amm.g3m_fee_native) against the XLA scan it replaces there.

The loop is built with the machine's C++ compiler (CI has g++) and called by XLA as an FFI custom call; every
comparison runs the same inputs through the scan with QUANT_NATIVE_FEES=0, with minutes that trade and minutes that
do not (the loop skips the trade search of a minute whose pairs all sit inside their no-trade band).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.sim.amm import g3m_fee_native
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees

T, N, SETS = 2000, 3, 5
CASES = {
    "fees only": {"fees": 0.003},
    "gas, arb fees, noise": {"fees": 0.003, "gas_cost": 0.5, "arb_fees": 0.001, "noise_trader_ratio": 0.3},
    "one arbitrage per step, 1% fee": {"fees": 0.01, "weight_arbitrage": False},
    "4 tokens": {"fees": 0.002},
}


def _paths(seed: int = 0, n: int = N, sets: int = SETS):
    rng = np.random.default_rng(seed)
    vol = np.array([0.001, 0.0012, 0.00005, 0.0015])[:n]
    prices = np.exp(np.cumsum(rng.normal(0, 1, (T, n)) * vol, axis=0)) * np.array([40_000.0, 2_000.0, 1.0, 90.0])[:n]
    logits = np.cumsum(rng.normal(0, 0.001, (sets, T, n)), axis=1)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return prices, weights, 1e6 * weights[:, 0] / prices[0]


def _vmapped(prices, weights, r0, kw):
    return jax.block_until_ready(  # the callback runs when the computation does (dispatch is asynchronous)
        jax.vmap(lambda w, r: g3m_reserves_with_fees(prices, w, r, **kw))(jnp.asarray(weights), jnp.asarray(r0)))


@pytest.fixture
def counted(monkeypatch):
    """The set counts of every loop call traced (an empty list: the scan ran; custom_vmap also traces the one-set
    form for its shapes, so a vmapped pass records 1 and then its set count)."""
    calls = []
    real = g3m_fee_native.fee_path_sets

    def spy(prices, weights, *args, **kwargs):
        calls.append(weights.shape[0])
        return real(prices, weights, *args, **kwargs)

    monkeypatch.setattr(g3m_fee_native, "fee_path_sets", spy)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_the_loop_equals_the_scan(case, counted, monkeypatch):
    """Every set's reserves, fee revenue and volume at every minute, vmapped (all sets in one call)."""
    kw = CASES[case]
    prices, weights, r0 = _paths(n=4 if case.startswith("4") else N)
    loop = _vmapped(prices, weights, r0, kw)
    assert counted[-1] == SETS
    monkeypatch.setenv(g3m_fee_native.NATIVE_ENV, "0")
    counted.clear()
    scan = _vmapped(prices, weights, r0, kw)
    assert counted == []
    volume = np.asarray(scan.arb_volume)
    assert 0.05 * volume.size < np.sum(volume > 0) < 0.95 * volume.size  # both kinds of minute occur
    np.testing.assert_allclose(loop.reserves, scan.reserves, rtol=1e-12, atol=0)
    # a trade is a difference of near-equal quantities: its rounding is absolute (1e-14 of the 1e6 pool)
    np.testing.assert_allclose(loop.fee_revenue, scan.fee_revenue, rtol=1e-11, atol=1e-8)
    np.testing.assert_allclose(loop.arb_volume, scan.arb_volume, rtol=1e-11, atol=1e-8)


@pytest.mark.parametrize("keep, f", [(40, 1), (40, 4), (40, 3)], ids=["step 40", "arb every 4", "arb every 3"])
def test_data_step_rows_equal_the_scans_minutes_summed(keep, f, counted, monkeypatch):
    """keep_every: the loop writes only each data step's reserves and sums (arb_frequency dividing the step: the
    loop keeps every keep/f-th of its rows; not dividing it: minute rows, summed after)."""
    prices, weights, r0 = _paths(7)
    rows = keep * ((T - 1) // keep) + 1
    prices, weights = prices[:rows], weights[:, :rows]
    kw = {"fees": 0.003, "arb_frequency": f, "keep_every": keep}
    loop = _vmapped(prices, weights, r0, kw)
    assert counted[-1] == SETS and loop.reserves.shape == (SETS, (prices.shape[0] - 1) // keep + 1, N)
    monkeypatch.setenv(g3m_fee_native.NATIVE_ENV, "0")
    minutes = _vmapped(prices, weights, r0, {**kw, "keep_every": 1})
    fees = np.asarray(minutes.fee_revenue)
    steps = np.concatenate([fees[:, :1], fees[:, 1:].reshape(SETS, -1, keep).sum(-1)], axis=1)
    assert np.sum(steps[:, 1:] > 0) > 0.5 * steps[:, 1:].size  # most steps earn fees
    np.testing.assert_allclose(loop.reserves, np.asarray(minutes.reserves)[:, ::keep], rtol=1e-12, atol=0)
    np.testing.assert_allclose(loop.fee_revenue, steps, rtol=1e-11, atol=1e-8)
    scan = _vmapped(prices, weights, r0, kw)  # the scan's minutes, summed by data_steps
    np.testing.assert_allclose(loop.reserves, scan.reserves, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loop.arb_volume, scan.arb_volume, rtol=1e-11, atol=1e-8)


def test_without_flows_the_loop_writes_only_the_reserves(counted):
    prices, weights, r0 = _paths(10)
    full = _vmapped(prices, weights, r0, {"fees": 0.003})
    bare = _vmapped(prices, weights, r0, {"fees": 0.003, "flows": False})
    assert counted[-1] == SETS and bare.fee_revenue is None and bare.arb_volume is None
    np.testing.assert_array_equal(bare.reserves, full.reserves)


def test_a_step_that_does_not_divide_the_minutes_is_refused():
    prices, weights, r0 = _paths(8)
    with pytest.raises(ValueError, match=r"keep_every \(7\) must be >= 1 and divide T - 1 \(1999\)"):
        g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003, keep_every=7)


def test_one_pass_under_jit_and_per_set_prices(counted, monkeypatch):
    prices, weights, r0 = _paths(1)
    one = jax.jit(lambda p, w, r: g3m_reserves_with_fees(p, w, r, fees=0.003).reserves)(prices, weights[0], r0[0])
    per_set = np.stack([prices * (1.0 + 0.01 * s) for s in range(SETS)])
    batched = jax.vmap(lambda p, w, r: g3m_reserves_with_fees(p, w, r, fees=0.003).reserves)(per_set, weights, r0)
    jax.block_until_ready((one, batched))
    assert counted[0] == 1 and counted[-1] == SETS
    monkeypatch.setenv(g3m_fee_native.NATIVE_ENV, "0")
    np.testing.assert_allclose(one, g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003).reserves,
                               rtol=1e-12)
    for s in range(SETS):
        scan = g3m_reserves_with_fees(per_set[s], weights[s], r0[s], fees=0.003).reserves
        np.testing.assert_allclose(batched[s], scan, rtol=1e-12)


@pytest.mark.parametrize("kw", [
    {"fees": jnp.float64(0.003)},
    {"fees": 0.003, "protocol_fee_split": 0.5},
    {"fees": 0.003, "invariant_tolerance": 0.0},
    {"fees": 0.003, "trade_mask": np.ones(T, bool)},
    {"fees": 0.0, "gas_cost": 1.0},
], ids=["traced fee", "protocol split", "knife-edge test", "trade mask", "zero fee"])
def test_what_the_loop_does_not_cover_keeps_the_scan(kw, counted):
    prices, weights, r0 = _paths(2)
    jax.block_until_ready(g3m_reserves_with_fees(prices, weights[0], r0[0], **kw))
    assert counted == []


def test_a_derivative_keeps_the_scan(counted):
    prices, weights, r0 = _paths(3)
    grad = jax.grad(lambda p: g3m_reserves_with_fees(p, weights[0], r0[0], fees=0.003).reserves[-1] @ p[-1])(
        jnp.asarray(prices))
    assert counted == [] and bool(jnp.all(jnp.isfinite(grad)))


def test_a_bad_switch_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(g3m_fee_native.NATIVE_ENV, "yes")
    prices, weights, r0 = _paths(4)
    with pytest.raises(ValueError, match="QUANT_NATIVE_FEES='yes'.*set it to 1"):
        g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003)


def test_no_working_compiler_falls_back_to_the_scan_with_a_warning(monkeypatch, tmp_path, caplog, counted):
    """A machine whose C++ compiler fails still trains (the scan), and says why once."""
    monkeypatch.setenv("CXX", "false")  # a 'compiler' that always fails
    monkeypatch.setenv(g3m_fee_native.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(g3m_fee_native, "_library", [])
    prices, weights, r0 = _paths(5)
    with caplog.at_level(logging.WARNING, logger=g3m_fee_native.__name__):
        out = jax.block_until_ready(g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003))
    assert counted == [] and "run as the XLA scan" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    monkeypatch.setattr(g3m_fee_native, "_library", [])
    monkeypatch.delenv("CXX")
    loop = jax.block_until_ready(g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003))
    np.testing.assert_allclose(out.reserves, loop.reserves, rtol=1e-12)
    assert counted == [1] and any(p.suffix == ".so" for p in tmp_path.iterdir())


def test_an_unwritable_build_directory_falls_back_to_the_scan_and_names_the_setting(monkeypatch, tmp_path, caplog,
                                                                                     counted):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(g3m_fee_native.DIR_ENV, str(blocker / "native"))
    monkeypatch.setattr(g3m_fee_native, "_library", [])
    prices, weights, r0 = _paths(6)
    with caplog.at_level(logging.WARNING, logger=g3m_fee_native.__name__):
        jax.block_until_ready(g3m_reserves_with_fees(prices, weights[0], r0[0], fees=0.003))
    assert counted == [] and "set QUANT_NATIVE_DIR to a writable directory" in caplog.text
