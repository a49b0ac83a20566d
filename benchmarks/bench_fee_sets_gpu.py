"""Issue-19 GPU row: many parameter sets with 0.3 % fees over a year of minutes, the GPU against its host CPU.

    .venv/bin/python benchmarks/bench_fee_sets_gpu.py [--sets 1024] [--check-days 30]

The momentum pool of bench_minute_year (3 tokens, one year of minutes, 0.3 % fees), --sets parameter sets:
  on the GPU: one vmapped forward pass, the fee path as one Pallas kernel (quant_core.sim.amm.g3m_fee_kernel);
  on the host CPU: the same sets as one batch per core scored at once on threads, the fee path as the scan
    (as a search on that machine's CPU scores them);
with the ratio, the compile time of each, and the largest relative difference between the two machines' pool
values. First, the fee engine alone on the GPU (the kernel) against the CPU (the scan) over --check-days days for
8 random weight paths. Needs a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from bench_minute_year import minute_panel, spec_for

from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees
from quant_core.sim.resolve import initial_weights, resolve_params
from quant_core.sim.settings import static_settings
from quant_core.sim.simulate import compiled_forward, run_device
from quant_core.sim.window import plan_window, sorted_panel_rows


def sets_of(spec, n_sets: int) -> dict[str, np.ndarray]:
    """n_sets parameter sets around the spec's (each value times a factor in [0.5, 2])."""
    rng = np.random.default_rng(1)
    return {k: np.asarray(v) * rng.uniform(0.5, 2.0, (n_sets, 1)) for k, v in resolve_params(spec).items()}


def forward(panel, spec, params: dict[str, np.ndarray], device) -> tuple:
    """Pool values [S, T] of the parameter sets on `device` (placed as the platform places them there)."""
    window = plan_window(panel, spec)
    st = static_settings(spec, window)
    fn = compiled_forward(st, batched=True)
    with jax.default_device(device), run_device(st, sets=len(next(iter(params.values())))):
        rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
        values = fn(rows, {k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(initial_weights(spec)),
                    jnp.float64(spec.initial_pool_value), {})[0]
        return np.asarray(jax.block_until_ready(values))


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="host CPU threads (one batch each); 0: the GPU alone")
    ap.add_argument("--gpu-also", default="32", help="comma-separated smaller batches timed on the GPU too")
    ap.add_argument("--check-days", type=int, default=30)
    args = ap.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit(f"needs a GPU (backend here: {jax.default_backend()})")
    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    print(f"GPU {gpu.device_kind}; host CPU {os.cpu_count()} cores, {args.threads} search threads")
    panel = minute_panel()
    check_kernel(panel, args.check_days, gpu, cpu)
    spec = spec_for(0.003)
    params = sets_of(spec, args.sets)
    first, _ = timed(lambda: forward(panel, spec, params, gpu))
    gpu_s, on_gpu = timed(lambda: forward(panel, spec, params, gpu))
    print(f"GPU: {args.sets} sets, one year of minutes, 0.3 % fees: {gpu_s:.2f} s warm (first call {first:.1f} s)")
    for small in (int(x) for x in args.gpu_also.split(",") if x):
        part = {k: v[:small] for k, v in params.items()}
        first, _ = timed(lambda part=part: forward(panel, spec, part, gpu))
        warm, _ = timed(lambda part=part: forward(panel, spec, part, gpu))
        print(f"GPU: {small} sets: {warm:.2f} s warm (first call {first:.1f} s)")
    if args.threads < 1:
        return
    chunks = np.array_split(np.arange(args.sets), args.threads)

    def on_cpu() -> np.ndarray:
        with ThreadPoolExecutor(args.threads) as pool:
            parts = [pool.submit(forward, panel, spec, {k: v[c] for k, v in params.items()}, cpu) for c in chunks]
            return np.concatenate([f.result() for f in parts])

    first, _ = timed(on_cpu)
    cpu_s, on_host = timed(on_cpu)
    print(f"host CPU: the same sets as {args.threads} batches on {args.threads} threads: {cpu_s:.2f} s warm "
          f"(first call {first:.1f} s)")
    print(f"GPU / host CPU: {cpu_s / gpu_s:.1f}x faster on the GPU")
    print(f"largest relative difference of the pool values, GPU vs CPU: {np.max(np.abs(on_gpu / on_host - 1)):.2e}")


def check_kernel(panel, days: int, gpu, cpu) -> None:
    """g3m_reserves_with_fees on the GPU (the kernel) against the CPU (the scan) for 8 random weight paths over
    `days` days of the panel's minutes, with gas, arbitrage fees and noise traders: largest relative difference."""
    t = days * 1440
    prices = panel.prices[:t]
    rng = np.random.default_rng(3)
    logits = np.cumsum(rng.normal(0.0, 0.002, (8, t, 3)), axis=1)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    reserves0 = 1e6 * weights[:, 0] / prices[0]
    kw = {"fees": 0.003, "gas_cost": 0.5, "arb_fees": 0.0005, "noise_trader_ratio": 0.2}

    def run(device):
        with jax.default_device(device):
            out = jax.vmap(lambda w, r: g3m_reserves_with_fees(jnp.asarray(prices), w, r, **kw))(
                jnp.asarray(weights), jnp.asarray(reserves0))
            return [np.asarray(x) for x in jax.block_until_ready(out)]

    (r_gpu, f_gpu, v_gpu), (r_cpu, f_cpu, v_cpu) = run(gpu), run(cpu)
    print(f"kernel (GPU) vs scan (CPU), 8 sets over {days} days with gas, arb fees, noise: reserves "
          f"{np.max(np.abs(r_gpu / r_cpu - 1)):.2e} relative, fee revenue {np.max(np.abs(f_gpu - f_cpu)):.2e}, "
          f"volume {np.max(np.abs(v_gpu - v_cpu)):.2e} absolute (pool value 1e6)")


if __name__ == "__main__":
    main()
