"""Candle backfills: what a retrain lacks, told as ranges with the backfill to launch, and the command that
launches one.

    python -m quant_assets.backfill --from 2024-01-01 --to 2024-03-31 [--market KEY ...]

materialises every selected market x day (default: every registry market) on the Dagster instance of
$DAGSTER_HOME (the checkout's `.dagster_home/` when unset, as the demo), so the UI shows the runs: one ranged
run per group of markets adjacent in the registry, each market fetched once for the whole range. It is the
one-run route `dagster asset materialize --partition-range` offered before market_data/ohlcv's backfill
policy became multi_run (that command accepts single_run assets only); the UI's backfill dialog does the
same work in runs of one market and at most MAX_PARTITIONS_PER_RUN days.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import dagster as dg

MAX_LISTED = 8  # markets named in a failure's text; its metadata lists them all


def day_ranges(days: Iterable[str]) -> list[tuple[str, str]]:
    """Consecutive UTC days (YYYY-MM-DD) as (first, last) ranges: 1,281 partitions read as a few lines."""
    out: list[tuple[str, str]] = []
    for d in sorted(set(days)):
        if out and date.fromisoformat(d) - date.fromisoformat(out[-1][1]) == timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def adjacent_groups(markets: Iterable[str], order: Sequence[str]) -> list[list[str]]:
    """The markets in registry order, split where a market between them is not selected: a partition range
    (first|A ... last|B) covers every market from A to B, so each group is one exact rectangle."""
    index = {m: i for i, m in enumerate(order)}
    groups: list[list[str]] = []
    for m in sorted(set(markets), key=index.__getitem__):
        if groups and index[m] == index[groups[-1][-1]] + 1:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def backfill_command(first: str, last: str, markets: Sequence[str], order: Sequence[str]) -> str:
    flags = "" if set(markets) == set(order) else "".join(f" --market {m}" for m in markets)
    return f"python -m quant_assets.backfill --from {first} --to {last}{flags}"


def _span(first: str, last: str) -> str:
    n = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
    return f"{first} (1 day)" if n == 1 else f"{first} .. {last} ({n} days)"


def missing_candles_failure(missing: Iterable[str], needed: int, order: Sequence[str], reader: str,
                            asset: str = "market_data/ohlcv") -> dg.Failure:
    """A Failure naming the missing candle partitions (`date|market` keys) as day ranges per market, and the
    backfill that lands them: the bounding dates x the markets concerned (present partitions inside it are
    fetched again, harmlessly), from the UI or with `backfill_command`."""
    by_market: dict[str, list[str]] = defaultdict(list)
    for key in missing:
        day, market = str(key).split("|")
        by_market[market].append(day)
    markets = sorted(by_market, key={m: i for i, m in enumerate(order)}.get)
    ranges = {m: day_ranges(by_market[m]) for m in markets}
    alike: dict[tuple, list[str]] = defaultdict(list)  # markets missing the same days share a line
    for m in markets:
        alike[tuple(ranges[m])].append(m)
    lines = []
    for rs, ms in list(alike.items())[:MAX_LISTED]:
        each = " each" if len(ms) > 1 else ""
        shown = [_span(a, b).replace(" days)", f" days{each})").replace(" day)", f" day{each})") for a, b in rs[:3]]
        more = f", and {len(rs) - 3} more ranges" if len(rs) > 3 else ""
        lines.append(f"  {', '.join(ms)}: {', '.join(shown)}{more}")
    if len(alike) > MAX_LISTED:
        lines.append(f"  ... and {len(alike) - MAX_LISTED} more lines (metadata: missing)")
    first = min(d for ds in by_market.values() for d in ds)
    last = max(d for ds in by_market.values() for d in ds)
    command = backfill_command(first, last, markets, order)
    n_missing = sum(len(ds) for ds in by_market.values())
    text = "\n".join([
        f"{reader} reads {needed:,} candle partitions of {asset}; {n_missing:,} were never materialised:", *lines,
        f"Backfill them, then run this again. In the UI: {asset} -> Materialize... -> date {first}...{last}, "
        f"market {', '.join(markets)}. Or from the repo root: {command}",
        "Nothing was loaded or trained.",
    ])
    return dg.Failure(description=text, allow_retries=False, metadata={
        "missing_partitions": n_missing,
        "needed_partitions": needed,
        "missing": dg.MetadataValue.md("\n".join(f"- `{m}`: " + ", ".join(_span(a, b) for a, b in ranges[m])
                                                 for m in markets)),
        "backfill_asset": asset,
        "backfill_dates": f"{first}...{last}",
        "backfill_markets": markets,
        "backfill_partition_ranges": [f"{first}|{g[0]}...{last}|{g[-1]}" for g in adjacent_groups(markets, order)],
        "backfill_command": command,
    })


def backfill_candles(defs: dg.Definitions, instance: dg.DagsterInstance, first: str, last: str,
                     markets: Sequence[str], order: Sequence[str],
                     run_config: dict | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialise markets x [first, last] in one ranged run per group of adjacent markets."""
    from quant_assets.defs.market_data.assets import OHLCV_KEY

    return [dg.materialize(list(defs.assets), selection=[OHLCV_KEY], instance=instance,
                           resources=dict(defs.resources), run_config=run_config, raise_on_error=False,
                           tags={"dagster/asset_partition_range_start": f"{first}|{group[0]}",
                                 "dagster/asset_partition_range_end": f"{last}|{group[-1]}"})
            for group in adjacent_groups(markets, order)]


def _day(parser: argparse.ArgumentParser, flag: str, value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        parser.error(f"{flag} {value!r}: expected a UTC day, YYYY-MM-DD")  # exits
    return value


def main(argv: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> int:
    import difflib

    from quant_assets.registry import current_registry

    parser = argparse.ArgumentParser(prog="python -m quant_assets.backfill",
                                     description="Backfill market_data/ohlcv for every selected market x day.")
    parser.add_argument("--from", dest="first", required=True, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, help="last UTC day (included), YYYY-MM-DD")
    parser.add_argument("--market", dest="markets", action="append",
                        help="market key exchange.BASE-QUOTE.timeframe (repeatable; default: every registry market)")
    args = parser.parse_args(argv)
    first, last = _day(parser, "--from", args.first), _day(parser, "--to", args.last)
    registry = current_registry()
    order = [m.key for m in registry.markets]
    for m in args.markets or []:
        if m not in order:
            close = difflib.get_close_matches(m, order, n=3)
            parser.error(f"--market {m}: not in the registry" + (f"; did you mean {', '.join(close)}?" if close else
                                                                  f"; known: {', '.join(order)}"))
    if last < first:
        parser.error(f"--to {last} is before --from {first}")
    if first < str(registry.partitions_start)[:10]:
        parser.error(f"--from {first} is before the registry's partitions_start {registry.partitions_start}")
    markets = [m for m in order if m in set(args.markets or order)]
    from quant_assets.definitions import build_definitions

    if instance is None:
        from quant_assets.demo import ensure_dagster_home

        ensure_dagster_home()
        instance = dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    results = backfill_candles(build_definitions(), instance, first, last, markets, order, run_config=quiet)
    days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
    ok = all(r.success for r in results)
    print(f"{len(markets) * days} candle partitions ({len(markets)} markets x {days} days, {first} .. {last}) in "
          f"{len(results)} run(s): {'ok' if ok else 'FAILED'} ({', '.join(r.run_id for r in results)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
