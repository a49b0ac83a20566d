"""Resources: where candles and configurations live. Defaults are the embedded ones (files under
$QUANT_HOME, SQLite store); QUANT_DATABASE_URL points the store at PostgreSQL."""


import dagster as dg

from quant_core.data.candle_store import ParquetCandleStore
from quant_core.paths import quant_home
from quant_core.store import ConfigurationStore


class CandleStoreResource(dg.ConfigurableResource):
    """Parquet candle files, one per market."""

    base_dir: str | None = None

    def open(self) -> ParquetCandleStore:
        return ParquetCandleStore(self.base_dir or (quant_home() / "candles"))


class ConfigurationStoreResource(dg.ConfigurableResource):
    """The trained-configuration store. database_url None -> $QUANT_DATABASE_URL -> embedded SQLite."""

    database_url: str | None = None

    def open(self) -> ConfigurationStore:
        return ConfigurationStore(self.database_url)
