"""Issue-8 speed figures: the liquidity-sweep backtester on ~3 months of 5m candles (~26,000 bars).

    .venv/bin/python benchmarks/bench_backtest.py [--batch 4096] [--days 91] [--quick] [--engines events,scan]

Prints:
  backtests per second of one vmapped call at several batch sizes (random combinations: every one its
    own signal set, the hardest case), warm, with the compile time of the first call;
  (each for every --engines value: metrics from trade to trade, `trade_events`, or the bar scan, and for the scan
  every --unroll value: bars per iteration of its inner scan, backtest.BAR_UNROLL)
  the whole 201,600-combination grid of the seed plan (10 lookbacks x 5 pierce depths x 6 volume
    thresholds x 4 stop multiples x 7 reward:risk ratios x 4 holding limits x 2 ATR periods x 3 trend
    filters) through `train` (method grid): seconds and backtests per second, table included; once with one
    search thread and once with the default (one per CPU: quant_core.train.threads), and their ratio.
The seed plan estimated 50 ms per backtest, 2.8 hours for this grid on one market. Goals: issue 8, under 2 minutes
on a 2-core CPU and 10 s on a GPU; issue 19, 25 s on 2 cores and 1.5 s on a GPU. `--quick` runs a 576-point grid.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta

import jax
import numpy as np

import quant_core  # noqa: F401  (float64)
import quant_core.strategies.backtest as backtest_module
from quant_core.data.market_candles import MarketCandles
from quant_core.data.synthetic import synthetic_candles
from quant_core.runspec import load_run_spec
from quant_core.strategies.backtest import Costs, backtest
from quant_core.strategies.market import strategy_bars
from quant_core.train.threads import THREADS_ENV, search_threads
from quant_core.train.trainer import train

START = datetime(2024, 1, 1, tzinfo=UTC)
GRID = {
    "lookback": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
    "pierce_depth": [0.0005, 0.001, 0.002, 0.003, 0.005],
    "volume_spike_threshold": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "stop_atr_mult": [0.5, 1.0, 1.5, 2.0],
    "rr_ratio": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "max_hold_bars": [6, 12, 24, 48],
    "atr_period": [14, 21],
    "sma_period": [0, 100, 200],
    "volume_period": [20],
}
QUICK = {**GRID, "lookback": [20, 50], "pierce_depth": [0.001, 0.003], "rr_ratio": [1.5, 3.0],
         "max_hold_bars": [12, 48], "volume_spike_threshold": [1.5, 2.5, 3.5], "stop_atr_mult": [1.0, 2.0]}


def random_combos(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"lookback": rng.integers(10, 101, n), "pierce_depth": rng.uniform(0.0005, 0.005, n),
            "volume_spike_threshold": rng.uniform(1.5, 4, n), "volume_period": rng.integers(5, 51, n),
            "stop_atr_mult": rng.uniform(0.5, 2, n), "rr_ratio": rng.uniform(1, 4, n),
            "max_hold_bars": rng.integers(6, 97, n), "atr_period": rng.choice([14, 21], n),
            "sma_period": rng.choice([0, 50, 100, 200], n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096, help="combinations per vmapped call in the grid")
    ap.add_argument("--days", type=int, default=91)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,default",
                    help="comma-separated search thread counts for the grid (default: 1 and one per CPU)")
    ap.add_argument("--grid-runs", type=int, default=1,
                    help="runs of the grid per thread count (the second and later find their shapes compiled)")
    ap.add_argument("--sizes", default="1024,4096,16384", help="comma-separated batch sizes of the one-call rows")
    ap.add_argument("--engines", default="events" if backtest_module.event_engine() else "scan",
                    help="comma-separated: events (from trade to trade), scan (bar by bar); default: the backend's")
    ap.add_argument("--unroll", default=str(backtest_module.bar_unroll()),
                    help="comma-separated bars per iteration of the inner scan to measure (default: the backend's)")
    args = ap.parse_args()
    end = START + timedelta(days=args.days)
    candles = synthetic_candles(start=START - timedelta(days=1), end=end, timeframe="5m", seed=7)
    bars = strategy_bars(candles, "5m", START, end, 1)
    n_bars = bars.n_days * bars.bars_per_day
    costs = Costs(0.001, 0.0002, 1.0, 10_000.0)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {n_bars} bars of 5m "
          f"({args.days} days) + {bars.window_start} warm-up bars")
    for engine in args.engines.split(","):
        backtest_module.EVENT_ENGINE = engine == "events"
        for unroll in [int(u) for u in args.unroll.split(",")] if engine == "scan" else [None]:
            backtest_module.BAR_UNROLL = unroll
            print(f"-- {engine}" + ("" if unroll is None else f", inner scan unrolled {unroll} bar(s) per iteration"))
            one_calls(bars, costs, [1024] if args.quick else [int(b) for b in args.sizes.split(",")])
            run_grid(candles, end, args)


def one_calls(bars, costs, sizes: list[int]) -> None:
    """One vmapped call per batch size: compile time, then the warm time of two fresh batches."""
    for b in sizes:
        combos = random_combos(b)
        t0 = time.perf_counter()
        backtest(bars, combos, costs, metrics=("net_profit",))
        first = time.perf_counter() - t0
        times = []
        for seed in (1, 2):
            combos = random_combos(b, seed)
            t0 = time.perf_counter()
            backtest(bars, combos, costs, metrics=("net_profit",))
            times.append(time.perf_counter() - t0)
        warm = min(times)
        print(f"random combinations, batch {b:6d}: first call {first:6.2f} s (compile incl.), warm {warm:6.2f} s "
              f"= {b / warm:8.0f} backtests/s ({warm / b * 1e3:.3f} ms each)")


def run_grid(candles, end, args) -> None:
    """The whole grid through `train` (method grid), once per --threads value."""
    grid = QUICK if args.quick else GRID
    spec = load_run_spec({
        "strategy": "liquidity_sweep", "tokens": ["BTC"], "startDateString": f"{START:%Y-%m-%d}",
        "endDateString": f"{end:%Y-%m-%d}", "max_memory_days": 1, "return_val": "net_profit",
        "strategy_settings": {"min_trades": 0},
        "optimisation_settings": {"method": "grid", "val_fraction": 0,
                                  "search_settings": {"parameter_space": grid, "batch_size": args.batch}}})
    size = int(np.prod([len(v) for v in grid.values()]))
    took = {}
    for threads in [t for t in args.threads.split(",") for _ in range(args.grid_runs)]:
        if threads == "default":
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = threads
        label = f"{search_threads()} search thread(s)" + (" (default)" if threads == "default" else "")
        label += f", run {sum(k.startswith(label) for k in took) + 1}" if args.grid_runs > 1 else ""
        t0 = time.perf_counter()
        result = train(MarketCandles(candles, "5m"), spec)
        total = took[label] = time.perf_counter() - t0
        print(f"grid of {size:,} combinations, batch {args.batch}, {label}: {total:.1f} s end to end "
              f"({size / total:,.0f} backtests/s; search loop {result.seconds:.1f} s = "
              f"{result.details['evaluations_per_second']:,.0f}/s); best net profit {result.objective:.2f} with "
              f"{result.details['top'][0]['train_n_trades']:.0f} trades")
    if len(took) > 1:
        (a, ta), (b, tb) = list(took.items())[0], list(took.items())[-1]
        print(f"grid: {a} / {b} = {ta / tb:.2f}x")
    print(f"seed plan estimate for the same grid: {size * 0.05 / 3600:.1f} h at 50 ms per backtest")


if __name__ == "__main__":
    main()
