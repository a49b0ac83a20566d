"""The issue-3 speed figures: a momentum pool, 3 tokens, one year of minute prices, warm, in-process.

    .venv/bin/python benchmarks/bench_minute_year.py [--repeats 5] [--batch 64]

Prints, each as the best of --repeats warm calls (compile time separately):
  zero-fee jitted forward pass (weights, reserves, values at every minute)
  the daily-objective path (daily_log_sharpe of one parameter set)
  the 0.3%-fee jitted forward pass (the sequential arbitrage scan)
  the whole `simulate` call on an in-memory price panel (zero fees, and with fees)
  throughput with --batch parameter sets vmapped (zero fees and with fees), and the same sets as one batch per
    search thread scored at once on threads (as a grid or random search scores its batches:
    quant_core.train.threads), with the ratio
The reference simulator on this work (issue 3): 0.065 s zero-fee pass, 0.024 s objective-only,
2.45 s with 0.3% fees. On a CPU the fee rows run the compiled C++ loop (quant_core/sim/amm/g3m_fee_native.py)
and the zero-fee rows the compiled growth (g3m_growth_native.py); QUANT_NATIVE_FEES=0 / QUANT_NATIVE_GROWTH=0 in the
environment measure XLA's versions instead.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.resolve import initial_weights, resolve_params
from quant_core.sim.settings import static_settings
from quant_core.sim.simulate import compiled_forward, run_device, simulate
from quant_core.sim.window import plan_window, sorted_panel_rows
from quant_core.train.objective import PoolObjective
from quant_core.train.threads import search_threads

WARM_DAYS = 30
YEAR_MINUTES = 365 * 1440
FEE_SETS_GOAL_S = 2.0  # issue 19: 64 parameter sets with 0.3 % fees over one year of minutes, 2 cores


def minute_panel(seed: int = 0) -> PricePanel:
    """GBM minute prices (BTC-, ETH-, USDC-like volatilities) for 30 warm-up days + one year."""
    rng = np.random.default_rng(seed)
    n = (WARM_DAYS + 365) * 1440 + 1
    vol = np.array([0.6, 0.8, 0.01]) / np.sqrt(525_600)
    logp = np.cumsum(rng.normal(0, 1, (n, 3)) * vol, axis=0) + np.log([40_000.0, 2_000.0, 1.0])
    ts = np.datetime64("2023-01-01", "ms") + np.arange(n) * np.timedelta64(1, "m")
    return PricePanel(ts, ("BTC", "ETH", "USDC"), np.exp(logp), 1, {})


def spec_for(fees: float):
    return load_run_spec({"rule": "momentum", "tokens": ["BTC", "ETH", "USDC"], "startDateString": "2023-01-31",
                          "endDateString": "2024-01-31", "fees": fees, "max_memory_days": 30,
                          "parameters": {"memory_days": 10, "k_per_day": 20}})


def best_of(fn, repeats: int) -> tuple[float, float]:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, min(times)


def forward_call(panel, spec, batch: int | None = None):
    window = plan_window(panel, spec)
    st = static_settings(spec, window)
    rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
    params = {k: jnp.asarray(v) for k, v in resolve_params(spec).items()}
    if batch:
        rng = np.random.default_rng(1)
        params = {k: jnp.asarray(v * rng.uniform(0.5, 2.0, (batch, 1))) for k, v in params.items()}
    fn = compiled_forward(st, batched=bool(batch))
    w0, v0 = jnp.asarray(initial_weights(spec)), jnp.float64(spec.initial_pool_value)

    def call():
        with run_device(st, sets=batch or 1):  # placed as simulate and the objective place it
            return fn(rows, params, w0, v0, {})

    return call, window.n_steps


def on_threads(call, threads: int) -> list:
    """`call` once on each of `threads` threads at the same time."""
    with ThreadPoolExecutor(threads) as pool:
        return [f.result() for f in [pool.submit(call) for _ in range(threads)]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    panel = minute_panel()
    print(f"backend={jax.default_backend()} devices={jax.devices()}")
    for fees in (0.0, 0.003):
        spec = spec_for(fees)
        call, steps = forward_call(panel, spec)
        first, warm = best_of(call, args.repeats)
        print(f"fees={fees}: jitted forward pass over {steps:,} minutes: {warm:.4f} s warm (first call {first:.2f} s)")
        first, warm = best_of(lambda s=spec: simulate(panel, s).values, args.repeats)
        print(f"fees={fees}: whole simulate() on in-memory prices: {warm:.4f} s warm (first call {first:.2f} s)")
        call, _ = forward_call(panel, spec, args.batch)
        first, warm = best_of(call, max(1, args.repeats // 2))
        goal = f"; {warm / FEE_SETS_GOAL_S:.2f}x issue 19's {FEE_SETS_GOAL_S:g} s for 64 sets with fees" \
            if fees and args.batch == 64 else ""
        print(f"fees={fees}: {args.batch} parameter sets vmapped: {warm:.3f} s warm ({args.batch / warm:.1f} sets/s, "
              f"{args.batch * steps / warm / 1e6:.1f} M set-minutes/s; first call {first:.2f} s{goal})")
        threads = search_threads()
        if threads > 1:
            part, _ = forward_call(panel, spec, args.batch // threads)
            _, split = best_of(partial(on_threads, part, threads), max(1, args.repeats // 2))
            print(f"fees={fees}: the same as {threads} batches of {args.batch // threads} on {threads} threads: "
                  f"{split:.3f} s warm ({warm / split:.2f}x)")
    obj = PoolObjective(panel, spec_for(0.0))
    one = {k: v[None] for k, v in resolve_params(spec_for(0.0)).items()}
    first, warm = best_of(lambda: obj(one), args.repeats)
    print(f"fees=0.0: daily_log_sharpe objective of one parameter set: {warm:.4f} s warm (first call {first:.2f} s)")


if __name__ == "__main__":
    main()
