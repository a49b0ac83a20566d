"""Our forward pass against the reference simulator's own outputs on the same minute prices.

The data in tests/reference_data/ was made by scripts/record_reference_outputs.py, which runs QuantAMM's
quantammsim (github.com/QuantAMMProtocol/quantammsim, commit 3a111c3a927449e132a4328a5a18d8de2301736f)
in a separate environment (jax 0.10.2, numpy 2.4.6, CPU, x64): `do_run_on_historic_data` with the
fingerprint and raw parameters recorded per case in reference_cases.json, on prices_gbm_minutes.parquet
(seeded minute GBM for BTC, ETH, PAXG and a mean-reverting USDC, rounded to float32 values; 14 days of
warm-up, then 2024-01-01 .. 2024-03-01 evaluated, 86,400 minutes). reference_outputs.npz holds the
reference's value, weights (R_i p_i / V) and reserves at every `sample_every`-th minute of the run and
at its last minute. rvr__ spreads and index_market_cap supplies are constants per token, recorded in
the index and handed to the reference in place of its packaged data.

Each case runs our simulator (`simulate`, spec from `load_run_spec` on the same fingerprint dict plus
`parameters` in our user units) on the same price file and compares: at zero fees to 1e-9 relative
value, at 0.3% fees to 1e-6 (weights to the same absolute tolerance). With fees the G3M cases were
recorded twice (see the script's docstring): `tol1e-9` sets the slack argument of the reference's
arbitrage test to our default invariant tolerance (post >= pre (1 - 1e-9)) and must match; `strict` is
the reference as it is, whose test post >= pre is settled by float rounding, so it drops profitable
trades: compared with the same default run of ours, those cases are expected to fail (xfail, strict).
Other expected failures name the reference's behaviour that we do not follow (XFAIL below);
test_reference_quirks_modes shows that the engines' reference_quirks=True reproduce it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from quant_core.data.panel import panel_from_long_prices
from quant_core.data.price_file import read_long_prices
from quant_core.runspec import load_run_spec
from quant_core.sim.amm.cow import cow_reserves
from quant_core.sim.amm.gyroscope import gyroscope_reserves
from quant_core.sim.resolve import initial_weights
from quant_core.sim.simulate import simulate
from quant_core.sim.window import plan_window, sorted_panel_rows

DATA = Path(__file__).resolve().parents[1] / "reference_data"
INDEX = json.loads((DATA / "reference_cases.json").read_text())
CASES = INDEX["cases"]

pytestmark = [
    pytest.mark.slow,  # ~30 compilations, about a minute on 2 cores
    pytest.mark.filterwarnings("ignore:learnable_bounds_settings.freeze_bounds"),  # bounded__: fixed bounds here
]

# keys of the reference's fingerprint that our spec does not take as they are (none so far)
_REFERENCE_ONLY: tuple[str, ...] = ()

_STRICT = ("the reference's arbitrage test is post-trade invariant >= pre-trade with slack 0 "
           "(optimal_n_pool_arb.py:414, parallelised_optimal_trade_sifter), which the optimal trade meets only up to "
           "rounding, so it drops profitable trades; ours admits post >= pre (1 - 1e-9) and matches the tol1e-9 "
           "recording")
XFAIL: dict[str, str] = {
    **{name: _STRICT for name in CASES if name.endswith("@strict")},
    "cow@fees0.003": (
        "the reference's one-arbitrageur path takes the less profitable of its two closed-form trades even inside "
        "the fee band (cow_reserves.py:426-435); ours trades only outside it (reference_quirks=True reproduces it: "
        "see test_reference_quirks_modes)"),
    "gyroscope@fees0": (
        "the reference does not clip the price to [alpha, beta]: outside the range its step gives negative reserves "
        "and is dropped, so the pool stays where it was instead of moving to the edge (gyroscope_reserves.py:158-159); "
        "the prices leave the range on day 41. Before that the reference drifts from the exact path by up to 3.4e-7, "
        "recomputing the invariant from its reserves every minute"),
    "gyroscope@fees0.003": (
        "as gyroscope@fees0, and the reference's fee path compares the fee band with R1/R0 instead of the pool's "
        "marginal price (gyroscope_reserves.py:253 overwrites the computed price)"),
}


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "reference_outputs.npz") as z:
        return {k: z[k] for k in z.files}


@functools.cache
def _panel(tokens: tuple[str, ...]):
    return panel_from_long_prices(read_long_prices(DATA / INDEX["prices"]), list(tokens))


def _spec(meta: dict):
    fp = {k: v for k, v in meta["fingerprint"].items() if k not in _REFERENCE_ONLY}
    return load_run_spec({**fp, "parameters": meta["parameters"] or None})


def _aux(meta: dict, spec, panel) -> dict[str, np.ndarray]:
    """The series the reference read through its loaders (constant per token), in our layout."""
    aux = {}
    window = plan_window(panel, spec)
    if "spread" in meta:  # per minute of the run
        aux["spread"] = np.tile([meta["spread"][t] for t in spec.sorted_tokens], (window.n_steps, 1))
    if "circulating_supply" in meta:  # per price row: market cap = price x supply
        supply = np.array([meta["circulating_supply"][t] for t in spec.sorted_tokens])
        aux["market_cap"] = sorted_panel_rows(panel, spec) * supply
    return aux


_RUNS: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _run(meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our values [T], weights R p / V [T, n] and reserves [T, n]; one run per fingerprint and
    parameters (a strict case and its tol1e-9 twin share it)."""
    key = json.dumps([meta["fingerprint"], meta["parameters"]], sort_keys=True)
    if key not in _RUNS:
        spec = _spec(meta)
        panel = _panel(tuple(meta["tokens"]))
        res = simulate(panel, spec, aux=_aux(meta, spec, panel))
        _RUNS[key] = res.values, res.reserves * res.prices / res.values[:, None], res.reserves
    return _RUNS[key]


