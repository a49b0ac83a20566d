"""Fetches under faults, through real ccxt against the local exchange server (tests/exchange_server.py):

- an exchange that fails on a later page: the complete pages already fetched are kept, and the next run
  continues from them (library ingestion and `quant data fetch` alike);
- `quant data fetch --max-retries/--backoff-max`, validated and named in errors;
- an exchange whose clock lags ours: its still-open candle is judged by its clock, not written as closed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from exchange_server import OFF_GRID_NOW, FakeExchangeServer, expected_frame, running_server

from quant_core.data.candle_store import ParquetCandleStore
from quant_core.data.ccxt_source import CcxtSource, ExchangeUnavailableError, fetch_incremental
from quant_core.data.schema import Market
from quant_core.data.validation import ms_to_datetime

NOW = OFF_GRID_NOW
HOUR = 3_600_000


def make_source(server: FakeExchangeServer, exchange: str, **kwargs) -> CcxtSource:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.01)
    kwargs.setdefault("now", server.clock)
    return CcxtSource(exchange, server.ccxt_config(exchange), sleep=lambda _s: None, **kwargs)




def to_ms(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


# ------------------------------------------------------------------------------ a later page fails


def test_a_failed_later_page_keeps_the_complete_pages_and_the_next_run_continues(server: FakeExchangeServer,
                                                                                 tmp_path: Path) -> None:
    market = Market("binance", "BTC/USDT", "1h")
    store = ParquetCandleStore(tmp_path / "candles")
    end = server.last_closed_ms("1h") + HOUR
    start = end - 2500 * HOUR  # pages of 1000, 1000 and 501 rows
    server.fail_page(3, 503, path="klines", count=3)  # the third page fails through every retry
    source = make_source(server, "binance", max_retries=2)

    with pytest.raises(ExchangeUnavailableError, match="after 3 attempt") as info:
        fetch_incremental(store, source, market, start=ms_to_datetime(start))
    assert "2000 complete candles" in str(info.value) and "next run continues" in str(info.value)
    assert info.value.partial is not None and info.value.partial.height == 2000
    # the two complete pages are stored, exactly as the exchange served them
    assert store.read(market).equals(expected_frame(server, market, start, start + 2000 * HOUR))

    server.requests.clear()
    result = fetch_incremental(store, source, market, start=ms_to_datetime(start))
    klines = server.ohlcv_requests()
    assert int(klines[0].params["startTime"]) == start + 1997 * HOUR  # the stored tail, less 2 overlapping candles
    assert result.rows_added == 500
    assert store.read(market).equals(expected_frame(server, market, start, end))


def test_a_failed_backfill_before_stored_candles_keeps_nothing_that_would_leave_a_hole(
        server: FakeExchangeServer, tmp_path: Path) -> None:
    """Complete head pages would not touch the stored candles: the next run would never fill the hole between."""
    market = Market("binance", "ETH/USDT", "1h")
    store = ParquetCandleStore(tmp_path / "candles")
    source = make_source(server, "binance", max_retries=0)
    fetch_incremental(store, source, market, start=NOW - timedelta(days=10))
    before = store.read(market)
    server.fail_page(2, 500, path="klines")
    with pytest.raises(ExchangeUnavailableError):
        fetch_incremental(store, source, market, start=NOW - timedelta(days=100))
    assert store.read(market).equals(before)
    fetch_incremental(store, source, market, start=NOW - timedelta(days=100))
    first = -(-to_ms(NOW - timedelta(days=100)) // HOUR) * HOUR
    assert store.read(market).equals(expected_frame(server, market, first, server.last_closed_ms("1h") + HOUR))


# ---------------------------------------------------------------------------------- the command line


def fetch_argv(srv: FakeExchangeServer, tmp_path: Path, since: str, *extra: str) -> list[str]:
    config = tmp_path / "binance.json"
    config.write_text(json.dumps(srv.ccxt_config("binance")))
    return ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "5m", "--since", since,
            "--out", str(tmp_path / "btc.parquet"), "--exchange-config", str(config), *extra]


def test_cli_fetch_keeps_complete_pages_and_the_same_command_continues(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    from quant_core.cli import main

    with running_server(datetime.now(UTC)) as srv:
        since = (srv.clock() - timedelta(days=5)).strftime("%Y-%m-%dT%H:00:00")
        argv = fetch_argv(srv, tmp_path, since, "--max-retries", "1", "--backoff-max", "0.01")
        out = tmp_path / "btc.parquet"
        srv.fail_page(2, 503, path="klines", count=2)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "after 2 attempt(s)" in err and "--max-retries" in err and "--backoff-max" in err
        assert "1000 complete candles" in err and "run the same command again" in err
        kept = pl.read_parquet(out)
        since_ms = to_ms(datetime.fromisoformat(since).replace(tzinfo=UTC))
        assert kept.height == 1000 and kept.equals(expected_frame(srv, Market("binance", "BTC/USDT", "5m"),
                                                                  since_ms, since_ms + 1000 * 300_000))

        srv.requests.clear()
        assert main(argv) == 0
        assert "wrote" in capsys.readouterr().out
        first = srv.ohlcv_requests()[0]
        assert int(first.params["startTime"]) == since_ms + 997 * 300_000  # continued, not started over
        full = pl.read_parquet(out)
        assert full.equals(expected_frame(srv, Market("binance", "BTC/USDT", "5m"), since_ms,
                                          srv.last_closed_ms("5m") + 300_000))

        # a completed fetch leaves nothing to continue: the same command fetches the window afresh
        srv.requests.clear()
        assert main(argv) == 0
        assert int(srv.ohlcv_requests()[0].params["startTime"]) == since_ms


def test_cli_fetch_retry_flags_are_used_and_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from quant_core.cli import build_parser, main

    args = build_parser().parse_args(["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT",
                                      "--timeframe", "1h", "--since", "2024-01-01", "--out", "x.parquet",
                                      "--max-retries", "0", "--backoff-max", "2.5"])
    assert (args.max_retries, args.backoff_max) == (0, 2.5)
    base = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--since", "2024-01-01", "--out", str(tmp_path / "x.parquet")]
    for flag, value, why in [("--max-retries", "-1", "an integer >= 0"), ("--max-retries", "two", "an integer"),
                             ("--max-retries", "1.5", "an integer"), ("--backoff-max", "-1", ">= 0"),
                             ("--backoff-max", "nan", "finite"), ("--backoff-max", "inf", "finite"),
                             ("--backoff-max", "soon", "number of seconds")]:
        with pytest.raises(SystemExit) as info:
            main([*base, flag, value])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and why in err and repr(value) in err, err
    # the library names the setting too
    with pytest.raises(ValueError, match="backoff_max must be a finite number >= 0"):
        CcxtSource("binance", backoff_max=float("nan"))
    with pytest.raises(ValueError, match="max_retries must be an integer >= 0"):
        CcxtSource("binance", max_retries=-1)

    with running_server(datetime.now(UTC)) as srv:
        srv.fail_next(503, path="klines", count=5)
        since = (srv.clock() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:00:00")
        assert main(fetch_argv(srv, tmp_path, since, "--max-retries", "3", "--backoff-max", "0.01")) == 2
        assert "after 4 attempt(s)" in capsys.readouterr().err
        assert len([r for r in srv.requests if r.endpoint == "klines"]) == 4


# ------------------------------------------------------------------------------ clocks that disagree


@pytest.mark.parametrize("exchange, symbol", [("binance", "BTC/USDT"), ("kraken", "BTC/USD")])
def test_an_exchange_clock_lagging_ours_keeps_its_open_candle_out(tmp_path: Path, exchange: str, symbol: str) -> None:
    """The exchange's clock says 12:17 while ours says 13:47: its 12:00 candle is still open."""
    market = Market(exchange, symbol, "1h")
    with running_server(NOW - timedelta(minutes=90), clock_lag=timedelta(minutes=90)) as srv:
        store = ParquetCandleStore(tmp_path / "candles")
        source = make_source(srv, exchange, now=srv.our_clock)
        start = NOW - timedelta(days=2)
        open_ms = srv.last_closed_ms("1h") + HOUR  # the exchange's open candle (12:00)
        result = fetch_incremental(store, source, market, start=start)
        (report,) = result.fetch_reports
        stored = store.read(market)
        assert ms_to_datetime(open_ms) not in stored["timestamp"].to_list()
        assert report.dropped_open == 1 and report.complete
        assert report.exchange_time == srv.clock()
        assert any("behind ours" in n for n in report.notes)
        first = -(-to_ms(start) // HOUR) * HOUR
        assert stored.equals(expected_frame(srv, market, first, open_ms))

        # an hour later (by its clock) the candle has closed: the next run stores its final values
        srv.advance(timedelta(hours=1))
        fetch_incremental(store, source, market, start=start)
        assert store.read(market).equals(expected_frame(srv, market, first, open_ms + HOUR))


def test_a_candle_the_exchange_has_closed_is_kept_though_our_clock_lags(tmp_path: Path) -> None:
    """Our clock says 13:47 while the exchange's says 14:07: it serves the 14:00 candle, so 13:00 has closed."""
    market = Market("binance", "BTC/USDT", "1h")
    with running_server(NOW + timedelta(minutes=20), clock_lag=timedelta(minutes=-20)) as srv:
        source = make_source(srv, "binance", now=srv.our_clock)
        frame, report = source.fetch_with_report(market, NOW - timedelta(hours=5))
        assert frame["timestamp"][-1] == datetime(2024, 6, 3, 13, tzinfo=UTC)
        assert frame.equals(expected_frame(srv, market, to_ms(NOW - timedelta(hours=5)), to_ms(NOW)))
        assert report.dropped_open == 1  # 14:00, open by both clocks


# ------------------------------------------------------------------------------ the Dagster candle asset


def test_dagster_ranged_run_keeps_complete_pages_and_its_retry_continues_after_them(
        server: FakeExchangeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ranged ohlcv run (one market x 100 days: pages of 1000, 1000 and 400 hourly candles) whose third page
    fails through the client's retries: the asset's retry asks the exchange only for what comes after the two
    complete pages, and every day lands complete, exactly as served."""
    import dagster as dg
    import yaml

    from quant_assets.defs.market_data.assets import build_market_data
    from quant_assets.io import CandleIOManagerFactory
    from quant_assets.resources import ExchangeResource
    from quant_core.universe import load_registry

    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    first, last = "2024-02-23", "2024-06-01"  # 100 days
    reg_file = tmp_path / "registry.yaml"
    reg_file.write_text(yaml.safe_dump({"partitions_start": first, "markets": [{
        "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "source": "ccxt", "since": first,
        "exchange_config": server.ccxt_config("binance")}], "universes": []}))
    (ohlcv,) = build_market_data(load_registry(reg_file)).assets
    resources = {"exchange": ExchangeResource(max_retries=1, backoff_base_seconds=0.01, backoff_max_seconds=0.01),
                 "ohlcv_io_manager": CandleIOManagerFactory(base_dir=str(tmp_path / "ohlcv"))}
    server.fail_page(3, 503, path="klines", count=2)  # both tries of the client's fetch
    with dg.instance_for_test() as instance:
        result = dg.materialize([ohlcv], instance=instance, resources=resources, raise_on_error=False,
                                tags={"dagster/asset_partition_range_start": f"{first}|binance.BTC-USDT.1h",
                                      "dagster/asset_partition_range_end": f"{last}|binance.BTC-USDT.1h"})
        assert result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
        assert len(retries) == 1
        assert len(instance.get_materialized_partitions(ohlcv.key)) == 100
    start = to_ms(datetime(2024, 2, 23, tzinfo=UTC))
    asked = [int(r.params["startTime"]) for r in server.ohlcv_requests()]
    assert asked == [start, start + 1000 * HOUR, start + 2000 * HOUR]  # no complete page fetched twice
    stored = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "ohlcv" / "market_data" / "ohlcv")
                                                           .glob("*/binance.BTC-USDT.1h.parquet"))])
    market = Market("binance", "BTC/USDT", "1h")
    assert stored.equals(expected_frame(server, market, start, start + 2400 * HOUR))
    assert not list((tmp_path / "quant" / "ohlcv_resume").glob("*.parquet"))  # cleared once the range landed
