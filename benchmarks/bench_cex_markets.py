"""Issue-8 end-to-end figure: the 24 liquidity-sweep markets retrained on the platform, data to stored
configuration, with a random-search budget.

    .venv/bin/python benchmarks/bench_cex_markets.py [--budget 512]

Runs the demo pipeline (quant_assets.demo) for every `sweep_*` universe of the registry in a fresh
Dagster home, $QUANT_HOME and SQLite store (temporary directories): per universe one single-run backfill
of its candles over the lookback (generated offline: the registry's markets are synthetic), then its
latest retrain week (random search of `budget` candidates on the final training window and in each of
the 3 walk-forward folds, walk-forward report, stored configuration). Prints each universe's seconds,
the total, and the stored configurations. Goal: under 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=512, help="random-search candidates per training")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_cex_")
    os.environ["DAGSTER_HOME"] = os.path.join(tmp, "dagster_home")
    os.environ["QUANT_HOME"] = os.path.join(tmp, "quant")
    os.environ["QUANT_DATABASE_URL"] = f"sqlite:///{os.path.join(tmp, 'configurations.db')}"
    from quant_assets.demo import run_demo
    from quant_assets.registry import current_registry

    names = [u.name for u in current_registry().universes
             if u.spec.kind == "strategy" and u.spec.strategy == "liquidity_sweep"]
    began = time.monotonic()
    code = run_demo(args.budget, names)
    total = time.monotonic() - began
    print(f"\n{len(names)} markets, random search of {args.budget} candidates: {total:.0f} s end to end "
          f"({total / 60:.1f} min; {'ok' if code == 0 else 'FAILED'}); state in {tmp}")


if __name__ == "__main__":
    main()
