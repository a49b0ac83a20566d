"""CcxtSource end to end through real ccxt against a local fake of binance's and kraken's REST APIs:
paging, retries with bounded backoff, clear permanent errors, open-candle dropping, credentials from
the environment only, and incremental idempotent ingestion into the Parquet store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from exchange_server import (
    BINANCE_MAX_LIMIT,
    KRAKEN_MAX_ROWS,
    OFF_GRID_NOW,
    FakeExchangeServer,
    expected_frame,
    running_server,
)

from quant_core.data.candle_store import ParquetCandleStore
from quant_core.data.ccxt_source import (
    CcxtSource,
    CcxtSourceError,
    ExchangeUnavailableError,
    IncompleteHistoryError,
    fetch_incremental,
)
from quant_core.data.schema import CANDLE_SCHEMA, Market, timeframe_ms
from quant_core.data.validation import ms_to_datetime

# Not on any candle grid, so the last candle of every timeframe is still open.
NOW = OFF_GRID_NOW


class Sleeps(list):
    """An injected `sleep` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_source(server: FakeExchangeServer, exchange: str, sleeps: Sleeps | None = None, **kwargs) -> CcxtSource:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 1.0)
    return CcxtSource(
        exchange,
        server.ccxt_config(exchange),
        sleep=sleeps if sleeps is not None else Sleeps(),
        now=server.clock,
        **kwargs,
    )




def window(server: FakeExchangeServer, timeframe: str, candles: int) -> tuple[int, int]:
    """[start, end) covering the last `candles` closed candles (end = the open candle's open time)."""
    step = timeframe_ms(timeframe)
    end = server.last_closed_ms(timeframe) + step
    return end - candles * step, end


def assert_valid(frame: pl.DataFrame) -> None:
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame["timestamp"].is_sorted() and frame["timestamp"].n_unique() == frame.height


# --------------------------------------------------------------------------------- fetching


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "4h", "1d"])
def test_binance_pages_over_more_than_one_request(server: FakeExchangeServer, timeframe: str) -> None:
    market = Market("binance", "BTC/USDT", timeframe)
    start, end = window(server, timeframe, 1500)  # > binance's 1000 per request
    source = make_source(server, "binance")
    frame, report = source.fetch_with_report(market, ms_to_datetime(start))

    assert_valid(frame)
    assert frame.equals(expected_frame(server, market, start, end))
    assert frame.height == 1500
    # The still-open candle was served and dropped; closed candles run to the one before it.
    assert report.dropped_open == 1 and frame["timestamp"][-1] == ms_to_datetime(end - timeframe_ms(timeframe))
    klines = server.ohlcv_requests("binance")
    assert [r.rows for r in klines] == [1000, 501]
    assert all(int(r.params["limit"]) == BINANCE_MAX_LIMIT for r in klines)
    assert report.complete and report.pages == 2 and report.retries == 0
    # load_markets asked for spot markets only: one exchangeInfo, nothing else.
    assert {r.endpoint for r in server.requests} == {"exchangeInfo", "klines"}


@pytest.mark.parametrize("timeframe", ["15m", "1h", "1d"])
def test_kraken_fetch_within_its_720_candles(server: FakeExchangeServer, timeframe: str) -> None:
    market = Market("kraken", "BTC/USD", timeframe)
    start, end = window(server, timeframe, 500)
    source = make_source(server, "kraken")
    frame, report = source.fetch_with_report(market, ms_to_datetime(start), ms_to_datetime(end))

    assert_valid(frame)
    assert frame.equals(expected_frame(server, market, start, end))
    assert report.complete and report.dropped_open == 1 and report.pages == 1
    assert {r.endpoint for r in server.requests} == {"Assets", "AssetPairs", "OHLC"}


def test_kraken_history_cap_is_reported_not_looped(server: FakeExchangeServer) -> None:
    market = Market("kraken", "ETH/USD", "1h")
    start, end = window(server, "1h", 2000)  # far beyond what kraken keeps
    source = make_source(server, "kraken")
    frame, report = source.fetch_with_report(market, ms_to_datetime(start))

    assert frame.height == KRAKEN_MAX_ROWS - 1  # every closed row kraken serves; the open one dropped
    assert frame.equals(expected_frame(server, market, end - (KRAKEN_MAX_ROWS - 1) * 3_600_000, end))
    assert len(server.ohlcv_requests()) == 1  # one request: `since` cannot go further back
    assert not report.complete
    assert report.head_gap == (ms_to_datetime(start), frame["timestamp"][0])
    assert "most recent 720" in report.notes[0] and "cannot be fetched" in report.notes[0]

    strict = make_source(server, "kraken", require_complete=True)
    with pytest.raises(IncompleteHistoryError, match="most recent 720"):
        strict.fetch(market, ms_to_datetime(start))


