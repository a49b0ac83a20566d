"""A version run forward on data after its training window: one continuous simulation from the day it became
available, so a pool's reserves and a strategy's open position carry from one day to the next.

Day convention (one for both kinds): forward day d is [d 00:00, d+1 00:00) UTC; its log return takes the
value at d's start to the value at d's end, and it exists once d's candles have landed. Both start at the day
the version became available: a pool at the price observed then (its last training price), a strategy with
the first bar of that day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from quant_core.contract import Tunable
from quant_core.data.schema import timeframe_ms

DAY = timedelta(days=1)
#: Forward runs end on a multiple of this many days from their start, on data padded with flat candles after the
#: last landed one: the simulation is causal, so the real days are unchanged, and a run's compiled shape changes
#: every BUCKET_DAYS days instead of every day (a new shape costs seconds of JIT compilation).
BUCKET_DAYS = 16


def pad_flat(frame: pl.DataFrame, timeframe: str, days: int) -> pl.DataFrame:
    """`frame` followed by `days` days of flat candles at its last close (volume 0): nothing moves, nothing
    trades on them; only days before them are ever reported."""
    if frame.height == 0 or days <= 0:
        return frame
    step = timeframe_ms(timeframe)
    last = frame.row(-1, named=True)
    n = days * 86_400_000 // step
    t0 = int(last["timestamp"].timestamp() * 1000) + step
    ts = pl.Series("timestamp", [t0 + i * step for i in range(n)]).cast(pl.Datetime("ms", "UTC"))
    close = float(last["close"])
    flat = pl.DataFrame({"timestamp": ts, **{c: [close] * n for c in ("open", "high", "low", "close")},
                         "volume": [0.0] * n}).cast(frame.schema)
    return pl.concat([frame, flat])


@dataclass(frozen=True)
class ForwardDay:
    log_return: float
    value: float  # at the day's end
    benchmark_log_return: float
    trades: list[dict] = field(default_factory=list)  # closed during the day


def label_shift(tunable: Tunable) -> timedelta:
    """How far an Evaluation's date label is after the forward day it measures: a pool's row at boundary t holds
    the close observed then (the candle of the day before), so its return labelled t is day t-1's move; a
    strategy labels each day by itself."""
    return DAY if tunable.kind == "pool" else timedelta(0)


def run_days(tunable: Tunable, data, params: dict, first_day: datetime, last_day: datetime,
             bucket: int | None = None) -> dict[str, ForwardDay]:
    """{YYYY-MM-DD: ForwardDay} for every day in [first_day, last_day] from one run of `params` starting at
    first_day 00:00. Without `bucket` the run ends at last_day's close (a strategy's open position is closed
    there, with its costs: right for a window that ends). With `bucket`, it runs on to a multiple of `bucket`
    days and at least one day past last_day, on data padded with `pad_flat`: positions stay open across the
    real days, as in live trading, and the compiled shape changes only every `bucket` days."""
    shift = label_shift(tunable)
    end = last_day + DAY + shift
    if bucket:
        end = first_day + math.ceil(((end - first_day).days + 1) / bucket) * bucket * DAY
    ev = tunable.evaluate(data, [params], first_day, end, summary=False, benchmarks=True, trades=tunable.trades)
    bench = ev.benchmark_log_returns[tunable.benchmark]
    trades_by_day: dict[str, list[dict]] = {}
    for t in (ev.trades[0] if ev.trades else []):
        closed = str(np.datetime64(int(t["exit_time"]), "ms").astype("datetime64[D]"))
        trades_by_day.setdefault(closed, []).append(t)
    first, last = first_day.strftime("%Y-%m-%d"), last_day.strftime("%Y-%m-%d")
    out = {}
    for i, label in enumerate(ev.dates):
        d = (datetime.fromisoformat(label[:10]) - shift).strftime("%Y-%m-%d")
        if not first <= d <= last:
            continue
        out[d] = ForwardDay(log_return=float(ev.log_returns[0, i]), value=float(ev.daily_values[0, i + 1]),
                            benchmark_log_return=float(bench[i]), trades=trades_by_day.get(d, []))
    return out


def window_log_returns(tunable: Tunable, data, params: dict, start: datetime, end: datetime) -> dict[str, float]:
    """{day: log return} of `params` on the days of [start, end), labelled by the convention above."""
    days = run_days(tunable, data, params, start, end - DAY)
    return {d: v.log_return for d, v in days.items()}
