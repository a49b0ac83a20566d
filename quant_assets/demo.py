"""The demo pipeline, headless: materialise every registered market and universe on the embedded
default (a local Dagster home and the SQLite store under the checkout) and print what was stored.

Runs are recorded in the Dagster home, so `dagster dev` afterwards shows them in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

DAGSTER_HOME_ENV = "DAGSTER_HOME"


def _default_dagster_home() -> Path:
    from quant_core.paths import repo_root

    return (repo_root() or Path.cwd()) / ".dagster_home"


OLD_HOME_CONFIG = "telemetry:\n  enabled: false\n"  # what homes made before the pooled event log hold


def home_config(home: Path) -> str:
    """Telemetry off; Dagster's SQLite layout with the pooled event log (quant_assets.instance_storage)."""
    return (OLD_HOME_CONFIG + "event_log_storage:\n  module: quant_assets.instance_storage\n"
            f"  class: PooledSqliteEventLogStorage\n  config:\n    base_dir: {home / 'history' / 'runs'}\n")


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, or `.dagster_home/` in the checkout, with a dagster.yaml that keeps it local (written when
    absent, or brought up to date when it is the one an earlier version wrote; a file edited by hand is kept)."""
    home = Path(os.environ.get(DAGSTER_HOME_ENV) or _default_dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() == OLD_HOME_CONFIG:
        cfg.write_text(home_config(home))
    os.environ[DAGSTER_HOME_ENV] = str(home)
    return home


def demo_day(registry) -> datetime:
    """The day the demo retrains at: the last day every bounded source (shipped prices, files) covers;
    synthetic and exchange markets can serve any day, so alone they give yesterday (UTC)."""
    from quant_assets.resources import ExchangeResource
    from quant_core.data.schema import to_utc

    bounded = [m for m in registry.markets if m.source in ("shipped", "file")]
    if not bounded:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    exchange = ExchangeResource()
    last = min(exchange.source(m).fetch(m.market)["timestamp"].max() for m in bounded)
    return to_utc(last).replace(hour=0, minute=0, second=0, microsecond=0)  # of the last candle


def land_candles(keys: set[str], registry, defs, instance, quiet) -> bool:
    """Materialise the candle partitions not yet there: their days x markets in one ranged run per group of
    markets adjacent in the registry (quant_assets.backfill)."""
    from quant_assets.backfill import backfill_candles
    from quant_assets.defs.market_data.assets import OHLCV_KEY

    keys = keys - set(instance.get_materialized_partitions(OHLCV_KEY))
    if not keys:
        return True
    dates = sorted(k.split("|")[0] for k in keys)
    markets = sorted({k.split("|")[1] for k in keys})
    results = backfill_candles(defs, instance, dates[0], dates[-1], markets, [m.key for m in registry.markets],
                               run_config=quiet)
    ok = all(r.success for r in results)
    print(f"  candles {dates[0]} .. {dates[-1]} of {', '.join(markets)}: {'ok' if ok else 'FAILED'}", flush=True)
    return ok


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """'k of N universes' with the time so far and an ETA (the mean time per universe so far times those left:
    universes differ in size, so the estimate firms up as the demo goes)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.clock = total, clock
        self.began = clock()

    def line(self, done: int) -> str:
        if done == 0:
            return f"1 of {self.total} universes: starting"
        elapsed = self.clock() - self.began
        left = "" if done >= self.total else f"; about {_clock(elapsed / done * (self.total - done))} left"
        return f"{done} of {self.total} universes done in {_clock(elapsed)}{left}"


