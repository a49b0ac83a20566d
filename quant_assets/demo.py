"""The demo pipeline, headless: materialise every registered market and universe on the embedded
default (a local Dagster home and the SQLite store under the checkout) and print what was stored.

Runs are recorded in the Dagster home, so `dagster dev` afterwards shows them in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

DAGSTER_HOME_ENV = "DAGSTER_HOME"


def _default_dagster_home() -> Path:
    from quant_core.paths import repo_root

    return (repo_root() or Path.cwd()) / ".dagster_home"


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, or `.dagster_home/` in the checkout, with a dagster.yaml that keeps it local."""
    home = Path(os.environ.get(DAGSTER_HOME_ENV) or _default_dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ[DAGSTER_HOME_ENV] = str(home)
    return home


def run_demo(budget: int | None = None) -> int:
    home = ensure_dagster_home()
    import dagster as dg

    from quant_assets.definitions import build_definitions
    from quant_assets.defs.market_data.assets import OHLCV_KEY
    from quant_assets.partitions import latest_retrain_week
    from quant_assets.registry import current_registry
    from quant_assets.resources import ExchangeResource
    from quant_core.data.schema import to_utc
    from quant_core.reporting import configuration_rows, format_table
    from quant_core.store import ConfigurationStore

    registry = current_registry()
    defs = build_definitions()
    assets = list(defs.assets)
    resources = dict(defs.resources)
    instance = dg.DagsterInstance.get()
    print(f"Dagster home: {home}")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    # candles: every market x day the sources cover, in one single-run backfill
    exchange = ExchangeResource()
    last_day = min(exchange.source(m).fetch(m.market)["timestamp"].max() for m in registry.markets)
    last_day = to_utc(last_day).replace(hour=0, minute=0, second=0, microsecond=0)  # of the last candle
    keys = sorted(m.key for m in registry.markets)
    first_key = f"{to_utc(registry.partitions_start):%Y-%m-%d}|{keys[0]}"
    last_key = f"{last_day:%Y-%m-%d}|{keys[-1]}"
    result = dg.materialize(assets, selection=[OHLCV_KEY], run_config=quiet, instance=instance, resources=resources,
                            tags={"dagster/asset_partition_range_start": first_key,
                                  "dagster/asset_partition_range_end": last_key}, raise_on_error=False)
    print(f"candles {first_key} .. {last_key}: {'ok' if result.success else 'FAILED'}", flush=True)
    if not result.success:
        return 1
    # retrains: each universe's latest week whose candles are all in
    for universe in registry.universes:
        week = latest_retrain_week(registry, universe, last_day + timedelta(days=1))
        run_config = dict(quiet)
        if budget:
            cfg = {"config": {"budget": budget}}
            run_config["ops"] = {f"{universe.name}__{a}": cfg
                                 for a in ("trained_parameters", "walk_forward_report", "configuration")}
        result = dg.materialize(assets, selection=dg.AssetSelection.groups(universe.name), instance=instance,
                                resources=resources, run_config=run_config, partition_key=week, raise_on_error=False)
        print(f"universe {universe.name}, week {week}: {'ok' if result.success else 'FAILED'} (run {result.run_id})",
              flush=True)
        if not result.success:
            return 1
    store = ConfigurationStore()
    try:
        print(f"\nStored configurations ({store.url}):")
        print(format_table(configuration_rows(store.list_configurations())))
    finally:
        store.dispose()
    print("\nOpen the UI on these runs with:")
    from quant_core.paths import repo_root

    print(f"  cd {repo_root() or Path.cwd()} && DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", "--n-trials", dest="budget", type=int, default=None,
                        help="override the training budget (iterations / trials / candidates) of every universe")
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget < 1:
        parser.error("--budget must be >= 1")
    return run_demo(args.budget)


if __name__ == "__main__":
    sys.exit(main())
