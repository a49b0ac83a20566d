"""What `quant simulate` and `quant train` read besides the spec (price panels, market caps, CEX spreads) and
the headline block `quant simulate` prints: kept apart from the argument parsing in quant_core.cli."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def price_panel(spec, prices: str | list[str]):
    """A price panel from long-format files and/or `TOKEN=candles.parquet` candle files (close prices)."""
    import polars as pl

    from quant_core.data.panel import panel_from_long_prices
    from quant_core.data.price_file import read_long_prices

    entries = [prices] if isinstance(prices, str) else list(prices)
    frames = []
    for entry in entries:
        token, sep, path = entry.partition("=")
        if not sep:
            frames.append(read_long_prices(entry))
            continue
        if not Path(path).exists():
            raise ValueError(f"--prices {entry}: {path} does not exist")
        candles = pl.read_parquet(path, glob=False)  # a name may hold [ ] * ?
        missing = [c for c in ("timestamp", "close") if c not in candles.columns]
        if missing:
            raise ValueError(f"--prices {entry}: a candle file needs columns timestamp and close (missing {missing}); "
                             "write long prices as a plain path instead")
        frames.append(candles.select("timestamp", pl.lit(token).alias("token"),
                                     pl.col("close").cast(pl.Float64).alias("price_usd")))
    if len(frames) > 1:
        frames = [f.with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))) for f in frames]
    return panel_from_long_prices(pl.concat(frames), spec.tokens)


def market_caps(spec, path: str, panel):
    """Market caps [rows, tokens alphabetical] on exactly the price panel's rows."""
    import numpy as np

    from quant_core.data.panel import panel_from_long_prices
    from quant_core.data.price_file import read_long_prices

    caps = panel_from_long_prices(read_long_prices(path, value_column="market_cap_usd"), spec.tokens)
    if len(caps.timestamps) != len(panel.timestamps) or np.any(caps.timestamps != panel.timestamps):
        raise ValueError(f"--market-caps {path}: its rows must have the same timestamps as --prices "
                         f"({caps!r} vs {panel!r})")
    return caps.prices[:, [caps.tokens.index(t) for t in spec.sorted_tokens]]


def minute_spreads(spec, path: str, panel):
    """Fractional CEX spreads [minutes of the run, tokens alphabetical] for rvr__, from a long file
    (date/timestamp, token, spread) at any step: each minute takes the last quote at or before it."""
    import numpy as np

    from quant_core.data.price_file import read_long_prices
    from quant_core.sim.window import plan_window

    window = plan_window(panel, spec)
    start = panel.timestamps[window.start_row].astype("datetime64[ms]").astype(np.int64)
    minutes = start + 60_000 * np.arange((window.n_steps - 1) * window.step_minutes + 1, dtype=np.int64)
    quotes = read_long_prices(path, value_column="spread", allow_zero=True)
    out = np.empty((len(minutes), len(spec.sorted_tokens)))
    for j, token in enumerate(spec.sorted_tokens):
        rows = quotes.filter(quotes["token"] == token)
        if rows.height == 0:
            raise ValueError(f"--spreads {path}: no spreads for token {token!r}; give one series per token of the "
                             f"spec {spec.sorted_tokens}")
        times = rows["timestamp"].dt.epoch("ms").to_numpy()
        first = int(np.searchsorted(times, minutes[0], side="right")) - 1
        if first < 0:
            raise ValueError(f"--spreads {path}: {token!r} has no spread at or before the run's start "
                             f"{panel.timestamps[window.start_row]}; add a quote at or before it")
        values = rows["price_usd"].to_numpy()
        if np.any(values >= 1):
            raise ValueError(f"--spreads {path}: {token!r} has a spread >= 1; spreads are fractions of the price "
                             "(0.001 = 10 bp)")
        out[:, j] = values[np.searchsorted(times, minutes, side="right") - 1]
    return out


def print_headline(result) -> None:
    """The run's headline metrics, in one block (the full set is in `result.summary()`)."""
    m = result.summary()
    days = (len(result.values) - 1) / result.steps_per_day
    lines = [f"  {'days':<22}{days:>12.2f}",
             f"  {'total return':<22}{m['returns']:>12.2%}",
             f"  {'vs HODL':<22}{m['returns_over_hodl']:>12.2%}",
             f"  {'annualised return':<22}{m['annualised_returns']:>12.2%}",
             f"  {'Sharpe (annualised)':<22}{m['sharpe']:>12.3f}",
             f"  {'max drawdown':<22}{m['greatest_draw_down']:>12.2%}"]
    if result.fee_revenue is not None and float(result.fee_revenue.sum()) > 0:
        lines.append(f"  {'fees earned':<22}{float(result.fee_revenue.sum()):>12.2f}")
    if result.lvr is not None:
        label = "RVR" if result.engine == "rvr" else "LVR"
        lines.append(f"  {label + ' (final)':<22}{float(result.lvr[-1]):>12.2f}")
    print("headline metrics:\n" + "\n".join(lines))


def retry_count(text: str) -> int:
    """argparse type of --max-retries: an integer >= 0 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type of --backoff-max: a finite number of seconds >= 0 (NaN and infinity are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value