def _params(name):
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", [_params(n) for n in sorted(CASES)])
def test_matches_reference_outputs(name, reference):
    meta = CASES[name]
    values, weights, reserves = _run(meta)  # strict cases too: our default engine (invariant tolerance 1e-9)
    rows = reference["rows"]
    assert values.shape[0] == meta["n_rows"]
    ref_v = reference[f"{name}/value"]
    ref_w = reference[f"{name}/weights"]
    rtol = 1e-9 if meta["fees"] == 0 else 1e-6
    rel = np.max(np.abs(values[rows] / ref_v - 1))
    dw = np.max(np.abs(weights[rows] - ref_w))
    print(f"{name}: max rel value diff {rel:.3e}, max weight diff {dw:.3e}")
    np.testing.assert_allclose(values[rows], ref_v, rtol=rtol, atol=0)
    np.testing.assert_allclose(weights[rows], ref_w, rtol=0, atol=rtol)
    np.testing.assert_allclose(reserves[rows], reference[f"{name}/reserves"], rtol=rtol, atol=0)


@pytest.mark.parametrize("name", ["cow@fees0.003", "gyroscope@fees0", "gyroscope@fees0.003"])
def test_reference_quirks_modes(name, reference):
    """The two-token engines' reference_quirks=True reproduce what the reference does where we differ on purpose."""
    meta = CASES[name]
    spec = _spec(meta)
    panel = _panel(tuple(meta["tokens"]))
    window = plan_window(panel, spec)
    prices = sorted_panel_rows(panel, spec)[window.start_row : window.end_row]
    p = {k: np.asarray(v, dtype=np.float64).reshape(-1)[0] for k, v in meta["parameters"].items()}
    if meta["rule"] == "cow":
        w0 = initial_weights(spec)
        reserves = cow_reserves(prices, spec.initial_pool_value * w0 / prices[0], weights=w0, fees=spec.fees,
                                arb_quality=p["arb_quality"], reference_quirks=True)
    else:
        reserves = gyroscope_reserves(prices, spec.initial_pool_value, alpha=p["alpha"], beta=p["beta"], lam=p["lam"],
                                      phi=p["phi"], fees=spec.fees, reference_quirks=True)
    reserves = np.asarray(reserves)
    rows = reference["rows"]
    values = np.sum(reserves * prices, axis=1)
    rel = np.max(np.abs(values[rows] / reference[f"{name}/value"] - 1))
    print(f"{name} (reference_quirks): max rel value diff {rel:.3e}")
    rtol = 1e-6
    if meta["fees"] == 0:
        # both recompute the invariant from the reserves every minute (which drifts from the exact path by
        # up to 3.4e-7 here), the reference with the paper's discriminant, which cancels, ours without the
        # cancellation: the two roundings part by ~3e-9 over the 86,400 minutes where XLA compiles for AVX2; for
        # AVX-512 (this machine, 2026-12-03) its vectorised kernels round differently and the two drifts part by
        # up to 4e-7 (`XLA_FLAGS=--xla_cpu_max_isa=AVX2` gives back 3e-9): the bound is the drift's own size
        rtol = 1e-6 if meta["rule"] == "gyroscope" else 1e-9
    np.testing.assert_allclose(values[rows], reference[f"{name}/value"], rtol=rtol, atol=0)
    np.testing.assert_allclose(reserves[rows], reference[f"{name}/reserves"], rtol=rtol, atol=0)
