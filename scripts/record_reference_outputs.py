"""Record the reference simulator's outputs on fixed minute prices, as test data for
tests/sim/test_reference_outputs.py.

The reference is QuantAMM's quantammsim (github.com/QuantAMMProtocol/quantammsim), commit
3a111c3a927449e132a4328a5a18d8de2301736f (2026-03-05). This script imports it, so it runs only in a
separate environment that has it installed, never in the project's venv:

    python3 -m venv /work/scratch/refenv
    /work/scratch/refenv/bin/pip install "jax==0.10.2" "numpy==2.4.6" pandas pyarrow scipy optax \
        jsonpickle tqdm optuna matplotlib seaborn plotly "dask[dataframe]" Historic-Crypto bidask
    /work/scratch/refenv/bin/pip install --no-deps -e <extracted quantammsim source at that commit>
    cd <repo root> && /work/scratch/refenv/bin/python scripts/record_reference_outputs.py [CASE ...]

(recorded with Python 3.11.7, jax/jaxlib 0.10.2, numpy 2.4.6, pandas 3.1.1, on the CPU backend, x64 on.)

What it writes under tests/reference_data/:
- prices_gbm_minutes.parquet: the inputs, in the project's long format (timestamp UTC ms, token,
  price_usd): seeded geometric Brownian motion per minute for BTC, ETH and PAXG and a mean-reverting
  USDC around 1, from 2023-12-18 00:00 to 2024-03-03 00:00 UTC inclusive. Each price is rounded to the
  nearest float32 (stored as float64), which keeps the file small; both simulators read these numbers.
- reference_outputs.npz: per case `<case>/value` [K], `<case>/weights` [K, n], `<case>/reserves` [K, n]
  at the rows `rows` (every 180th minute of the run and the last one; tokens in alphabetical order);
  weights are the pool's holdings R_i p_i / V.
- reference_cases.json: per case the rule, tokens, fees, the fingerprint dict handed to
  `do_run_on_historic_data` (before the reference fills its defaults), the raw parameter dict handed
  to it, the same parameters in the project's user units (`parameters`), and the extra series used.

Passing our own series to the reference. rvr__ reads CEX spreads and index_market_cap reads circulating
supplies through the reference's own data loader (get_data_dict with root=None: its packaged files, loaded
without the burn-in pre-slice its prices get, then sliced at the pre-sliced start index); for these runs
the loader in those two modules (hooks/versus_rebalancing.py, pools/G3M/quantamm/index_market_cap_pool.py)
is replaced by one returning the series recorded here: constant per token (so no row alignment question
arises), as many rows as the price data.

Arbitrage with fees. The reference accepts an arbitrage trade only if the post-trade invariant is
>= the pre-trade one with slack 0 (optimal_n_pool_arb.py, parallelised_optimal_trade_sifter passes
slack=0 to calc_optimal_trade_across_signatures), a test the optimal trade meets only up to rounding.
Every G3M fee case (not lvr__/rvr__, hodl, cow and gyroscope, which have no such search) is therefore
recorded twice: as the reference runs (`strict`) and with that function's own `slack` argument set to
-1e-9 x the pre-trade invariant (`tol1e-9`), i.e. post >= pre (1 - 1e-9), the project's default
invariant_tolerance.

Parameters. The per-token values in BASE_CASES are in the project's user units; `reference_params`
turns them into the reference's raw parameters with its own conversions (memory_days_to_logit_lamb,
inverse_squareplus_np, log2 k). Initial weights are softmax(initial_weights_logits) on both sides.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "reference_data"
PRICES_FILE = "prices_gbm_minutes.parquet"
REFERENCE_COMMIT = "3a111c3a927449e132a4328a5a18d8de2301736f"

# ---------------------------------------------------------------------------------------------
# inputs

SEED = 20240101
FIRST = np.datetime64("2023-12-18T00:00", "ms")
N_MINUTES = 76 * 1440 + 1  # 14 days of warm-up, 60 evaluated days, 2 days the reference reads after the end
START = "2024-01-01 00:00:00"
END = "2024-03-01 00:00:00"
# initial price, annual drift, annual volatility
GBM = {"BTC": (42000.0, 0.5, 0.55), "ETH": (2200.0, -0.3, 0.7), "PAXG": (2000.0, 0.1, 0.15)}
USDC_AR, USDC_SD = 0.99, 2e-5  # x_t = 0.99 x_{t-1} + 2e-5 z_t, price 1 + x
SAMPLE_EVERY = 180
TOL = 1e-9
SPREADS = {"BTC": 4e-4, "ETH": 6e-4, "PAXG": 1e-3, "USDC": 1e-4}  # rvr__: fractional CEX spreads
SUPPLY = {"BTC": 19.6e6, "ETH": 120.2e6, "PAXG": 0.25e6, "USDC": 25.0e9}  # index_market_cap


def make_prices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    dt = 1.0 / 525600.0
    out = {}
    for token, (p0, mu, sigma) in GBM.items():
        z = rng.standard_normal(N_MINUTES - 1)
        log_r = (mu - 0.5 * sigma**2) * dt + sigma * math.sqrt(dt) * z
        out[token] = p0 * np.exp(np.concatenate([[0.0], np.cumsum(log_r)]))
    z = rng.standard_normal(N_MINUTES)
    x = np.zeros(N_MINUTES)
    for i in range(1, N_MINUTES):
        x[i] = USDC_AR * x[i - 1] + USDC_SD * z[i]
    out["USDC"] = 1.0 + x
    return {t: v.astype(np.float32).astype(np.float64) for t, v in sorted(out.items())}


def write_prices(prices: dict[str, np.ndarray], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = FIRST + np.arange(N_MINUTES).astype("timedelta64[m]")
    tokens = sorted(prices)
    table = pa.table({
        "timestamp": pa.array(np.tile(stamps, len(tokens)), pa.timestamp("ms", tz="UTC")),
        "token": pa.array(np.repeat(tokens, N_MINUTES)),
        "price_usd": np.concatenate([prices[t] for t in tokens]),
    })
    pq.write_table(table, path, compression="zstd", compression_level=19, use_dictionary=["token"],
                   column_encoding={"timestamp": "DELTA_BINARY_PACKED", "price_usd": "BYTE_STREAM_SPLIT"})


def read_prices(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pandas()
    return {tok: g.sort_values("timestamp")["price_usd"].to_numpy() for tok, g in t.groupby("token")}


def reference_frame(prices: dict[str, np.ndarray], tokens: list[str]):
    """The reference's in-memory price format: index `unix` (ms), columns close_<TOKEN>."""
    import pandas as pd

    unix = (FIRST + np.arange(N_MINUTES).astype("timedelta64[m]")).astype(np.int64)
    frame = pd.DataFrame({f"close_{t}": prices[t] for t in sorted(tokens)}, index=pd.Index(unix, name="unix"))
    return frame


