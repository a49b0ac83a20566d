"""Retrain when new candles land: one sensor over every universe.

New `ohlcv` materialisations (read from the event log after the sensor's cursor) request the retrain
of each universe whose markets they touch, for its latest complete week, when every candle partition
that week reads exists. The run key `<universe>|<week>` makes it one run per universe and week however
many partitions land (a 30-day x 2-market backfill gives one retrain, not 60); history backfilled
outside that week's lookback requests nothing. Weekly schedules (one per universe) retrain on Monday
whether or not data changed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.partitions import candles_for_retrain, latest_retrain_week, ohlcv_partitions, retrain_partitions
from quant_core.universe import Registry

SENSOR_NAME = "retrain_on_new_candles"


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
    upstream_def = ohlcv_partitions(registry)
    materialized = set(instance.get_materialized_partitions(OHLCV_KEY)) | new_keys
    requests, skipped = [], []
    for universe in registry.universes:
        parts = retrain_partitions(registry, universe)
        week = latest_retrain_week(registry, universe, now)
        if week is None:
            skipped.append(f"{universe.name}: no complete retrain week yet")
            continue
        mapped = candles_for_retrain(universe).get_upstream_mapped_partitions_result_for_partitions(
            parts.subset_with_partition_keys([week]), parts, upstream_def, current_time=now)
        needed = set(mapped.partitions_subset.get_partition_keys())
        if not needed & new_keys:
            continue
        missing = needed - materialized
        if missing:
            skipped.append(f"{universe.name} {week}: waiting for {len(missing)} candle partitions")
            continue
        requests.append(dg.RunRequest(run_key=f"{week}", job_name=f"retrain_{universe.name}", partition_key=week,
                                      tags={"quant/trigger": "new_candles"}))
    return requests, skipped


def build_automation(registry: Registry, retrain_jobs: list) -> dg.Definitions:
    if not retrain_jobs:
        return dg.Definitions()

    @dg.sensor(name=SENSOR_NAME, jobs=retrain_jobs, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="requests a universe's retrain for its latest week when its markets' candles land")
    def retrain_on_new_candles(context: dg.SensorEvaluationContext):
        after = int(context.cursor or 0)
        new_keys, last = _new_candle_keys(context.instance, after)
        if not new_keys:
            return dg.SkipReason("no new candle partitions")
        requests, skipped = retrain_requests(registry, context.instance, new_keys, datetime.now(UTC))
        for line in skipped:
            context.log.info(line)
        return dg.SensorResult(run_requests=requests, cursor=str(last))

    return dg.Definitions(sensors=[retrain_on_new_candles])
