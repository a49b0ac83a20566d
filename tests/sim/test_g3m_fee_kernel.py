"""The GPU fee kernel (quant_core.sim.amm.g3m_fee_kernel) against the scan it replaces on a GPU.

Pallas' interpret mode runs the kernel's program on the CPU, so the kernel's arithmetic and order of operations
are checked here, where CI runs; the Triton compilation itself is exercised by benchmarks/bench_fee_sets_gpu.py
on a GPU machine (the README's speed table).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.runspec import load_run_spec
from quant_core.sim.amm import g3m_fee_kernel
from quant_core.sim.amm.g3m_fee_kernel import KernelCosts, applies, fee_path_sets
from quant_core.sim.amm.g3m_fee_steps import _Static
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees
from quant_core.sim.engines import fee_kernel_runs
from quant_core.sim.settings import static_settings
from quant_core.sim.window import plan_window

T, N, SETS = 300, 3, 5


@pytest.fixture(autouse=True)
def _scan_on_the_cpu(monkeypatch):
    """What the kernel replaces on a GPU is the scan: the CPU's compiled loop (g3m_fee_native) stays out."""
    monkeypatch.setenv("QUANT_NATIVE_FEES", "0")


def _paths(seed: int = 0):
    rng = np.random.default_rng(seed)
    vol = np.array([0.01, 0.012, 0.0005])
    prices = np.exp(np.cumsum(rng.normal(0, 1, (T, N)) * vol, axis=0)) * [40_000.0, 2_000.0, 1.0]
    logits = np.cumsum(rng.normal(0, 0.01, (SETS, T, N)), axis=1)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return prices, weights, 1e6 * weights[:, 0] / prices[0]


CASES = {
    "fees only": {"fees": 0.003},
    "gas, arb fees, noise": {"fees": 0.003, "gas_cost": 0.5, "arb_fees": 0.001, "noise_trader_ratio": 0.3},
    "one arbitrage per step, 1% fee": {"fees": 0.01, "weight_arbitrage": False},
}


def _static(kw: dict) -> _Static:
    return _Static(n=N, fee_mode="positive", noise=kw.get("noise_trader_ratio", 0.0) != 0.0, costs=True,
                   tolerance=1e-9, do_arb=True, has_trades=False, weight_arb=kw.get("weight_arbitrage", True))


@pytest.mark.parametrize("case", CASES)
def test_the_kernel_equals_the_scan(case):
    """Every set's reserves, fee revenue and volume at every minute, to rounding (trades on most minutes)."""
    kw = CASES[case]
    prices, weights, r0 = _paths()
    costs = KernelCosts(kw["fees"], kw.get("gas_cost", 0.0), kw.get("arb_fees", 0.0), kw.get("noise_trader_ratio", 0.0))
    r, f, v = fee_path_sets(jnp.asarray(prices), jnp.asarray(weights), jnp.asarray(r0), static=_static(kw),
                            costs=costs, interpret=True)
    for s in range(SETS):
        scan = g3m_reserves_with_fees(prices, weights[s], r0[s], **kw)
        assert int(np.sum(np.asarray(scan.arb_volume) > 0)) > T // 2  # the check is about trades
        np.testing.assert_allclose(r[s], scan.reserves, rtol=1e-12, atol=0)
        np.testing.assert_allclose(f[s], scan.fee_revenue, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(v[s], scan.arb_volume, rtol=1e-12, atol=1e-9)


def test_per_set_prices_and_padding_to_a_whole_block():
    """Prices per set ([S, T, n]) and a set count that is not a multiple of the block give each set its own path."""
    prices, weights, r0 = _paths(1)
    per_set = np.stack([prices * (1.0 + 0.01 * s) for s in range(SETS)])
    kw = CASES["fees only"]
    r, _, _ = fee_path_sets(jnp.asarray(per_set), jnp.asarray(weights), jnp.asarray(r0), static=_static(kw),
                            costs=KernelCosts(0.003, 0.0, 0.0, 0.0), interpret=True)
    assert r.shape == (SETS, T, N)
    for s in range(SETS):
        scan = g3m_reserves_with_fees(per_set[s], weights[s], r0[s], **kw)
        np.testing.assert_allclose(r[s], scan.reserves, rtol=1e-12, atol=0)


def _gpu(monkeypatch) -> list:
    """Make the fee engine take the kernel (interpreted) as it does on a GPU; returns a list of its batch sizes."""
    calls = []
    real = g3m_fee_kernel.fee_path_sets

    def counted(prices, weights, *args, **kwargs):
        calls.append(weights.shape[0])
        return real(prices, weights, *args, **kwargs)

    monkeypatch.setattr(g3m_fee_kernel, "on_gpu", lambda: True)
    monkeypatch.setattr(g3m_fee_kernel, "fee_path_sets", counted)
    return calls


def test_under_vmap_all_sets_run_as_one_kernel_call(monkeypatch):
    prices, weights, r0 = _paths(2)
    kw = CASES["gas, arb fees, noise"]
    scan = jax.vmap(lambda w, r: g3m_reserves_with_fees(prices, w, r, **kw))(jnp.asarray(weights), jnp.asarray(r0))
    calls = _gpu(monkeypatch)
    kernel = jax.vmap(lambda w, r: g3m_reserves_with_fees(prices, w, r, **kw))(jnp.asarray(weights), jnp.asarray(r0))
    assert calls[-1] == SETS  # (custom_vmap also traces the one-set form for its shapes)
    for a, b in zip(kernel, scan, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kw", [
    {"fees": jnp.float64(0.003)},  # traced fee
    {"fees": 0.003, "protocol_fee_split": 0.5},
    {"fees": 0.003, "invariant_tolerance": 0.0},
    {"fees": 0.003, "trades": np.zeros((T, 3))},
    {"fees": 0.003, "trade_mask": np.ones(T, bool)},
    {"fees": 0.0},
    {"fees": 0.003, "do_arb": False},
], ids=["traced fee", "protocol split", "knife-edge test", "trades", "trade mask", "zero fee", "no arbitrage"])
def test_what_the_kernel_does_not_cover_keeps_the_scan(monkeypatch, kw):
    prices, weights, r0 = _paths(3)
    calls = _gpu(monkeypatch)
    g3m_reserves_with_fees(prices, weights[0], r0[0], **kw)
    assert calls == []


