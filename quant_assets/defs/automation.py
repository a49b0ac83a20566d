"""Retrain and run forward when new candles land: one sensor over every universe.

New `ohlcv` materialisations (read from the event log after the sensor's cursor) request the retrain
of each universe whose markets they touch, for its latest complete week, when every candle partition
that week reads exists. The run key (the week, in the universe's own job) makes it one run per universe and week however
many partitions land (a 30-day x 2-market backfill gives one retrain, not 60); history backfilled
outside that week's lookback requests nothing. Weekly schedules (one per universe) retrain on Monday
whether or not data changed; a week requested once (by the schedule or the sensor) is not requested again.

The same new partitions request each universe's `forward_performance` for every day on which all of its
markets' candles have now landed (run key `forward|<day>`), and a run-status sensor refreshes
`live_configurations` after every forward or retrain run.

The schedules and the new-candles sensor start stopped unless QUANT_AUTOMATION=on (quant_assets.settings: a
deployment turns them on; the demo home leaves them off); the run-status sensor is always on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from quant_assets.defs.live.assets import forward_job_name, forward_partitions
from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.partitions import DATE_DIM, MARKET_DIM, latest_retrain_week, ohlcv_partitions, retrain_candle_keys
from quant_assets.settings import sensor_status
from quant_core.universe import Registry

SENSOR_NAME = "retrain_on_new_candles"
LIVE_SENSOR_NAME = "refresh_live_after_runs"


def _new_candle_keys(instance: dg.DagsterInstance, after: int) -> tuple[set[str], int]:
    keys: set[str] = set()
    cursor = None
    last = after
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=OHLCV_KEY, after_storage_id=after), limit=1000, cursor=cursor)
        for record in result.records:
            last = max(last, record.storage_id)
            if record.partition_key:
                keys.add(record.partition_key)
        if not result.has_more:
            return keys, last
        cursor = result.cursor


def retrain_requests(registry: Registry, instance: dg.DagsterInstance, new_keys: set[str],
                     now: datetime) -> tuple[list[dg.RunRequest], list[str]]:
    """The retrains new candle partitions call for, and why others were skipped."""
    materialized = set(instance.get_materialized_partitions(OHLCV_KEY)) | new_keys
    requests, skipped = [], []
    for universe in registry.universes:
        week = latest_retrain_week(registry, universe, now)
        if week is None:
            skipped.append(f"{universe.name}: no complete retrain week yet")
            continue
        needed = retrain_candle_keys(universe, week)
        if not needed & new_keys:
            continue
        missing = needed - materialized
        if missing:
            skipped.append(f"{universe.name} {week}: waiting for {len(missing)} candle partitions")
            continue
        if already_requested(instance, f"retrain_{universe.name}", week):
            continue
        requests.append(dg.RunRequest(run_key=f"{week}", job_name=f"retrain_{universe.name}", partition_key=week,
                                      tags={"quant/trigger": "new_candles"}))
    return requests, skipped


def already_requested(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    """Whether a run of `job_name` for `partition` exists (queued, running or done; failed ones do not count),
    so a week the schedule retrained is not retrained again by the sensor, nor the other way round."""
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition}))
    return any(r.dagster_run.status != dg.DagsterRunStatus.FAILURE for r in records)


def forward_requests(registry: Registry, instance: dg.DagsterInstance, new_keys: set[str]) -> list[dg.RunRequest]:
    """A forward run per universe and newly complete day (all of its markets' candles of the day have landed)."""
    parts = ohlcv_partitions(registry)
    new_days = {parts.get_partition_key_from_str(k).keys_by_dimension[DATE_DIM] for k in new_keys}
    landed: dict[str, set[str]] = {}
    for key in set(instance.get_materialized_partitions(OHLCV_KEY)) | new_keys:
        dims = parts.get_partition_key_from_str(key).keys_by_dimension
        if dims[DATE_DIM] in new_days:
            landed.setdefault(dims[DATE_DIM], set()).add(dims[MARKET_DIM])
    requests = []
    for universe in registry.universes:
        first = forward_partitions(registry, universe).start.strftime("%Y-%m-%d")
        needed = set(universe.markets.values())
        for day in sorted(new_days):
            if day >= first and needed <= landed.get(day, set()):
                requests.append(dg.RunRequest(run_key=f"forward|{day}", job_name=forward_job_name(universe.name),
                                              partition_key=day, tags={"quant/trigger": "new_candles"}))
    return requests


def build_automation(registry: Registry, retrain_jobs: list, forward_jobs: list, live_job) -> dg.Definitions:
    if not retrain_jobs:
        return dg.Definitions()

    @dg.sensor(name=SENSOR_NAME, jobs=retrain_jobs + forward_jobs, minimum_interval_seconds=60,
               default_status=sensor_status(),  # stopped unless QUANT_AUTOMATION=on (quant_assets.settings)
               description="requests a universe's retrain for its latest week, and its forward performance for each "
               "newly complete day, when its markets' candles land")
    def retrain_on_new_candles(context: dg.SensorEvaluationContext):
        after = int(context.cursor or 0)
        new_keys, last = _new_candle_keys(context.instance, after)
        if not new_keys:
            return dg.SkipReason("no new candle partitions")
        requests, skipped = retrain_requests(registry, context.instance, new_keys, datetime.now(UTC))
        for line in skipped:
            context.log.info(line)
        requests += forward_requests(registry, context.instance, new_keys)
        return dg.SensorResult(run_requests=requests, cursor=str(last))

    # on everywhere: it follows runs someone (or the automation above) started, so it never runs for want of data
    @dg.run_status_sensor(name=LIVE_SENSOR_NAME, run_status=dg.DagsterRunStatus.SUCCESS,
                          monitored_jobs=retrain_jobs + forward_jobs, request_job=live_job,
                          default_status=dg.DefaultSensorStatus.RUNNING,
                          description="refreshes live_configurations after a forward or retrain run succeeds")
    def refresh_live_after_runs(context: dg.RunStatusSensorContext):
        return dg.RunRequest(run_key=context.dagster_run.run_id)

    return dg.Definitions(sensors=[retrain_on_new_candles, refresh_live_after_runs])