# ---------------------------------------------------------------------------------------------
# cases: rule, tokens, fingerprint extras, parameters in the project's user units

BTC_ETH_USDC = ["BTC", "ETH", "USDC"]
FOUR = ["BTC", "ETH", "PAXG", "USDC"]
ETH_USDC = ["ETH", "USDC"]
LOGITS3 = [0.3, -0.2, 0.1]
LOGITS4 = [0.2, -0.1, 0.0, 0.1]

BASE_CASES = [
    # name, rule, tokens, fingerprint extras, user-unit parameters (alphabetical token order)
    ("momentum", "momentum", BTC_ETH_USDC, {}, {"memory_days": [5.0, 8.0, 3.0], "k_per_day": [30.0, 15.0, 20.0]}),
    ("anti_momentum", "anti_momentum", BTC_ETH_USDC, {},
     {"memory_days": [4.0, 6.0, 2.5], "k_per_day": [10.0, 20.0, 5.0]}),
    ("power_channel", "power_channel", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 7.0, 3.0], "k_per_day": [20.0, 40.0, 10.0], "exponents": [1.5, 2.0, 1.2],
      "pre_exp_scaling": [0.3, 0.5, 0.4]}),
    ("mean_reversion_channel", "mean_reversion_channel", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 7.0, 3.0], "k_per_day": [20.0, 30.0, 10.0], "amplitude": [2.0, 4.0, 1.0],
      "width": [0.5, 0.8, 0.3], "exponents": [1.5, 2.0, 1.2], "pre_exp_scaling": [0.3, 0.5, 0.4]}),
    ("difference_momentum", "difference_momentum", BTC_ETH_USDC, {},
     {"memory_days": [2.0, 3.0, 1.5], "memory_days_2": [8.0, 10.0, 6.0], "k_per_day": [2.0, 3.0, 1.0]}),
    ("min_variance", "min_variance", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 7.0, 4.0], "memory_days_2": [3.0, 3.0, 3.0]}),
    ("balancer", "balancer", BTC_ETH_USDC, {}, {}),
    ("hodl", "hodl", BTC_ETH_USDC, {}, {}),
    ("index_market_cap", "index_market_cap", BTC_ETH_USDC, {}, {"memory_days": [3.0, 3.0, 3.0]}),
    ("cow", "cow", ETH_USDC, {"arb_quality": 0.7}, {"arb_quality": 0.7}),
    ("gyroscope", "gyroscope", ETH_USDC, {},
     {"alpha": 1500.0, "beta": 3200.0, "lam": 5.0, "phi": math.atan(2200.0)}),
    ("lvr__momentum", "lvr__momentum", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 8.0, 3.0], "k_per_day": [30.0, 15.0, 20.0]}),
    ("rvr__momentum", "rvr__momentum", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 8.0, 3.0], "k_per_day": [30.0, 15.0, 20.0]}),
    ("bounded__momentum", "bounded__momentum", BTC_ETH_USDC, {},
     {"memory_days": [5.0, 8.0, 3.0], "k_per_day": [30.0, 15.0, 20.0],
      "min_weights_per_asset": [0.2, 0.1, 0.1], "max_weights_per_asset": [0.6, 0.5, 0.7]}),
    ("momentum_4tok", "momentum", FOUR, {},
     {"memory_days": [5.0, 8.0, 6.0, 3.0], "k_per_day": [30.0, 15.0, 25.0, 20.0]}),
]
FEES = (0.0, 0.003)


