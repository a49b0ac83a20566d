"""Resources: the exchange (ccxt), the configuration store, the JAX settings of training steps.

Secrets never sit in config: ccxt API keys come from QUANT_<EXCHANGE>_API_KEY / _SECRET (read by
`quant_core.data.ccxt_source`), the store's URL from QUANT_DATABASE_URL (SQLite under $QUANT_HOME when
unset). Candles are stored by the `ohlcv_io_manager` (quant_assets.io).
"""

from __future__ import annotations

import dagster as dg

from quant_core.jax_cache import enable_compilation_cache
from quant_core.store import ConfigurationStore
from quant_core.universe import MarketEntry


class ExchangeResource(dg.ConfigurableResource):
    """Where a market's candles come from: its exchange through ccxt (retried with exponential backoff),
    generated candles, or a price file."""

    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0

    def source(self, entry: MarketEntry):
        if entry.source == "ccxt":
            from quant_core.data.ccxt_source import CcxtSource

            return CcxtSource(entry.exchange, entry.exchange_config, max_retries=self.max_retries,
                              backoff_base=self.backoff_base_seconds, backoff_max=self.backoff_max_seconds,
                              require_complete=True)
        if entry.source == "synthetic":
            from quant_core.data.synthetic import SyntheticSource

            return SyntheticSource(seed=entry.seed, symbols=(entry.symbol,), exchange=entry.exchange,
                                   shocks=entry.shocks)
        from quant_core.data.price_file import PriceFileSource

        if entry.source == "file":
            return PriceFileSource(entry.path, exchange=entry.exchange, quote=entry.market.quote)
        return PriceFileSource(exchange=entry.exchange, quote=entry.market.quote)


class ConfigurationStoreResource(dg.ConfigurableResource):
    """The trained-configuration store. database_url None -> $QUANT_DATABASE_URL -> embedded SQLite."""

    database_url: str | None = None

    def open(self) -> ConfigurationStore:
        return ConfigurationStore(self.database_url)


class JaxResource(dg.ConfigurableResource):
    """JAX settings of the training steps (pool simulator and strategy backtester alike): platform ("cpu",
    "gpu" or "" for JAX's default) and float64.

    float64 is the simulator's contract (quant_core enables it on import); `setup` fails loudly if a run
    asks for float32 or a platform this process cannot use, rather than training on the wrong numbers."""

    platform: str = ""
    enable_x64: bool = True

    def setup(self) -> str:
        import jax

        if not self.enable_x64:
            raise dg.Failure("jax_settings.enable_x64 must stay true: the simulator is validated in float64")
        jax.config.update("jax_enable_x64", True)
        enable_compilation_cache()
        if self.platform:
            try:
                jax.devices(self.platform)
            except RuntimeError as exc:
                raise dg.Failure(f"jax_settings.platform {self.platform!r} is not available here ({exc}); use '' "
                                 "for JAX's default or install the matching jax build") from None
            jax.config.update("jax_platforms", self.platform if self.platform != "gpu" else "cuda,cpu")
        return jax.default_backend()
