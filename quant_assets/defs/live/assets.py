"""The living lifecycle in Dagster: per universe a daily `forward_performance` asset (the live version and its
candidates run on each landed day, breakers read, stages moved; quant_core.live), and one `live_configurations`
asset with what is live now and each universe's forward equity against its benchmark.

Each forward day re-derives the universe's whole timeline from the store and the candle partitions
(quant_core.live.sync), so days backfilled in any order, and retrains landing late, end in the same timeline.
"""


import math
from datetime import datetime, timedelta

import dagster as dg

from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.io import CandleIOManager, PartitionCandles
from quant_assets.metadata import markdown_table, number, png_markdown
from quant_assets.partitions import candles_of_period, first_retrain_week
from quant_assets.resources import ConfigurationStoreResource
from quant_core.jax_cache import enable_compilation_cache
from quant_core.live.breakers import BREAKERS
from quant_core.live.status import live_periods, live_status
from quant_core.live.sync import sync_universe
from quant_core.plots import forward_plot
from quant_core.tunables import tunable_for
from quant_core.universe import Registry, Universe

LIVE_KEY = dg.AssetKey(["live_configurations"])
LIVE_JOB = "refresh_live_configurations"
LIVE_GROUP = "live"  # every universe's forward performance and the live overview


def forward_job_name(universe: str) -> str:
    return f"forward_{universe}"


def forward_partitions(registry: Registry, universe: Universe) -> dg.DailyPartitionsDefinition:
    """Days from the end of the universe's first retrain week: its first version is available then."""
    first = datetime.fromisoformat(first_retrain_week(registry, universe)) + timedelta(days=7)
    return dg.DailyPartitionsDefinition(start_date=first.strftime("%Y-%m-%d"), timezone="UTC")


def candle_source(io_manager: CandleIOManager) -> PartitionCandles:
    # the IO manager's own base path (UPathIOManager keeps it as _base_path): one place says where candles are
    return PartitionCandles(io_manager._base_path)


def sync(source: PartitionCandles, store_resource: ConfigurationStoreResource, registry: Registry,
         universe: Universe):
    enable_compilation_cache()  # a run is a fresh process: reuse the kernels earlier runs compiled
    store = store_resource.open()
    try:
        result = sync_universe(store, registry, universe, source)
        return result, live_status(store, universe.name)
    finally:
        store.dispose()


def reading_rows(readings: dict) -> list[dict]:
    return [{"breaker": k, "reading": r["value"], "limit": r["limit"], "tripped": r["tripped"],
             "on trip": r["action"], "detail": r["detail"]} for k, r in readings.items()]