def case_list():
    """(case name, base name, rule, tokens, fees, arbitrage variant, fingerprint extras, parameters)."""
    out = []
    for base, rule, tokens, extra, params in BASE_CASES:
        for fees in FEES:
            variants = ["none"] if fees == 0.0 else ["strict", "tol1e-9"]
            if rule.split("__")[0] in ("lvr", "rvr") or rule in ("hodl", "cow", "gyroscope"):
                variants = ["none"]  # no G3M arbitrage search (a rebalancing portfolio, or the pool's own)
            for v in variants:
                name = f"{base}@fees{fees:g}" + ("" if v == "none" else f"@{v}")
                out.append((name, base, rule, tokens, fees, v, extra, params))
    return out


def fingerprint(rule: str, tokens: list[str], fees: float, extra: dict) -> dict:
    logits = LOGITS3 if len(tokens) == 3 else (LOGITS4 if len(tokens) == 4 else [0.4, 0.0])
    fp = {
        "rule": rule,
        "tokens": list(tokens),
        "startDateString": START,
        "endDateString": END,
        "endTestDateString": None,
        "chunk_period": 1440,
        "weight_interpolation_period": 1440,
        "maximum_change": 3e-4,
        "max_memory_days": 365,
        "initial_pool_value": 1_000_000.0,
        "fees": fees,
        "gas_cost": 0.0,
        "arb_fees": 0.0,
        "initial_weights_logits": logits,
        "minimum_weight": None,
    }
    fp.update(extra)
    return fp


# ---------------------------------------------------------------------------------------------
# the reference's raw parameters from user units (its own conversion functions)


