"""The `quant` command: the library without the platform.

    quant simulate SPEC --prices FILE --out OUT.csv   one forward pass, one row per data step
    quant train SPEC --prices FILE [--out RESULT.json] train a pool spec's parameters on its window
    quant train SPEC --candles FILE [--timeframe TF] [--out RESULT.json]
                     train a CEX strategy spec (`strategy: liquidity_sweep`) on one market's candles
                     (CSV/Parquet/Binance ZIP, e.g. from `quant data fetch|import`); backtests the best
                     parameters on the training and test windows: metrics and trades in RESULT.json
    quant data fetch --exchange X --symbol B/Q --timeframe TF --since D [--until D] --out FILE.parquet
                     [--exchange-config CONFIG.json] [--max-retries N] [--backoff-max S]
                                                      candles from an exchange through ccxt (a fetch that fails
                                                      part-way keeps its complete pages: run it again to continue)
    quant data import FILE... --out FILE.parquet      candles from Binance kline ZIPs, CSV/Parquet, long prices
    quant db upgrade                                  apply migrations to $QUANT_DATABASE_URL (SQLite default)
    quant configs list [--stage S] [--universe U]     stored versions: current stage, live or not
    quant configs live [--universe U] [--json]        per universe: the live version, its forward return, drawdown
                                                      and circuit-breaker readings vs limits (or why none is live)
    quant configs history UNIVERSE [--json]           versions, events (stage changes, live/off, trips, pauses)
                                                      and live periods of one universe
    quant configs export ID | --live UNIVERSE         one configuration as JSON, for live trading (--live: the
                                                      universe's live version, plus its live state and limits)
    (configs commands, in quant_core.cli_configs, take --url URL; default $QUANT_DATABASE_URL, else the embedded
    SQLite)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quant_core.cli_configs import add_configs_parser


def cmd_simulate(args) -> int:
    from quant_core.cli_inputs import market_caps, minute_spreads, price_panel, print_headline
    from quant_core.runspec import load_run_spec
    from quant_core.sim.simulate import simulate

    spec = load_run_spec(args.spec)
    panel = price_panel(spec, args.prices)
    aux = {}
    if args.market_caps:
        aux["market_cap"] = market_caps(spec, args.market_caps, panel)
    from quant_core.sim.pool import get_pool

    pool = get_pool(spec.rule)
    takes_spreads = pool.rebalancer == "rvr" or pool.engine == "trad_hodling"
    if args.spreads and not takes_spreads:
        raise ValueError(f"--spreads: rule {spec.rule!r} does not use spreads (rvr__ hooks and the trad_hodling pool "
                         "do); drop --spreads or use an rvr__ rule")
    if pool.rebalancer == "rvr" and not args.spreads:
        raise ValueError(f"rule {spec.rule!r} pays half the CEX spread on what it trades: pass --spreads FILE "
                         "(date,token,spread, fractions of the price)")
    if args.spreads:
        aux["spread"] = minute_spreads(spec, args.spreads, panel)
    result = simulate(panel, spec, aux=aux or None)
    frame = result.to_frame(spec.tokens)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    print(f"wrote {frame.height} rows to {out}: final value {result.values[-1]:.2f}")
    print_headline(result)
    return 0


def cmd_train(args) -> int:
    from quant_core.runspec import load_run_spec, with_training

    spec = load_run_spec(args.spec)
    if spec.kind == "strategy":
        return _train_strategy(args, spec)
    from quant_core.report import train_report

    if args.candles:
        raise ValueError(f"--candles is for CEX strategy specs (`strategy: ...`); {args.spec} trains the pool rule "
                         f"{spec.rule!r} on a price panel: pass --prices FILE (long prices, or TOKEN=candles.parquet "
                         "per token) instead, or set `strategy:` in the spec")
    if args.timeframe:
        raise ValueError(f"--timeframe goes with --candles (CEX strategy specs); {args.spec} trains the pool rule "
                         f"{spec.rule!r}: drop --timeframe")
    if not args.prices:
        raise ValueError(f"{args.spec} trains the pool rule {spec.rule!r}, which needs prices: pass --prices FILE "
                         "(long prices date,token,price_usd, or TOKEN=candles.parquet per token)")
    spec = with_training(spec, budget=args.budget, seed=args.seed)
    from quant_core.cli_inputs import price_panel

    return _report(train_report(price_panel(spec, args.prices), spec, iterations_per_print=args.print_every, log=print),
                   args.out)


def _report(result, out: str | None) -> int:
    _write_result(result.to_json(), out)
    print(result.summary())
    return 0


def _write_result(text: str, out: str | None) -> None:
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


def _strategy_candles(path: str, timeframe: str | None, spec):
    """One market's candles from a candle file, their timeframe, checked against the spec's windows."""
    from datetime import timedelta

    from quant_core.data.gaps import GapPolicy, format_gap
    from quant_core.data.importers import CandleImportError, import_candles
    from quant_core.data.schema import timeframe_delta
    from quant_core.strategies.market import bars_per_day

    if not Path(path).is_file():
        raise FileNotFoundError(f"--candles {path}: no such file (write one with `quant data fetch` or "
                                "`quant data import`)")
    try:
        imported = import_candles(path, timeframe=timeframe, gap_policy=GapPolicy(on_larger="keep"))
    except CandleImportError as exc:
        if timeframe is None or "was asked" not in str(exc):
            raise
        raise ValueError(f"--timeframe {timeframe}: {exc}. For the command line: drop --timeframe (it is inferred "
                         f"from the spacing) or resample the file first (`quant data import {path} --resample "
                         f"{timeframe} --out FILE.parquet`)") from None
    candles, tf = imported.candles, imported.timeframe
    try:
        bars_per_day(tf)
    except ValueError:
        raise ValueError(f"--candles {path} holds {tf} candles; CEX strategies need a timeframe that divides a day "
                         "(1m, 5m, 15m, 30m, 1h, 4h, 1d): use finer candles, or pass --timeframe if the spacing "
                         "misled the inference") from None
    first, last = candles["timestamp"].min(), candles["timestamp"].max() + timeframe_delta(tf)
    end = spec.end_test or spec.end
    if spec.start < first or end > last:
        end_key = "endTestDateString" if spec.end_test else "endDateString"
        raise ValueError(f"the spec's window {spec.start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} (startDateString .. "
                         f"{end_key}) is not inside the candles of {path}, which cover {first:%Y-%m-%d %H:%M} .. "
                         f"{last:%Y-%m-%d %H:%M}: move the dates inside the data or fetch the missing candles")
    warm = candles.filter((candles["timestamp"] < spec.start)
                          & (candles["timestamp"] >= spec.start - timedelta(days=spec.max_memory_days))).height
    print(f"read {candles.height} {tf} candles from {path} ({first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}); "
          f"{warm} before startDateString for indicator warm-up")
    if imported.rejected:
        print(f"note: dropped {imported.rows_rejected} unusable row(s): " + "; ".join(imported.rejected_notes))
    inside = [g for g in imported.gaps if g[0] < end and g[1] > spec.start]
    if inside:
        shown = "; ".join(format_gap(g) for g in inside[:5]) + (" ..." if len(inside) > 5 else "")
        raise ValueError(f"--candles {path} misses {sum(n for _, _, n in inside)} {tf} candle(s) inside the spec's "
                         f"window {spec.start:%Y-%m-%d} .. {end:%Y-%m-%d}; the first missing candle opens at "
                         f"{inside[0][0]:%Y-%m-%d %H:%M} UTC (gaps: {shown}): fill them (`quant data import {path} "
                         f"--max-fill {max(n for _, _, n in inside)} --out FILLED.parquet` writes flat zero-volume "
                         "candles), re-fetch the missing candles, or move the window off the gaps")
    if imported.gaps:
        print(f"note: {len(imported.gaps)} gap(s) outside the spec's window (a gap in the warm-up shortens it: "
              "indicators count bars)")
    return candles, tf


def _train_strategy(args, spec) -> int:
    from quant_core.data.market_candles import MarketCandles
    from quant_core.report import train_report
    from quant_core.runspec import with_training

    if args.prices:
        raise ValueError(f"--prices is for pool specs; {args.spec} trains the CEX strategy {spec.strategy!r} on one "
                         "market's candles: pass --candles FILE (a CSV or Parquet candle file, e.g. from "
                         "`quant data fetch` or `quant data import`) instead of --prices")
    if not args.candles:
        raise ValueError(f"{args.spec} trains the CEX strategy {spec.strategy!r}, which reads one market's candles: "
                         "pass --candles FILE (a CSV or Parquet candle file, e.g. from `quant data fetch` or "
                         "`quant data import`)")
    spec = with_training(spec, budget=args.budget, seed=args.seed)
    if args.budget is not None and spec.optimisation_settings.method == "grid":
        print("note: --budget does not change a grid (its size is the product of its axes)")
    candles, timeframe = _strategy_candles(args.candles, args.timeframe, spec)
    return _report(train_report(MarketCandles(candles, timeframe), spec, log=print), args.out)


def _write_parquet(frame, out: str) -> Path:
    from quant_core.data.candle_store import write_parquet_atomic

    return write_parquet_atomic(frame, out)


def cmd_data_fetch(args) -> int:
    from quant_core.data.ccxt_source import CcxtSource
    from quant_core.data.incremental_ingest import fetch_to_file
    from quant_core.data.schema import Market, to_utc

    config = None
    if args.exchange_config:
        try:
            config = json.loads(Path(args.exchange_config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--exchange-config {args.exchange_config}: not a readable JSON object ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"--exchange-config {args.exchange_config}: must hold a JSON object (urls, options, ...)")
    market = Market(args.exchange, args.symbol, args.timeframe)
    start = to_utc(args.since)
    end = to_utc(args.until) if args.until else None
    if end is not None and not start < end:
        raise ValueError(f"--since ({args.since}) must be before --until ({args.until})")
    source = CcxtSource(args.exchange, config, max_retries=args.max_retries, backoff_max=args.backoff_max)
    frame, result = fetch_to_file(source, market, args.out, start=start, end=end)
    span = f"{frame['timestamp'].min()} .. {frame['timestamp'].max()}" if frame.height else "no candles"
    reports = result.fetch_reports
    print(f"wrote {frame.height} candles of {market.key} to {args.out}: {span} "
          f"({sum(r.requests for r in reports)} requests, {sum(r.retries for r in reports)} retries)")
    for note in (n for r in reports for n in r.notes):
        print(f"note: {note}")
    return 0


def cmd_data_import(args) -> int:
    from quant_core.data.gaps import GapPolicy
    from quant_core.data.importers import import_candles

    result = import_candles(
        args.files, timeframe=args.timeframe, token=args.token, repair=not args.strict,
        gap_policy=GapPolicy(max_fill_candles=args.max_fill, on_larger="keep" if args.keep_gaps else "fail"),
        resample_to=args.resample,
        max_unpacked_bytes=None if args.max_unpacked_mb is None else args.max_unpacked_mb * 2**20,
    )
    path = _write_parquet(result.candles, args.out)
    print(result.report())
    print(f"wrote {result.candles.height} {result.timeframe} candles to {path}")
    return 0


def cmd_db_upgrade(args) -> int:
    from quant_core.store import ConfigurationStore

    store = ConfigurationStore(args.url, migrate=True)
    print(f"migrations applied to {store.url}")
    store.dispose()
    return 0


def cmd_list(args) -> int:
    import difflib

    from quant_core.catalog import catalog, format_catalog

    entries = catalog() if args.kind is None else {args.kind: catalog()[args.kind]}
    if args.name:
        found = {k: [e for e in v if e["name"].rstrip("_") == args.name.rstrip("_")] for k, v in entries.items()}
        found = {k: v for k, v in found.items() if v}
        if not found:
            names = [e["name"] for v in entries.values() for e in v]
            close = difflib.get_close_matches(args.name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"nothing called {args.name!r}{hint}; `quant list` shows every rule, hook and strategy")
        entries = found
    print(json.dumps(entries, indent=2) if args.json else format_catalog(entries), end="" if not args.json else "\n")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant", description="TFMM / strategy simulation and training")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="one forward pass of a run spec over a price file")
    s.add_argument("spec", help="run spec (YAML or JSON file)")
    s.add_argument("--prices", required=True, help="long-format prices: CSV date,token,price_usd or Parquet")
    s.add_argument("--out", required=True, help="CSV to write")
    s.add_argument("--market-caps", help="long-format market caps (date,token,market_cap_usd) on the price rows, "
                   "for index_market_cap")
    s.add_argument("--spreads", help="long-format fractional CEX spreads (date,token,spread; any step: each minute "
                   "takes the last quote at or before it), for rvr__")
    s.set_defaults(func=cmd_simulate)
    t = sub.add_parser("train", help="train the spec's parameters on its training window (pool specs read "
                       "--prices; CEX strategy specs, `strategy: ...`, read --candles)")
    t.add_argument("spec")
    t.add_argument("--prices", action="append",
                   help="pool specs: long-format prices (CSV date,token,price_usd or Parquet timestamp,token,"
                   "price_usd), or TOKEN=candles.parquet (close prices); repeat for several files")
    t.add_argument("--candles", help="CEX strategy specs: one market's candles (CSV or Parquet with timestamp, open, "
                   "high, low, close, volume, or a Binance kline ZIP), e.g. from `quant data fetch` / `import`")
    t.add_argument("--timeframe", help="with --candles: the candles' timeframe (default: inferred from their "
                   "spacing); it must divide a day")
    t.add_argument("--out", help="write the result as JSON here (pools: parameters, metrics, history, timings; "
                   "strategies: parameters, train/test metrics and trades, top candidates, the run spec)")
    t.add_argument("--seed", type=int, help="overrides optimisation_settings.initial_random_key")
    t.add_argument("--budget", "--n-trials", dest="budget", type=int,
                   help="iterations (gradient_descent, bfgs), generations (cma_es), trials (optuna) or candidates "
                   "(random)")
    t.add_argument("--print-every", type=int, default=50, help="progress every N iterations (gradient descent)")
    t.set_defaults(func=cmd_train)
    ls = sub.add_parser("list", help="every pool rule, hook and CEX strategy with its parameters (default, range, "
                        "unit, description)")
    ls.add_argument("kind", nargs="?", choices=["rules", "hooks", "strategies"], help="only this kind")
    ls.add_argument("--name", help="only this rule, hook or strategy")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(func=cmd_list)
    data = sub.add_parser("data", help="market data: fetch from an exchange, import files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    f = data_sub.add_parser("fetch", help="OHLCV candles from an exchange through ccxt")
    f.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance, kraken")
    f.add_argument("--symbol", required=True, help="BASE/QUOTE, e.g. BTC/USDT")
    f.add_argument("--timeframe", required=True, help="5m, 15m, 1h, 4h, 1d, ...")
    f.add_argument("--since", required=True, help="first candle (UTC date or timestamp)")
    f.add_argument("--until", help="end, exclusive (default: the last closed candle)")
    f.add_argument("--out", required=True, help="Parquet file to write")
    f.add_argument("--exchange-config", help="JSON object passed to the ccxt exchange (urls, options, timeout); "
                   "API keys come from QUANT_<EXCHANGE>_API_KEY / _SECRET")
    from quant_core.cli_inputs import retry_count, seconds

    f.add_argument("--max-retries", type=retry_count, default=5, help="retries of a request that fails transiently "
                   "(network, 429, 5xx) before the fetch gives up (default 5); the candles of the pages already "
                   "fetched are kept in --out, and the same command run again continues from them")
    f.add_argument("--backoff-max", type=seconds, default=30.0, help="longest wait between two retries, in seconds "
                   "(default 30; waits double from 0.5 s, at least the exchange's Retry-After)")
    f.set_defaults(func=cmd_data_fetch)
    i = data_sub.add_parser("import", help="candles from files: Binance kline ZIP/CSV, CSV/Parquet with named "
                            "columns, long date,token,price_usd prices")
    i.add_argument("files", nargs="+", help="files or directories")
    i.add_argument("--out", required=True, help="Parquet file to write")
    i.add_argument("--timeframe", help="expected timeframe (default: from the file names / spacing)")
    i.add_argument("--token", help="which token/symbol, when a file holds several")
    i.add_argument("--max-fill", type=int, default=0, help="forward-fill gaps of up to N candles (flagged)")
    i.add_argument("--keep-gaps", action="store_true", help="keep longer gaps (reported) instead of failing")
    i.add_argument("--resample", help="resample to this coarser timeframe")
    i.add_argument("--strict", action="store_true", help="fail on any bad row instead of dropping and reporting it")
    i.add_argument("--max-unpacked-mb", type=_positive_int, metavar="MB",
                   help="the most a .zip member or .csv.gz may unpack to, in MiB (default 512): a guard against "
                   "decompression bombs; raise it for a genuine larger file")
    i.set_defaults(func=cmd_data_import)
    db = sub.add_parser("db", help="the configuration store's schema")
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--url", help="SQLAlchemy URL (default: $QUANT_DATABASE_URL, else the embedded SQLite)")
    db.set_defaults(func=cmd_db_upgrade)
    add_configs_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "budget", None) is not None and args.budget < 1:
        parser.error("--budget must be >= 1")
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, NotImplementedError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
