import pytest

from quant_assets.registry import DEFAULT_REGISTRY_PATH
from quant_core.universe import RegistryError, load_registry

GOOD_MARKETS = """markets:
  - {exchange: shipped, symbol: BTC/USD, timeframe: 1d}
  - {exchange: shipped, symbol: USDC/USD, timeframe: 1d}
"""


def test_shipped_registry_loads():
    reg = load_registry(DEFAULT_REGISTRY_PATH)
    u = reg.universe("momentum_btc_eth_usdc_1d")
    assert u.spec.rule == "momentum" and u.walk_forward.train_days == 180
    assert u.effective_circuit_breakers["consecutive_losses_limit"] == 5


@pytest.mark.parametrize(
    "universe,needle",
    [
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d, USDC: kraken.USDC-USD.1d}, "
         "spec: {rule: hodl, tokens: [BTC, USDC]}}",
         "uses markets ['kraken.USDC-USD.1d'] that are not in `markets`"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC, USDC]}}",
         "give one market per token"),
        ("{name: Bad-Name, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}}",
         "use lower-case letters"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC], chunk_perid: 5}}",
         "universes.0.spec.chunk_perid"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "circuit_breakers: {max_daily_los: 0.01}}", "unknown circuit breakers ['max_daily_los']"),
    ],
)
def test_bad_registry_names_the_entry(tmp_path, universe, needle):
    p = tmp_path / "r.yaml"
    p.write_text(GOOD_MARKETS + "universes:\n  - " + universe + "\n")
    with pytest.raises(RegistryError) as err:
        load_registry(p)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "market,needle",
    [
        ("{exchange: binance, symbol: BTC/USDT, timeframe: 1h, source: ccxt}", "needs `since`"),
        ("{exchange: binance, symbol: BTC/USDT, timeframe: 1h, source: ccxt, since: '2024-01-01', "
         "exchange_config: {apiKey: abc}}", "QUANT_BINANCE_API_KEY"),
        ("{exchange: binance, symbol: BTC/USDT, timeframe: 1h, source: shipped, exchange_config: {timeout: 5}}",
         "applies to source 'ccxt' only"),
        ("{exchange: synthetic, symbol: BTC/USD, timeframe: 5m, source: synthetic, since: 'yesterday'}", "yesterday"),
    ],
)
def test_bad_market_sources_name_the_fix(tmp_path, market, needle):
    p = tmp_path / "r.yaml"
    p.write_text(f"markets:\n  - {market}\n")
    with pytest.raises(RegistryError) as err:
        load_registry(p)
    assert needle in str(err.value)