def reference_params(rule: str, fp: dict, user: dict) -> dict:
    import jax.numpy as jnp
    from quantammsim.core_simulator.param_utils import inverse_squareplus_np, memory_days_to_logit_lamb

    base = rule.split("__")[-1]
    n = len(fp["tokens"])
    cp = fp["chunk_period"]

    def vec(x):
        return np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()

    def logit_lamb(days):
        return np.asarray([float(memory_days_to_logit_lamb(float(d), cp)) for d in vec(days)])

    p: dict = {"initial_weights_logits": vec(fp["initial_weights_logits"])}
    if base in ("momentum", "anti_momentum"):
        p.update(logit_lamb=logit_lamb(user["memory_days"]), logit_delta_lamb=np.zeros(n),
                 log_k=np.log2(vec(user["k_per_day"])))
    elif base in ("power_channel", "mean_reversion_channel"):
        p.update(logit_lamb=logit_lamb(user["memory_days"]), logit_delta_lamb=np.zeros(n),
                 sp_k=inverse_squareplus_np(vec(user["k_per_day"])),
                 sp_exponents=inverse_squareplus_np(vec(user["exponents"])),
                 sp_pre_exp_scaling=inverse_squareplus_np(vec(user["pre_exp_scaling"])))
        if base == "mean_reversion_channel":
            # the reference's amplitude is squareplus(sp_amplitude) x memory_days; ours is the product
            p.update(sp_amplitude=inverse_squareplus_np(vec(user["amplitude"]) / vec(user["memory_days"])),
                     sp_width=inverse_squareplus_np(vec(user["width"])))
    elif base == "difference_momentum":
        # the (memory_days_1, memory_days_2, k) form drives the rule (k x max of the two memories);
        # the logit form is read only by the readouts the reference adds to its output (momentum's)
        ll = logit_lamb(user["memory_days"])
        p.update(memory_days_1=vec(user["memory_days"]), memory_days_2=vec(user["memory_days_2"]),
                 k=vec(user["k_per_day"]), logit_lamb=ll, logit_delta_lamb=logit_lamb(user["memory_days_2"]) - ll,
                 log_k=np.log2(vec(user["k_per_day"])))
    elif base == "min_variance":
        ll = logit_lamb(user["memory_days"])
        p.update(logit_lamb=ll, logit_delta_lamb=logit_lamb(user["memory_days_2"]) - ll)
    elif base == "index_market_cap":
        p.update(logit_lamb=logit_lamb(user["memory_days"]), logit_delta_lamb=np.zeros(n))
    elif base == "gyroscope":
        p = {"alpha": np.float64(user["alpha"]), "beta": np.float64(user["beta"]), "lam": np.float64(user["lam"]),
             "phi": np.float64(user["phi"])}
    if rule.startswith("bounded__"):
        p.update(min_weights_per_asset=vec(user["min_weights_per_asset"]),
                 max_weights_per_asset=vec(user["max_weights_per_asset"]))
    p["subsidary_params"] = []
    return {k: (jnp.asarray(v) if isinstance(v, np.ndarray | np.floating) else v) for k, v in p.items()}


# ---------------------------------------------------------------------------------------------
# patches: our series through the reference's loaders; the slack of its invariant test


def patch_loaders(prices_rows: int, tokens: list[str], spread_on: bool, supply_on: bool):
    """Replace get_data_dict in versus_rebalancing (rvr__) and index_market_cap_pool with one that
    returns our constant series, one row per price row the simulation receives."""
    import quantammsim.hooks.versus_rebalancing as vr
    import quantammsim.pools.G3M.quantamm.index_market_cap_pool as imc

    toks = sorted(tokens)
    spread = np.tile([SPREADS[t] for t in toks], (prices_rows, 1))
    supply = np.tile([SUPPLY[t] for t in toks], (prices_rows, 1))
    zeros = np.zeros_like(spread)

    def fake(*args, **kwargs):
        out = {}
        if kwargs.get("return_slippage"):
            assert spread_on
            out.update(spread=spread, annualised_daily_volatility=zeros, daily_volume=zeros)
        if kwargs.get("return_supply"):
            assert supply_on
            out["supply"] = supply
        return out

    vr.get_data_dict = fake
    imc.get_data_dict = fake


_ORIGINAL_SIGNATURE_TRADES = None


