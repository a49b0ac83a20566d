"""Forward-pass throughput on the shipped daily prices (minute sub-steps), batched over candidates.

    .venv/bin/python benchmarks/bench_forward.py [--batch 16] [--days 545]
Prints compile time, then steady-state seconds per batched call and candidate-days per second.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from quant_core.data.panel import panel_from_long_prices
from quant_core.data.price_file import read_long_prices, shipped_prices_path
from quant_core.runspec import load_run_spec
from quant_core.train.objective import PoolObjective


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    panel = panel_from_long_prices(read_long_prices(shipped_prices_path()), ["BTC", "ETH", "USDC"])
    spec = load_run_spec({"rule": "momentum", "tokens": ["BTC", "ETH", "USDC"],
                          "startDateString": "2023-01-01", "endDateString": "2024-07-01"})
    obj = PoolObjective(panel, spec)
    rng = np.random.default_rng(0)
    params = {"memory_days": rng.uniform(1, 100, (args.batch, 3)), "k_per_day": rng.uniform(1, 500, (args.batch, 3))}
    t = time.perf_counter()
    obj(params)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        obj(params)
        times.append(time.perf_counter() - t)
    best = min(times)
    days = obj.window.n_steps
    print(f"backend={jax.default_backend()} batch={args.batch} days={days} minutes/candidate={days * 1440}")
    print(f"first call (compile+run) {compile_s:.2f} s; steady state {best * 1e3:.1f} ms per batched call")
    print(f"{args.batch / best:.1f} candidates/s; {args.batch * days / best:,.0f} candidate-days/s; "
          f"{args.batch * days * 1440 / best / 1e6:.1f} M candidate-minutes/s")


if __name__ == "__main__":
    main()