def test_a_derivative_keeps_the_scan(monkeypatch):
    prices, weights, r0 = _paths(4)
    calls = _gpu(monkeypatch)
    grad = jax.grad(lambda p: g3m_reserves_with_fees(p, weights[0], r0[0], fees=0.003).reserves[-1] @ p[-1])(
        jnp.asarray(prices))
    assert calls == [] and bool(jnp.all(jnp.isfinite(grad)))


def test_applies_needs_a_gpu():
    assert not applies(_static({}), KernelCosts(0.003, 0.0, 0.0, 0.0), on_gpu=False)
    assert applies(_static({}), KernelCosts(0.003, 0.0, 0.0, 0.0), on_gpu=True)


def _st(**over):
    spec = load_run_spec({"rule": "momentum", "tokens": ["BTC", "ETH", "USDC"], "startDateString": "2023-01-31",
                          "endDateString": "2023-02-02", "fees": 0.003, **over})
    return spec


@pytest.mark.parametrize(("rule", "over", "expected"), [
    ("momentum", {}, True),
    ("momentum", {"fees": 0.0, "gas_cost": 1.0}, False),
    ("momentum", {"do_trades": True}, False),
    ("momentum", {"protocol_fee_split": 0.5}, False),
    ("momentum_fee__momentum", {}, False),
    ("lvr__momentum", {}, False),
    ("cow", {}, False),
])
def test_which_forward_passes_stay_on_a_gpu(rule, over, expected):
    """engines.fee_kernel_runs (run_device's test) agrees with what the engine decides from its own arguments."""
    from quant_core.data.panel import PricePanel

    spec = load_run_spec({"rule": rule, "tokens": ["BTC", "ETH"], "startDateString": "2023-01-02",
                          "endDateString": "2023-01-03", "fees": 0.003, **over})
    ts = np.datetime64("2023-01-01", "ms") + np.arange(3 * 1440) * np.timedelta64(1, "m")
    panel = PricePanel(ts, ("BTC", "ETH"), np.ones((ts.size, 2)), 1, {})
    st = dataclasses.replace(static_settings(spec, plan_window(panel, spec)))
    assert fee_kernel_runs(st) is expected


def test_a_batched_forward_pass_through_the_kernel_equals_the_scan(monkeypatch):
    """The platform's vmapped forward pass (compiled_forward, batched) over two days of minutes: pool values of
    4 parameter sets with the fee path as the kernel equal those with the scan."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_fee_sets_gpu import forward, sets_of
    from bench_minute_year import minute_panel

    panel = minute_panel()
    spec = load_run_spec({"rule": "momentum", "tokens": ["BTC", "ETH", "USDC"], "startDateString": "2023-01-31",
                          "endDateString": "2023-02-02", "fees": 0.003, "max_memory_days": 30,
                          "parameters": {"memory_days": 10, "k_per_day": 20}})
    params = sets_of(spec, 4)
    cpu = jax.devices("cpu")[0]
    scan = forward(panel, spec, params, cpu)
    calls = _gpu(monkeypatch)
    jax.clear_caches()  # the scan's compiled pass would be reused: where the fee path runs is a trace-time choice
    kernel = forward(panel, spec, params, cpu)
    assert calls and calls[-1] == 4
    np.testing.assert_allclose(kernel, scan, rtol=1e-12)


@pytest.mark.parametrize("kw", [CASES["gas, arb fees, noise"], CASES["one arbitrage per step, 1% fee"]],
                         ids=["costs and noise", "one arbitrage per step"])
def test_the_kernel_lowers_to_triton_for_a_gpu(kw):
    """The Pallas program lowers through the Triton backend for CUDA (no GPU needed to lower): a weak-typed
    constant once lowered as float32 there and failed on the GPU ('f64', 'f32') while interpret mode passed."""
    costs = KernelCosts(kw["fees"], kw.get("gas_cost", 0.0), kw.get("arb_fees", 0.0), kw.get("noise_trader_ratio", 0.0))
    prices, weights, r0 = _paths()

    def kernel(p, w, r):
        return fee_path_sets(p, w, r, static=_static(kw), costs=costs, interpret=False)

    lowered = jax.jit(kernel).trace(jnp.asarray(prices), jnp.asarray(weights), jnp.asarray(r0)).lower(
        lowering_platforms=("cuda",))
    assert "g3m_fee_path" in lowered.as_text()