def set_invariant_slack(relative: float | None):
    """None: the reference as it is (slack 0). Else its slack argument = -relative x pre-trade invariant."""
    import jax
    import jax.numpy as jnp
    import quantammsim.pools.G3M.optimal_n_pool_arb as arb

    global _ORIGINAL_SIGNATURE_TRADES
    if _ORIGINAL_SIGNATURE_TRADES is None:
        _ORIGINAL_SIGNATURE_TRADES = arb.calc_optimal_trade_across_signatures
    original = _ORIGINAL_SIGNATURE_TRADES
    if relative is None:
        arb.calc_optimal_trade_across_signatures = original
        return

    @jax.jit
    def with_slack(initial_reserves, initial_weights, *rest):
        pre = jnp.prod(initial_reserves**initial_weights)
        return original(initial_reserves, initial_weights, *rest[:-1], -relative * pre)

    arb.calc_optimal_trade_across_signatures = with_slack


# ---------------------------------------------------------------------------------------------


def run_case(prices, name, base, rule, tokens, fees, variant, extra, user):
    import jax
    from quantammsim.runners.jax_runners import do_run_on_historic_data

    fp = fingerprint(rule, tokens, fees, extra)
    passed = copy.deepcopy(fp)
    params = reference_params(rule, fp, user)
    frame = reference_frame(prices, tokens)
    # constant series: as long as the prices, so any slice the reference takes of them fits
    patch_loaders(N_MINUTES, tokens, rule.startswith("rvr__"), rule.endswith("index_market_cap"))
    set_invariant_slack(TOL if variant == "tol1e-9" else None)
    jax.clear_caches()
    out = do_run_on_historic_data(fp, params=params, price_data=frame)
    value = np.asarray(out["value"], dtype=np.float64)
    reserves = np.asarray(out["reserves"], dtype=np.float64)
    pr = np.asarray(out["prices"], dtype=np.float64)
    weights = reserves * pr / value[:, None]
    rows = np.unique(np.concatenate([np.arange(0, len(value), SAMPLE_EVERY), [len(value) - 1]]))
    raw = {k: (np.asarray(v).tolist() if hasattr(v, "shape") else v) for k, v in params.items()}
    meta = {
        "base": base, "rule": rule, "tokens": sorted(tokens), "fees": fees, "arbitrage_check": variant,
        "fingerprint": passed, "reference_params": raw, "parameters": user,
        "n_rows": int(len(value)),
    }
    if rule.startswith("rvr__"):
        meta["spread"] = {t: SPREADS[t] for t in sorted(tokens)}
    if rule.endswith("index_market_cap"):
        meta["circulating_supply"] = {t: SUPPLY[t] for t in sorted(tokens)}
    arrays = {"value": value[rows], "weights": weights[rows], "reserves": reserves[rows]}
    return rows, meta, arrays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    ap.add_argument("--prices-only", action="store_true")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / PRICES_FILE
    write_prices(make_prices(), path)
    if args.prices_only:
        return 0
    prices = read_prices(path)
    index_path, npz_path = OUT / "reference_cases.json", OUT / "reference_outputs.npz"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"cases": {}}
    arrays = dict(np.load(npz_path)) if npz_path.exists() else {}
    index.update(reference="QuantAMMProtocol/quantammsim", commit=REFERENCE_COMMIT, prices=PRICES_FILE,
                 sample_every=SAMPLE_EVERY, start=START, end=END, invariant_tolerance=TOL,
                 versions={"python": sys.version.split()[0], "jax": jax.__version__, "numpy": np.__version__,
                           "pandas": __import__("pandas").__version__})
    known = {c[0] for c in case_list()}
    index["cases"] = {k: v for k, v in index["cases"].items() if k in known}
    arrays = {k: v for k, v in arrays.items() if k == "rows" or k.split("/")[0] in known}
    for case in case_list():
        if args.cases and case[0] not in args.cases and case[1] not in args.cases:
            continue
        print(f"--- {case[0]}", file=sys.stderr, flush=True)
        rows, meta, arr = run_case(prices, *case)
        index["cases"][case[0]] = meta
        arrays["rows"] = rows
        for k, v in arr.items():
            arrays[f"{case[0]}/{k}"] = v
        print(f"    final value {arr['value'][-1]:.6f}", file=sys.stderr, flush=True)
        # saved after every case, so a failing case keeps the others
        index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        np.savez_compressed(npz_path, **arrays)
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(npz_path, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
