"""OHLCV candles per (market, day): fetched from the market's source, validated, one Parquet file each.

A run may cover one partition (the daily schedule) or a rectangle of markets x days (a ranged run): each
market is fetched once for the whole range and split into days. Backfills from the UI run one market (or,
when fewer days than markets are selected, one day) per run, at most MAX_PARTITIONS_PER_RUN partitions each:
Dagster splits a market x day selection into one range per value of its smaller dimension whatever the
policy, so the policy says `multi_run` and the backfill dialog's promise holds. One run over a whole
rectangle: `python -m quant_assets.backfill`. A batch that fails validation raises before anything is
written, so good partitions are never replaced by bad data; exchange errors are retried with exponential
backoff (RetryPolicy) on top of the ccxt client's own retries, and a fetch that fails on a later page keeps its
complete pages so the retry (or the next run of the range) continues after them (`resume.py`).
"""


from collections import defaultdict
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from quant_assets.defs.market_data.resume import FetchResume
from quant_assets.partitions import DATE_DIM, MARKET_DIM, beta_api, ohlcv_partitions
from quant_assets.resources import ExchangeResource
from quant_assets.settings import schedule_status
from quant_core.data.schema import timeframe_ms, to_epoch_ms, to_utc
from quant_core.data.validation import CandleValidationError, ms_to_datetime, validate_candles
from quant_core.paths import quant_home
from quant_core.universe import Registry

OHLCV_KEY = dg.AssetKey(["market_data", "ohlcv"])
DAY_MS = 86_400_000
# candles a day should hold; fewer is reported (gap policy fills them downstream), not fatal
COMPLETE_CHECK = "complete_days"
FRESHNESS_CHECK = "fresh_markets"
INGEST_JOB = "ingest_ohlcv"
MAX_PARTITIONS_PER_RUN = 366  # a year of one market per backfill run


def _day(key: str) -> datetime:
    return to_utc(key)


def split_by_day(frame: pl.DataFrame, days: list[str]) -> dict[str, pl.DataFrame]:
    """Rows of `frame` per UTC day (YYYY-MM-DD), for the given days (empty frames where none)."""
    day_col = frame.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%d").alias("_day"))
    return {d: day_col.filter(pl.col("_day") == d).drop("_day") for d in days}


