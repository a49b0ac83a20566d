"""Candles per market, loaded from the market's source into the Parquet candle store."""


import dagster as dg

from quant_assets.partitions import market_partitions
from quant_assets.resources import CandleStoreResource
from quant_core.data.price_file import PriceFileSource
from quant_core.universe import MarketEntry, Registry

CANDLES_KEY = dg.AssetKey(["market_data", "candles"])


def _source(entry: MarketEntry) -> PriceFileSource:
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
        frame = _source(entry).fetch(entry.market)
        store = candle_store.open()
        report = store.write(entry.market, frame)
        context.log.info(f"{entry.key}: {report.rows} candles {report.first} .. {report.last}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "market": entry.key,
                "symbol": entry.symbol,
                "source": entry.source,
                "path": dg.MetadataValue.path(str(store.path(entry.market))),
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