def build_forward_assets(registry: Registry, universe: Universe) -> dg.Definitions:
    name = universe.name
    key = [name, "forward_performance"]
    partitions = forward_partitions(registry, universe)
    market_keys = [universe.markets[t] for t in universe.spec.tokens]
    unit = "trades" if tunable_for(universe.spec).trades else "days"

    @dg.asset(
        key=key, group_name=LIVE_GROUP, partitions_def=partitions, kinds={"sql"},
        deps=[dg.AssetDep(OHLCV_KEY, partition_mapping=candles_of_period())],
        tags={"quant/kind": "forward", "quant/universe": name},
        description=f"The live configuration of {name} (and its newest candidates) run on each landed day after "
        "its training window, positions and pool state carried across days; the day's return, value, trades and "
        f"circuit-breaker readings are stored per configuration and day; stages move on forward {unit}.",
        check_specs=[dg.AssetCheckSpec("circuit_breakers", asset=key,
                                       description="no circuit breaker tripped or paused the live configuration")],
    )
    def forward_performance(context: dg.AssetExecutionContext, config_store: ConfigurationStoreResource,
                            ohlcv_io_manager: dg.ResourceParam[CandleIOManager]):
        day = context.partition_key
        source = candle_source(ohlcv_io_manager)
        missing = [m for m in market_keys if day not in source.present_days([m], day)]
        if missing:
            raise dg.Failure(f"{name} {day}: the candles of {missing} for that day have not landed; materialise "
                             f"market_data/ohlcv for them first (the sensor requests this day once they land)")
        result, status = sync(source, config_store, registry, universe)
        timeline = result.timeline
        if result.versions and (timeline.last_day is None or timeline.last_day < day) and \
                min(f"{v.available:%Y-%m-%d}" for v in result.versions) <= day:
            raise dg.Failure(f"{name} {day}: the timeline stops before this day, at {timeline.pending} (candles of "
                             "that day are missing for one of its markets): backfill that day first")
        todays = [r for r in timeline.records if f"{r.day:%Y-%m-%d}" == day]
        events = [e for e in timeline.events if f"{e.day:%Y-%m-%d}" == day]
        live = next((r for r in todays if r.role == "live"), None)
        trips = [e for e in events if e.kind == "trip"]
        pauses = [e for e in events if e.kind == "pause"]
        check = dg.AssetCheckResult(
            check_name="circuit_breakers", passed=not (trips or pauses),
            severity=dg.AssetCheckSeverity.ERROR if trips else dg.AssetCheckSeverity.WARN,
            metadata={"tripped": "; ".join(e.reason for e in trips + pauses) or "none",
                      **({"readings": markdown_table(reading_rows(live.readings))} if live else {})})
        return dg.MaterializeResult(metadata={
            "live_configuration": live.configuration_id if live else "none",
            "stage": status.stage or "none",
            "day_return": number(math.expm1(live.log_return)) if live else "none",
            "records": markdown_table([{"configuration": r.configuration_id, "role": r.role,
                                        "log_return": r.log_return, "value": r.value,
                                        "benchmark_log_return": r.benchmark_log_return, "trades": r.n_trades}
                                       for r in todays]),
            "events": markdown_table([{"configuration": e.configuration_id, "kind": e.kind,
                                       "stage": str(e.to_stage) if e.to_stage else "", "reason": e.reason}
                                      for e in events]),
            "forward_days_of_live": status.forward_days, "forward_return_of_live":
                number(status.forward_return) if status.forward_return is not None else "none",
            "timeline_through": timeline.last_day or "none",
        }, check_results=[check])

    job = dg.define_asset_job(forward_job_name(name), selection=dg.AssetSelection.assets(key),
                              tags={"quant/kind": "forward", "quant/universe": name})
    return dg.Definitions(assets=[forward_performance], jobs=[job])


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _periods_for_plot(store, universe: str) -> list[dict]:
    periods = []
    records = store.forward_records(universe)
    for p in live_periods(store.timeline_events(universe)):
        mine = [r for r in records if r.configuration_id == p.configuration_id and r.role == "live"
                and f"{r.day:%Y-%m-%d}" >= p.since and (p.until is None or f"{r.day:%Y-%m-%d}" < p.until)]
        if mine:
            periods.append({"configuration_id": p.configuration_id, "days": [f"{r.day:%Y-%m-%d}" for r in mine],
                            "log_returns": [r.log_return for r in mine],
                            "benchmark_log_returns": [r.benchmark_log_return for r in mine]})
    return periods


def build_live_overview(registry: Registry) -> dg.Definitions:
    if not registry.universes:
        return dg.Definitions()

    @dg.asset(key=LIVE_KEY, group_name=LIVE_GROUP, kinds={"sql"},
              description="What to trade now: per universe the live configuration, its stage, forward return, "
              "Sharpe and drawdown, and each circuit breaker's reading against its limit; a plot per universe of "
              "the live forward equity against its benchmark. Refreshed after every forward or retrain run.")
    def live_configurations(config_store: ConfigurationStoreResource) -> dg.MaterializeResult:
        store = config_store.open()
        try:
            statuses = [live_status(store, u.name) for u in registry.universes]
            plots = {u.name: forward_plot(u.name, _periods_for_plot(store, u.name), tunable_for(u.spec).benchmark)
                     for u in registry.universes}
        finally:
            store.dispose()
        rows = [{"universe": s.universe, "configuration": s.configuration_id or "none", "stage": s.stage or "",
                 "live since": s.live_since or "", "forward days": s.forward_days, "forward trades": s.forward_trades,
                 "forward return": s.forward_return, "Sharpe": s.forward_sharpe, "max drawdown": s.max_drawdown,
                 "paused": s.paused}
                for s in statuses]
        breakers = [{"universe": s.universe, "breaker": k, "reading": _fmt(v["value"]), "limit": v["limit"],
                     "tripped": v["tripped"], "on trip": v["action"]}
                    for s in statuses for k, v in s.breakers.items() if BREAKERS[k].action != "live_only"]
        live_plots = "\n\n".join(f"### {u}\n{png_markdown(p, u).value}" for u, p in plots.items()
                                 if any(s.universe == u and s.configuration_id for s in statuses))
        return dg.MaterializeResult(metadata={
            "live": markdown_table(rows),
            "breakers": markdown_table(breakers),
            "n_live": sum(1 for s in statuses if s.configuration_id),
            "forward_equity": dg.MetadataValue.md(live_plots or "(nothing is live yet)"),
            "how_to_trade": dg.MetadataValue.md("`quant configs live` lists this table; `quant configs export "
                                                "--live UNIVERSE` gives the live configuration as JSON."),
        })

    job = dg.define_asset_job(LIVE_JOB, selection=dg.AssetSelection.assets(LIVE_KEY))
    return dg.Definitions(assets=[live_configurations], jobs=[job])