def test_start_before_listing_is_a_head_gap(server: FakeExchangeServer) -> None:
    market = Market("binance", "ETH/USDT", "1d")
    listed = server.listed
    source = make_source(server, "binance")
    frame, report = source.fetch_with_report(market, listed - timedelta(days=30), listed + timedelta(days=10))
    assert frame["timestamp"][0] == listed and frame.height == 10
    assert report.head_gap == (listed - timedelta(days=30), listed)
    assert "listed" in report.notes[0]


def test_paging_stops_when_the_exchange_ignores_since(server: FakeExchangeServer) -> None:
    market = Market("binance", "BTC/USDT", "1h")
    source = make_source(server, "binance")
    start, _ = window(server, "1h", 100)
    same_page = [[start + i * 3_600_000, 10.0, 11.0, 9.0, 10.5, 1.0] for i in range(10)]
    calls: list[int] = []

    def stuck(symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
        calls.append(since)
        return same_page  # whatever `since` says

    source.exchange.fetch_ohlcv = stuck
    frame, report = source.fetch_with_report(market, ms_to_datetime(start))
    assert calls == [start, start + 10 * 3_600_000]  # the second page had nothing new: stop
    assert frame.height == 10 and not report.complete
    assert report.tail_gap is not None and "returned nothing after" in report.notes[0]


def test_open_candle_dropped_and_end_exclusive(server: FakeExchangeServer) -> None:
    market = Market("binance", "BTC/USDT", "1h")
    source = make_source(server, "binance")
    frame = source.fetch(market, NOW - timedelta(hours=5))
    open_candle = ms_to_datetime(server.last_closed_ms("1h") + 3_600_000)
    assert open_candle < NOW < open_candle + timedelta(hours=1)
    # Open times in [13:47 - 5h, now): 09:00 .. 12:00 closed, 13:00 still open.
    assert open_candle not in frame["timestamp"].to_list() and frame.height == 4
    assert source.last_report is not None and source.last_report.dropped_open == 1

    end = frame["timestamp"][2]
    assert (
        source.fetch(market, NOW - timedelta(hours=5), end)["timestamp"].to_list() == frame["timestamp"][:2].to_list()
    )


def test_markets_lists_active_spot_markets(server: FakeExchangeServer) -> None:
    binance = make_source(server, "binance").markets("4h")
    assert [m.symbol for m in binance] == ["BTC/USDT", "ETH/USDT"]  # LUNA/USDT is halted
    assert all(m.exchange == "binance" and m.timeframe == "4h" for m in binance)
    kraken = make_source(server, "kraken").markets()
    assert [m.symbol for m in kraken] == ["BTC/USD", "ETH/USD"]  # XXBT mapped to BTC by ccxt


# ------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("exchange, symbol", [("binance", "BTC/USDT"), ("kraken", "BTC/USD")])
def test_429_and_5xx_are_retried_and_result_complete(server: FakeExchangeServer, exchange: str, symbol: str) -> None:
    market = Market(exchange, symbol, "1h")
    start, end = window(server, "1h", 300)
    candles_path = "klines" if exchange == "binance" else "OHLC"
    server.fail_next(429, path=candles_path, retry_after=0.5)
    server.fail_next(500, path=candles_path)
    server.fail_next(503, path=candles_path)
    sleeps = Sleeps()
    source = make_source(server, exchange, sleeps, backoff_base=0.01, backoff_max=1.0)
    frame, report = source.fetch_with_report(market, ms_to_datetime(start))

    assert frame.equals(expected_frame(server, market, start, end))
    # Retry-After (0.5 s) beats the first backoff step; then 0.02, 0.04: exponential from 0.01.
    assert sleeps == [0.5, 0.02, 0.04]
    assert report.retries == 3 and report.requests == 4 and report.pages == 1


def test_load_markets_is_retried_too(server: FakeExchangeServer) -> None:
    server.fail_next(503, path="exchangeInfo")
    sleeps = Sleeps()
    assert make_source(server, "binance", sleeps).markets()
    assert sleeps == [0.01]


def test_backoff_is_bounded_and_gives_up(server: FakeExchangeServer) -> None:
    market = Market("binance", "BTC/USDT", "1d")
    server.fail_next(503, path="klines", count=50)
    server.fail_next(429, path="exchangeInfo", retry_after=3600)  # a huge Retry-After is capped too
    sleeps = Sleeps()
    source = make_source(server, "binance", sleeps, max_retries=4, backoff_base=1.0, backoff_max=5.0)
    with pytest.raises(ExchangeUnavailableError, match=r"after 5 attempt\(s\)") as info:
        source.fetch(market, NOW - timedelta(days=10))
    assert "ExchangeNotAvailable" in str(info.value)
    assert sleeps == [5.0, 1.0, 2.0, 4.0, 5.0]  # markets: capped Retry-After; candles: 1, 2, 4, then the cap
    assert len([r for r in server.requests if r.endpoint == "klines"]) == 5  # 1 + max_retries, not 50


def test_unreachable_exchange_is_retried_then_reported(server: FakeExchangeServer) -> None:
    config = server.ccxt_config("binance")
    server.stop()  # nothing listens on that port any more
    sleeps = Sleeps()
    source = CcxtSource("binance", config, sleep=sleeps, now=server.clock, max_retries=2, backoff_base=0.01)
    with pytest.raises(ExchangeUnavailableError, match=r"loading markets still failing after 3 attempt\(s\)"):
        source.markets()
    assert sleeps == [0.01, 0.02]


# ------------------------------------------------------------------------ permanent errors


def test_bad_symbol_names_it_and_points_to_markets(server: FakeExchangeServer) -> None:
    source = make_source(server, "binance")
    with pytest.raises(CcxtSourceError, match=r"no market 'BTC/USD'.*did you mean BTC/USDT.*markets\(\)"):
        source.fetch(Market("binance", "BTC/USD", "1h"), NOW - timedelta(days=1))
    with pytest.raises(CcxtSourceError, match="no market 'DOGE/EUR'"):
        source.fetch(Market("binance", "DOGE/EUR", "1h"), NOW - timedelta(days=1))
    assert server.ohlcv_requests() == []  # refused before any candle request, and never retried


def test_unsupported_timeframe_lists_the_exchanges(server: FakeExchangeServer) -> None:
    source = make_source(server, "kraken")
    # Both fakes support every project timeframe; drop one as an exchange without 4h candles would.
    source.exchange.timeframes = {k: v for k, v in source.exchange.timeframes.items() if k != "4h"}
    with pytest.raises(CcxtSourceError, match=r"kraken has no '4h' candles; its timeframes are: 1m, 5m, .*1d"):
        source.fetch(Market("kraken", "BTC/USD", "4h"))
    with pytest.raises(CcxtSourceError, match="its timeframes are"):
        source.markets("4h")
    assert server.requests == []


def test_other_permanent_errors_fail_fast(server: FakeExchangeServer) -> None:
    sleeps = Sleeps()
    source = make_source(server, "binance", sleeps)
    source.load_markets()
    # A market ccxt knows but the exchange rejects (BadSymbol from the response) is not retried.
    source.exchange.markets["BTC/USDT"]["id"] = "NOSUCH"
    source.exchange.markets_by_id["NOSUCH"] = [source.exchange.markets["BTC/USDT"]]
    with pytest.raises(CcxtSourceError, match=r"Invalid symbol.*markets\(\)"):
        source.fetch(Market("binance", "BTC/USDT", "1h"), NOW - timedelta(hours=3))
    assert sleeps == [] and len([r for r in server.requests if r.endpoint == "klines"]) == 1


def test_refused_credentials_fail_fast_with_the_env_vars_to_check(server: FakeExchangeServer) -> None:
    server.fail_next(401, path="klines")
    sleeps = Sleeps()
    with pytest.raises(CcxtSourceError, match="AuthenticationError.*QUANT_BINANCE_API_KEY"):
        make_source(server, "binance", sleeps).fetch(Market("binance", "BTC/USDT", "1h"), NOW - timedelta(hours=3))
    assert sleeps == []


def test_market_of_another_exchange_and_unknown_exchange_are_refused(server: FakeExchangeServer) -> None:
    with pytest.raises(ValueError, match="belongs to 'kraken'"):
        make_source(server, "binance").fetch(Market("kraken", "BTC/USD", "1h"))
    with pytest.raises(ValueError, match="did you mean binance"):
        CcxtSource("binanse")


# ---------------------------------------------------------------------------- credentials


def test_credentials_in_config_are_refused() -> None:
    with pytest.raises(ValueError, match="QUANT_BINANCE_API_KEY.*QUANT_BINANCE_SECRET"):
        CcxtSource("binance", {"apiKey": "k", "secret": "s"})
    with pytest.raises(ValueError, match=r"\['password'\]"):
        CcxtSource("kraken", {"password": "p", "timeout": 1000})


def test_credentials_come_from_environment(server: FakeExchangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANT_BINANCE_API_KEY", "env-key")
    monkeypatch.setenv("QUANT_BINANCE_SECRET", "env-secret")
    source = make_source(server, "binance")
    assert source.exchange.apiKey == "env-key" and source.exchange.secret == "env-secret"
    assert "env-" not in repr(source)
    # Public candles still need no signed call (binance's currency list would be one).
    frame = source.fetch(Market("binance", "BTC/USDT", "1h"), NOW - timedelta(hours=10))
    assert frame.height == 9  # open times 04:00 .. 12:00 (start 03:47 is mid-candle)
    assert {r.endpoint for r in server.requests} == {"exchangeInfo", "klines"}
    assert not any("signature" in r.params for r in server.requests)

    assert make_source(server, "kraken").exchange.apiKey in (None, "")  # per exchange


# --------------------------------------------------------------------- incremental ingest


def test_incremental_fetches_only_new_part_and_replaces_revised_candle(
    server: FakeExchangeServer, tmp_path: Path
) -> None:
    market = Market("binance", "BTC/USDT", "1h")
    store = ParquetCandleStore(tmp_path / "candles")
    source = make_source(server, "binance")
    start = ms_to_datetime(window(server, "1h", 1200)[0])

    first = fetch_incremental(store, source, market, start=start)
    stored = store.read(market)
    assert first.rows_fetched == first.rows_written == first.rows_added == stored.height == 1200
    assert first.last == stored["timestamp"][-1] and first.report is not None and first.report.gaps == []
    assert [r.rows for r in server.ohlcv_requests()] == [1000, 201]

    # Time passes; the exchange revises the candle that was our newest when we fetched it.
    last_ms = server.last_closed_ms("1h")
    old_close = stored["close"][-1]
    server.revise("BTC/USDT", "1h", last_ms, round(old_close * 1.01, 2))
    server.advance(timedelta(hours=5))
    server.requests.clear()

    second = fetch_incremental(store, source, market, start=start, overlap_candles=2)
    klines = server.ohlcv_requests()
    assert len(klines) == 1 and int(klines[0].params["startTime"]) == last_ms - 2 * 3_600_000
    assert klines[0].rows == 2 + 1 + 5 + 1  # overlap, the revised one, 5 new, the open one
    assert second.rows_fetched == 8 and second.rows_added == 5
    after = store.read(market)
    assert after.height == 1205 and after["timestamp"].n_unique() == 1205
    revised = after.filter(pl.col("timestamp") == ms_to_datetime(last_ms))
    assert revised["close"].item() == round(old_close * 1.01, 2) != old_close
    assert after.equals(expected_frame(server, market, to_ms(start), server.last_closed_ms("1h") + 3_600_000))


def test_ingesting_same_window_twice_leaves_no_duplicates(server: FakeExchangeServer, tmp_path: Path) -> None:
    market = Market("kraken", "BTC/USD", "15m")
    store = ParquetCandleStore(tmp_path / "candles")
    source = make_source(server, "kraken")
    start, end = NOW - timedelta(days=5), NOW - timedelta(days=1)

    first = fetch_incremental(store, source, market, start=start, end=end)
    once = store.read(market)
    second = fetch_incremental(store, source, market, start=start, end=end)
    twice = store.read(market)

    assert first.rows_added == once.height == 4 * 24 * 4
    # Only the newest stored candle and the 2 before it were fetched again.
    assert second.rows_added == 0 and second.rows_fetched == 3 and second.rows_written == 3
    assert twice.equals(once) and twice["timestamp"].n_unique() == twice.height


def test_incremental_backfills_before_stored_data(server: FakeExchangeServer, tmp_path: Path) -> None:
    market = Market("binance", "ETH/USDT", "4h")
    store = ParquetCandleStore(tmp_path / "candles")
    source = make_source(server, "binance")
    fetch_incremental(store, source, market, start=NOW - timedelta(days=10))
    result = fetch_incremental(store, source, market, start=NOW - timedelta(days=20))
    assert result.rows_added == 60
    stored = store.read(market)
    start_ms = -(-to_ms(NOW - timedelta(days=20)) // 14_400_000) * 14_400_000
    assert stored.equals(expected_frame(server, market, start_ms, server.last_closed_ms("4h") + 14_400_000))


def to_ms(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


# --------------------------------------------------------------------------------- command line


def test_cli_data_fetch_against_the_local_exchange(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`quant data fetch` as users run it, with --exchange-config pointing ccxt at the local server
    (whose clock is the real one here, since the command judges open candles by the wall clock)."""
    from quant_core.cli import main

    with running_server(datetime.now(UTC)) as srv:
        config = tmp_path / "binance.json"
        config.write_text(__import__("json").dumps(srv.ccxt_config("binance")))
        out = tmp_path / "btc.parquet"
        since = (srv.clock() - timedelta(days=3)).strftime("%Y-%m-%dT%H:00:00")
        argv = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "5m",
                "--since", since, "--out", str(out), "--exchange-config", str(config)]
        assert main(argv) == 0
        frame = pl.read_parquet(out)
        assert frame.height > BINANCE_MAX_LIMIT // 2 and frame["timestamp"].is_sorted()
        assert frame["timestamp"].max() + timedelta(minutes=5) <= srv.clock()  # the open candle was dropped
        assert "wrote" in capsys.readouterr().out
        bad = argv[:5] + ["NOPE/USDT"] + argv[6:]
        assert main(bad) == 2
        assert "NOPE/USDT" in capsys.readouterr().err


def test_dagster_ohlcv_asset_ingests_a_ccxt_market_day(tmp_path: Path) -> None:
    """A registry market with `source: ccxt` (its exchange_config pointing ccxt at the local server),
    materialised in a real Dagster instance for one UTC day: 24 hourly candles land in that day's
    Parquet partition; running it again rewrites the same candles."""
    import dagster as dg
    import polars as pl
    import yaml

    from quant_assets.defs.market_data.assets import build_market_data
    from quant_assets.io import CandleIOManagerFactory
    from quant_assets.resources import ExchangeResource
    from quant_core.universe import load_registry

    with running_server(datetime.now(UTC)) as srv:
        day = (srv.clock() - timedelta(days=1)).strftime("%Y-%m-%d")
        since = (srv.clock() - timedelta(days=3)).strftime("%Y-%m-%d")
        reg_file = tmp_path / "registry.yaml"
        reg_file.write_text(yaml.safe_dump({"partitions_start": since, "markets": [{
            "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "source": "ccxt", "since": since,
            "exchange_config": srv.ccxt_config("binance")}], "universes": []}))
        defs = build_market_data(load_registry(reg_file))
        (ohlcv,) = defs.assets
        resources = {"exchange": ExchangeResource(),
                     "ohlcv_io_manager": CandleIOManagerFactory(base_dir=str(tmp_path / "ohlcv"))}
        with dg.instance_for_test() as instance:
            runs = [dg.materialize([ohlcv], partition_key=f"{day}|binance.BTC-USDT.1h", resources=resources,
                                   instance=instance) for _ in range(2)]
            assert all(r.success for r in runs)
            assert all(c.passed for r in runs for c in r.get_asset_check_evaluations())
        stored = pl.read_parquet(tmp_path / "ohlcv" / "market_data" / "ohlcv" / day / "binance.BTC-USDT.1h.parquet")
        assert stored.height == 24 and stored["timestamp"].n_unique() == 24
        assert stored["timestamp"].dt.strftime("%Y-%m-%d").unique().to_list() == [day]
