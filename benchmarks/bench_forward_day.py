"""Forward evaluation of one day for every universe with a version, on the platform's own state (run the demo
first: `bash scripts/demo.sh`). Goal (issue 16): <= 1 s per universe on 2 cores.

    QUANT_HOME=~/.quant .venv/bin/python benchmarks/bench_forward_day.py [--universe NAME ...]

For each universe: `cold` is the first sync in a fresh process (imports done; compilation included, what a
Dagster run process pays; with the persistent compilation cache warm after the first run), `warm` the same sync
again (what the next day costs once compiled shapes are cached).
Prints seconds and the ratio to the 1 s goal, measured in this run.
"""

from __future__ import annotations

import argparse
import time

GOAL_S = 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--universe", action="append")
    args = ap.parse_args()
    from upath import UPath

    from quant_assets.io import PartitionCandles
    from quant_assets.registry import current_registry
    from quant_core.jax_cache import enable_compilation_cache
    from quant_core.live.sync import sync_universe
    from quant_core.paths import quant_home
    from quant_core.store import ConfigurationStore

    print(f"JAX compilation cache: {enable_compilation_cache()} (as the forward asset uses it)")
    registry = current_registry()
    store = ConfigurationStore()
    source = PartitionCandles(UPath(str(quant_home() / "ohlcv")))
    names = args.universe or [u.name for u in registry.universes]
    print(f"store {store.url}, candles {source.root}")
    print(f"{'universe':34s} {'versions':>8s} {'last day':>10s} {'cold s':>7s} {'warm s':>7s} {'warm/goal':>9s}")
    warm_total, n = 0.0, 0
    for name in names:
        universe = registry.universe(name)
        if not store.list_configurations(universe_key=name):
            continue
        times = []
        for _ in range(2):
            t = time.perf_counter()
            result = sync_universe(store, registry, universe, source)
            times.append(time.perf_counter() - t)
        warm_total, n = warm_total + times[1], n + 1
        print(f"{name:34s} {len(result.versions):8d} {result.timeline.last_day or '-':>10s} {times[0]:7.2f} "
              f"{times[1]:7.3f} {times[1] / GOAL_S:9.2f}")
    if n:
        print(f"mean warm seconds per universe: {warm_total / n:.3f} ({n} universes; goal {GOAL_S} s)")
    store.dispose()


if __name__ == "__main__":
    main()
