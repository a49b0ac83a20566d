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


@pytest.mark.parametrize("path", [DEFAULT_REGISTRY_PATH, DEFAULT_REGISTRY_PATH.parents[1] / "deploy" /
                                  "registry.ccxt.yaml"])
def test_the_24_liquidity_sweep_markets(path):
    """The seed plan's 24 markets, one universe each: synthetic candles offline, ccxt in the deployment registry."""
    reg = load_registry(path)
    sweeps = [u for u in reg.universes if u.spec.kind == "strategy" and u.spec.strategy == "liquidity_sweep"]
    markets = {reg.market(m).market for u in sweeps for m in u.markets.values()}
    assert len(sweeps) == 24 and len(markets) == 24
    assert {(m.exchange, m.symbol, m.timeframe) for m in markets} == {
        (ex, f"{b}/USDT", tf) for ex in ("binance", "kraken") for b in ("BTC", "ETH", "SOL")
        for tf in ("5m", "15m", "1h", "4h")}
    sources = {reg.market(m).source for u in sweeps for m in u.markets.values()}
    assert sources == ({"ccxt"} if "ccxt" in path.name else {"synthetic"})
    for u in sweeps:
        wf = u.walk_forward
        assert (wf.train_days, wf.gap_days, wf.test_days) == (90, 7, 30)  # 3 months -> 1 week -> 1 month
        fee = u.spec.strategy_settings.taker_fee_bps
        assert fee == (40 if u.name.startswith("sweep_kraken") else 10)


def test_a_strategy_universe_trades_one_market(tmp_path):
    text = GOOD_MARKETS + """universes:
  - {name: u, markets: {BTC: shipped.BTC-USD.1d, USDC: shipped.USDC-USD.1d},
     spec: {strategy: liquidity_sweep, tokens: [BTC, USDC]}}
"""
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(RegistryError, match="trades one market"):
        load_registry(f)


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
         "circuit_breakers: {max_daily_los: 0.01}}",
         "universes.0.circuit_breakers: Value error, unknown circuit breaker 'max_daily_los' (did you mean "
         "'max_daily_loss'?)"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "circuit_breakers: {max_daily_loss: -0.02}}", "max_daily_loss: -0.02 must be a finite number >= 0"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "circuit_breakers: {consecutive_losses_limit: .nan}}",
         "universes.0.circuit_breakers.consecutive_losses_limit: Input should be a finite number"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "live: {gate: {metric: oos_sortino}}}", "universes.0.live.gate.metric: Input should be 'oos_return' or "
         "'oos_sharpe'"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "live: {challenger: {p_value: 0}}}", "universes.0.live.challenger.p_value: Input should be greater than 0"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC]}, "
         "live: {gaet: {}}}", "universes.0.live.gaet: Extra inputs are not permitted"),

        ("{name: u, markets: {BTC: shipped.BTC-USD.1d, USDC: shipped.USDC-USD.1d}, "
         "spec: {rule: min_variance, tokens: [BTC, USDC]}}", "set target_weights_start: initial_weights"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: momentum, tokens: [BTC]}, search_steps: 4}",
         "search_steps: 4: method gradient_descent trains one path and cannot be split into steps; remove "
         "search_steps (it applies to grid, random, optuna)"),
        ("{name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: momentum, tokens: [BTC], "
         "optimisation_settings: {method: grid}}, search_steps: 0}",
         "universes.0.search_steps: Input should be greater than or equal to 1"),
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
        ("{exchange: binanse, symbol: BTC/USDT, timeframe: 1h, source: ccxt, since: '2024-01-01'}",
         "markets.0: Value error, unknown ccxt exchange id 'binanse' (did you mean binance"),
    ],
)
def test_bad_market_sources_name_the_fix(tmp_path, market, needle):
    p = tmp_path / "r.yaml"
    p.write_text(f"markets:\n  - {market}\n")
    with pytest.raises(RegistryError) as err:
        load_registry(p)
    assert needle in str(err.value)


def test_a_universe_mixing_timeframes_is_refused_at_load(tmp_path):
    """Mixed 1d and 4h markets used to load and fail later inside price_panel."""
    p = tmp_path / "r.yaml"
    p.write_text(GOOD_MARKETS + """  - {exchange: shipped, symbol: ETH/USD, timeframe: 4h}
universes:
  - {name: u, markets: {BTC: shipped.BTC-USD.1d, ETH: shipped.ETH-USD.4h}, spec: {rule: hodl, tokens: [BTC, ETH]}}
""")
    with pytest.raises(RegistryError) as err:
        load_registry(p)
    assert "universe 'u' mixes timeframes {'BTC': '1d', 'ETH': '4h'}" in str(err.value)