def run_demo(budget: int | None = None, only: list[str] | None = None) -> int:
    home = ensure_dagster_home()
    import dagster as dg

    from quant_assets.definitions import build_definitions
    from quant_assets.defs.live.assets import LIVE_JOB
    from quant_assets.partitions import DATE_DIM, MARKET_DIM, latest_retrain_week, retrain_candle_keys
    from quant_assets.registry import current_registry
    from quant_core.live.status import current_stages, live_status
    from quant_core.reporting import configuration_rows, format_live, format_table
    from quant_core.store import ConfigurationStore

    registry = current_registry()
    universes = [registry.universe(name) for name in only] if only else registry.universes
    defs = build_definitions()
    assets = list(defs.assets)
    resources = dict(defs.resources)
    instance = dg.DagsterInstance.get()
    print(f"Dagster home: {home}")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    day = demo_day(registry)
    progress = Progress(len(universes))
    for k, universe in enumerate(universes):
        began = time.monotonic()
        week = latest_retrain_week(registry, universe, day + timedelta(days=1))
        print(f"[{k + 1} of {len(universes)}] {universe.name}, week {week}", flush=True)
        # its candles (markets x lookback days) in one ranged run, unless already there
        if not land_candles(retrain_candle_keys(universe, week), registry, defs, instance, quiet):
            return 1
        run_config = dict(quiet)
        if budget:
            cfg = {"config": {"budget": budget}}
            run_config["ops"] = {f"{universe.name}__{a}": cfg
                                 for a in ("trained_parameters", "walk_forward_report", "configuration")}
        result = dg.materialize(assets, selection=dg.AssetSelection.groups(universe.name), instance=instance,
                                resources=resources, run_config=run_config, partition_key=week, raise_on_error=False)
        if not result.success:
            print(f"universe {universe.name}, week {week}: FAILED (run {result.run_id})")
            return 1
        # the days after the week, up to the demo day: their candles land and the forward run reads them all
        week_end = datetime.fromisoformat(week).replace(tzinfo=UTC) + timedelta(days=7)
        after = {str(dg.MultiPartitionKey({MARKET_DIM: m, DATE_DIM: f"{week_end + timedelta(days=i):%Y-%m-%d}"}))
                 for m in set(universe.markets.values()) for i in range((day - week_end).days + 1)}
        forward = ""
        if after and land_candles(after, registry, defs, instance, quiet):
            fwd = dg.materialize(assets, selection=[dg.AssetKey([universe.name, "forward_performance"])],
                                 instance=instance, resources=resources, run_config=quiet,
                                 partition_key=f"{day:%Y-%m-%d}", raise_on_error=False)
            forward = f", forward to {day:%Y-%m-%d}: {'ok' if fwd.success else 'FAILED'}"
        print(f"  retrain: ok{forward} ({time.monotonic() - began:.0f} s, run {result.run_id})", flush=True)
        print(progress.line(k + 1), flush=True)
    # what is live now, as the UI's `live_configurations` asset (its sensor needs the daemon, which the demo does
    # not start): without this run the asset would read "never materialized" after the demo
    live = defs.resolve_job_def(LIVE_JOB).execute_in_process(instance=instance, run_config=quiet,
                                                              raise_on_error=False)
    if not live.success:
        print(f"live_configurations: FAILED (run {live.run_id})")
        return 1
    store = ConfigurationStore()
    try:
        print(f"\nStored configurations ({store.url}):")
        statuses = [live_status(store, u.name) for u in universes]
        stages = {k: v for u in universes for k, v in current_stages(store.timeline_events(u.name)).items()}
        print(format_table(configuration_rows(store.list_configurations(), stages=stages,
                                              live_ids={s.configuration_id for s in statuses})))
        print("\nWhat to trade now (quant configs live):")
        print(format_live([s.to_dict() for s in statuses]))
    finally:
        store.dispose()
    print("\nOpen the UI on these runs with:")
    from quant_core.paths import repo_root

    print(f"  cd {repo_root() or Path.cwd()} && DAGSTER_HOME={home} .venv/bin/dg dev")
    print("Nothing runs there on its own: the schedules and the new-candles sensor start stopped (a deployment "
          "sets QUANT_AUTOMATION=on; README, 'What runs on its own').")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", "--n-trials", dest="budget", type=int, default=None,
                        help="override the training budget (iterations / trials / candidates) of every universe")
    parser.add_argument("--universe", dest="universes", action="append",
                        help="run only this universe (repeatable; default: every universe in the registry)")
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget < 1:
        parser.error("--budget must be >= 1")
    if args.universes:
        from quant_assets.registry import current_registry

        known = [u.name for u in current_registry().universes]
        unknown = sorted(set(args.universes) - set(known))
        if unknown:
            parser.error(f"--universe {unknown}: not in the registry; known: {known}")
    return run_demo(args.budget, args.universes)


if __name__ == "__main__":
    sys.exit(main())