def build_market_data(registry: Registry) -> dg.Definitions:
    partitions = ohlcv_partitions(registry)
    with beta_api():  # backfill_policy is a beta parameter of @asset (Dagster warns when the decorator is built)
        candle_asset = dg.asset(
            key=OHLCV_KEY,
            partitions_def=partitions,
            io_manager_key="ohlcv_io_manager",
            group_name="market_data",
            kinds={"polars", "parquet"},
            backfill_policy=dg.BackfillPolicy.multi_run(MAX_PARTITIONS_PER_RUN),
            retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL,
                                        jitter=dg.Jitter.PLUS_MINUS),
            pool="exchange",
            description="Validated OHLCV candles of one market (exchange.BASE-QUOTE.timeframe) for one UTC day.",
            check_specs=[dg.AssetCheckSpec(COMPLETE_CHECK, asset=OHLCV_KEY,
                                           description="every day holds all its candles (1440 min / timeframe)")],
        )

    resume = FetchResume(quant_home() / "ohlcv_resume")

    def _fetch_resuming(context, source, entry, market_key: str, start: datetime, end: datetime) -> pl.DataFrame:
        """The range's candles, continuing after those an earlier attempt completed (quant_assets.defs.market_data
        .resume); when this attempt fails part-way too, what it completed is kept for the next."""
        kept = resume.load(market_key, start, end)
        begin = start if kept is None else ms_to_datetime(to_epoch_ms(kept["timestamp"].max())
                                                          + timeframe_ms(entry.market.timeframe))
        if kept is not None:
            context.log.info(f"{market_key}: {kept.height} candles kept from an earlier attempt; fetching from "
                             f"{begin:%Y-%m-%d %H:%M} UTC")
        try:
            fetched = source.fetch(entry.market, begin, end) if begin < end else kept.clear()
        except Exception as exc:
            partial = getattr(exc, "partial", None)
            if isinstance(partial, pl.DataFrame) and partial.height:
                both = partial if kept is None else pl.concat([kept, partial])
                resume.keep(market_key, start, both)
                context.log.warning(f"{market_key}: the fetch failed after {both.height} complete candles (up to "
                                    f"{both['timestamp'].max():%Y-%m-%d %H:%M} UTC); they are kept, and the next "
                                    "attempt of this range continues after them")
            raise
        return fetched if kept is None else pl.concat([kept, fetched])

    @candle_asset
    def ohlcv(context: dg.AssetExecutionContext, exchange: ExchangeResource):
        by_market: dict[str, list[str]] = defaultdict(list)
        for key in context.partition_keys:
            dims = partitions.get_partition_key_from_str(key).keys_by_dimension
            by_market[dims[MARKET_DIM]].append(dims[DATE_DIM])
        out: dict[str, pl.DataFrame] = {}
        incomplete, rows = [], 0
        for market_key, days in sorted(by_market.items()):
            entry = registry.market(market_key)
            days = sorted(days)
            start, end = _day(days[0]), _day(days[-1]) + timedelta(days=1)
            fetched = _fetch_resuming(context, exchange.source(entry), entry, market_key, start, end)
            try:
                frame, report = validate_candles(fetched, entry.market.timeframe)
            except CandleValidationError as exc:  # bad data: retrying would fetch the same batch
                resume.clear(market_key, start)
                raise dg.Failure(f"{market_key}: the fetched candles fail validation; nothing was written: {exc}",
                                 allow_retries=False) from exc
            resume.clear(market_key, start)
            per_day = split_by_day(frame, days)
            empty = [d for d, f in per_day.items() if f.height == 0]
            if empty:
                raise dg.Failure(f"{market_key}: the source has no candles for {len(empty)} day(s) "
                                 f"{empty[:5]}{'...' if len(empty) > 5 else ''}; nothing was written",
                                 allow_retries=False)
            expected = DAY_MS // timeframe_ms(entry.market.timeframe)
            incomplete += [f"{d}|{market_key} ({f.height}/{expected})" for d, f in per_day.items()
                           if f.height < expected]
            for d, f in per_day.items():
                out[dg.MultiPartitionKey({MARKET_DIM: market_key, DATE_DIM: d})] = f
            rows += frame.height
            context.log.info(f"{market_key}: {frame.height} candles for {len(days)} day(s) {days[0]} .. {days[-1]}")
        check = dg.AssetCheckResult(check_name=COMPLETE_CHECK, passed=not incomplete,
                                    severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"incomplete_days": len(incomplete), "examples": incomplete[:20]})
        value = next(iter(out.values())) if len(out) == 1 else out
        yield dg.Output(value, metadata={"dagster/row_count": rows, "markets": sorted(by_market),
                                         "days": len(context.partition_keys) // max(len(by_market), 1)})
        yield check

    @dg.asset_check(asset=OHLCV_KEY, name=FRESHNESS_CHECK, blocking=False,
                    description="every registered market has yesterday's (UTC) candles")
    def fresh_markets(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        done = context.instance.get_materialized_partitions(OHLCV_KEY)
        latest: dict[str, str] = {}
        for key in done:
            dims = partitions.get_partition_key_from_str(key).keys_by_dimension
            latest[dims[MARKET_DIM]] = max(latest.get(dims[MARKET_DIM], ""), dims[DATE_DIM])
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        stale = {m.key: latest.get(m.key) for m in registry.markets if latest.get(m.key, "") < yesterday}
        return dg.AssetCheckResult(passed=not stale, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"stale_markets": {k: v or "never" for k, v in stale.items()},
                                             "expected_latest_day": yesterday})

    ingest = dg.define_asset_job(INGEST_JOB, selection=dg.AssetSelection.assets(OHLCV_KEY),
                                 tags={"quant/kind": "ingest"})
    # one run per market for the day that just ended, shortly after midnight UTC (stopped unless QUANT_AUTOMATION)
    ingest_schedule = dg.build_schedule_from_partitioned_job(ingest, hour_of_day=0, minute_of_hour=15,
                                                             default_status=schedule_status())
    return dg.Definitions(assets=[ohlcv], asset_checks=[fresh_markets], jobs=[ingest], schedules=[ingest_schedule])
