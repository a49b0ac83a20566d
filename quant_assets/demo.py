"""The demo pipeline, headless: materialise every registered market and universe on the embedded
default (a local Dagster home and the SQLite store under the checkout) and print what was stored.

Runs are recorded in the Dagster home, so `dagster dev` afterwards shows them in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def run_demo(n_trials: int | None = None) -> int:
    home = ensure_dagster_home()
    import dagster as dg

    from quant_assets.definitions import build_definitions
    from quant_assets.defs.market_data.assets import CANDLES_KEY
    from quant_assets.registry import current_registry
    from quant_core.reporting import configuration_rows, format_table
    from quant_core.store import ConfigurationStore

    registry = current_registry()
    defs = build_definitions()
    assets = list(defs.assets)
    resources = dict(defs.resources)
    instance = dg.DagsterInstance.get()
    print(f"Dagster home: {home}")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for market in registry.markets:
        result = dg.materialize(assets, selection=[CANDLES_KEY], partition_key=market.key, run_config=quiet,
                                instance=instance, resources=resources, raise_on_error=False)
        print(f"candles {market.key}: {'ok' if result.success else 'FAILED'}", flush=True)
        if not result.success:
            return 1
    for universe in registry.universes:
        run_config = dict(quiet)
        if n_trials:
            cfg = {"config": {"n_trials": n_trials}}
            run_config["ops"] = {f"{universe.name}__trained_parameters": cfg,
                                 f"{universe.name}__walk_forward_report": cfg}
        result = dg.materialize(assets, selection=dg.AssetSelection.groups(universe.name), instance=instance,
                                resources=resources, run_config=run_config, raise_on_error=False)
        print(f"universe {universe.name}: {'ok' if result.success else 'FAILED'} (run {result.run_id})", flush=True)
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
    parser.add_argument("--n-trials", type=int, default=None, help="override the search budget of every universe")
    args = parser.parse_args(argv)
    if args.n_trials is not None and args.n_trials < 1:
        parser.error("--n-trials must be >= 1")
    return run_demo(args.n_trials)


if __name__ == "__main__":
    sys.exit(main())
