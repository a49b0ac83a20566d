"""Candles per market, loaded from the market's source into the Parquet candle store."""


import dagster as dg

from quant_assets.partitions import market_partitions
from quant_assets.resources import CandleStoreResource
from quant_core.data.ccxt_source import fetch_incremental
from quant_core.data.price_file import PriceFileSource
from quant_core.data.validation import validate_candles
from quant_core.universe import MarketEntry, Registry

CANDLES_KEY = dg.AssetKey(["market_data", "candles"])


def _source(entry: MarketEntry):
    """The market's CandleSource: its exchange through ccxt, generated candles, or a price file."""
    if entry.source == "ccxt":
        from quant_core.data.ccxt_source import CcxtSource

        return CcxtSource(entry.exchange, entry.exchange_config)
    if entry.source == "synthetic":
        from quant_core.data.synthetic import SyntheticSource

        return SyntheticSource(seed=entry.seed, symbols=(entry.symbol,), exchange=entry.exchange)
    if entry.source == "file":
        return PriceFileSource(entry.path, exchange=entry.exchange, quote=entry.market.quote)
    return PriceFileSource(exchange=entry.exchange, quote=entry.market.quote)


def build_market_data(registry: Registry) -> dg.Definitions:
    partitions = market_partitions(registry)

    @dg.asset(
        key=CANDLES_KEY,
        partitions_def=partitions,
        group_name="market_data",
        kinds={"polars", "parquet"},
        description="Validated OHLCV candles of one market (exchange.BASE-QUOTE.timeframe), stored as Parquet.",
        check_specs=[dg.AssetCheckSpec("no_gaps", asset=CANDLES_KEY, blocking=True,
                                       description="no missing candles between the first and the last")],
    )
    def candles(context: dg.AssetExecutionContext, candle_store: CandleStoreResource) -> dg.MaterializeResult:
        entry = registry.market(context.partition_key)
        store = candle_store.open()
        extra: dict = {}
        if entry.since:  # exchange / generated history: fetch only what is new since the last run
            ingest = fetch_incremental(store, _source(entry), entry.market, start=entry.since)
            extra = {"rows_fetched": ingest.rows_fetched, "rows_added": ingest.rows_added}
            stored = store.read(entry.market)
            report = validate_candles(stored, entry.market.timeframe)[1]
        else:
            report = store.write(entry.market, _source(entry).fetch(entry.market))
        context.log.info(f"{entry.key}: {report.rows} candles {report.first} .. {report.last}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "market": entry.key,
                "symbol": entry.symbol,
                "source": entry.source,
                "path": dg.MetadataValue.path(str(store.path(entry.market))),
                **extra,
                **report.as_metadata(),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_gaps",
                    passed=not report.gaps,
                    metadata={"missing_candles": report.missing_candles},
                )
            ],
        )

    return dg.Definitions(assets=[candles])
