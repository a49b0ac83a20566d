"""The reference simulator's half of benchmarks/bench_vs_reference.py; runs only in the reference's venv.

    <reference python> benchmarks/reference_timing.py --inputs IN.npz --output OUT.json [--repeats N]

Times QuantAMM's quantammsim (commit 3a111c3a927449e132a4328a5a18d8de2301736f) on the inputs the benchmark
wrote, each as the best of N warm calls after a compile call, blocking on the result, and writes the times and
final pool values as JSON. Never imported by the project's code or tests (it imports quantammsim).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # record_reference_outputs


def best_of(fn, repeats: int) -> dict:
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return {"first_s": first, "warm_s": min(times), "out": out}


def final_value(reserves, prices) -> tuple[float, int]:
    reserves = np.asarray(reserves, dtype=np.float64)
    return float(np.sum(reserves[-1] * np.asarray(prices)[-1])), int(reserves.shape[0])


def set_invariant_slack(relative: float | None) -> None:
    """The reference's arbitrage test with slack (None: as shipped): scripts/record_reference_outputs.py's patch,
    with JAX's caches cleared so the patched function is compiled."""
    import jax
    from record_reference_outputs import set_invariant_slack as patch

    jax.clear_caches()
    patch(relative)


def kernels(z, repeats: int, results: dict) -> None:
    """The reserve kernels on the benchmark's prices and weights."""
    import jax
    import jax.numpy as jnp
    from quantammsim.pools.G3M.quantamm.quantamm_reserves import (
        _jax_calc_quantAMM_reserve_ratios,
        _jax_calc_quantAMM_reserves_with_fees_using_precalcs,
    )
    from quantammsim.runners.jax_runner_utils import get_sig_variations

    prices, weights, r0 = (jnp.asarray(z[k]) for k in ("prices", "weights", "initial_reserves"))
    fees = float(z["fees"])

    @jax.jit
    def zero_fee(w, p, r):
        # TFMMBasePool.calculate_reserves_zero_fees after its weights (arb_frequency 1)
        ratios = _jax_calc_quantAMM_reserve_ratios(w[:-1], p[:-1], w[1:], p[1:])
        return jnp.vstack([r, r * jnp.cumprod(ratios, axis=0)])

    sig = jnp.array(get_sig_variations(prices.shape[1]))

    def with_fees():
        # as TFMMBasePool.calculate_reserves_with_fees calls it (gas_cost 0, arb_fees 0, no noise traders)
        return _jax_calc_quantAMM_reserves_with_fees_using_precalcs(
            r0, weights, prices, fees=fees, arb_thresh=0.0, arb_fees=0.0, all_sig_variations=sig,
            noise_trader_ratio=0.0, protocol_fee_split=0.0)

    for name, fn in (("kernel_zero_fee", lambda: zero_fee(weights, prices, r0)), ("kernel_fees", with_fees)):
        r = best_of(fn, repeats)
        value, rows = final_value(r.pop("out"), prices)
        results[name] = {**r, "final_value": value, "rows": rows}
        print(f"reference {name}: {r['warm_s']:.4f} s warm (first call {r['first_s']:.2f} s)", flush=True)
    set_invariant_slack(1e-9)
    value, rows = final_value(with_fees(), prices)
    results["kernel_fees_slack1e-9"] = {"final_value": value, "rows": rows}
    set_invariant_slack(None)


def forward_passes(z, repeats: int, results: dict) -> None:
    """The reference's whole jitted forward pass, as do_run_on_historic_data builds and calls it."""
    import jax
    import pandas as pd
    import quantammsim.runners.jax_runners as jr
    from quantammsim.core_simulator.param_utils import memory_days_to_logit_lamb

    fp0 = json.loads(str(z["fingerprint"]))
    tokens = sorted(fp0["tokens"])
    n = len(tokens)
    unix = int(z["first_ms"]) + 60_000 * np.arange(z["panel_prices"].shape[0], dtype=np.int64)
    frame = pd.DataFrame({f"close_{t}": z["panel_prices"][:, i] for i, t in enumerate(tokens)},
                         index=pd.Index(unix, name="unix"))
    lamb = float(memory_days_to_logit_lamb(float(z["memory_days"]), fp0["chunk_period"]))
    params = {"initial_weights_logits": np.zeros(n), "logit_lamb": np.full(n, lamb),
              "logit_delta_lamb": np.zeros(n), "log_k": np.full(n, np.log2(float(z["k_per_day"]))),
              "subsidary_params": []}
    params = {k: (jax.numpy.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in params.items()}

    captured = {}
    plain_jit, plain_clear = jr.jit, jr.clear_caches

    def capturing_jit(fn, *a, **k):
        jitted = plain_jit(fn, *a, **k)

        def call(*args, **kw):
            captured.update(fn=jitted, args=args, kw=kw)
            return jitted(*args, **kw)

        return call

    jr.jit, jr.clear_caches = capturing_jit, lambda: None  # keep the compiled pass for the warm calls
    try:
        for fees in (0.0, float(z["fees"])):
            fp = copy.deepcopy(fp0)
            fp["fees"] = fees
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its date arithmetic
                out = jr.do_run_on_historic_data(fp, params=params, price_data=frame)
            jax.block_until_ready(out["value"])  # it returns before the pass has run
            first = time.perf_counter() - t
            fn, args, kw = captured["fn"], captured["args"], captured["kw"]
            r = best_of(lambda fn=fn, args=args, kw=kw: fn(*args, **kw)["value"], repeats)
            r.pop("out")
            value = np.asarray(out["value"], dtype=np.float64)
            name = "forward_fees" if fees else "forward_zero_fee"
            results[name] = {"first_s": first, "warm_s": r["warm_s"], "final_value": float(value[-1]),
                             "rows": int(value.shape[0])}
            print(f"reference {name}: {r['warm_s']:.4f} s warm (first do_run_on_historic_data {first:.2f} s)",
                  flush=True)
    finally:
        jr.jit, jr.clear_caches = plain_jit, plain_clear


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-forward", action="store_true", help="only the reserve kernels")
    args = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    import quantammsim

    results: dict = {"jax": jax.__version__, "backend": jax.default_backend(), "quantammsim": quantammsim.__file__,
                     "xla_flags": os.environ.get("XLA_FLAGS")}
    with np.load(args.inputs) as z:
        z = {k: z[k] for k in z.files}
    kernels(z, args.repeats, results)
    if not args.no_forward:
        forward_passes(z, args.repeats, results)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
