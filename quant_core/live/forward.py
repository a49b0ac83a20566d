"""A version run forward on data after its training window: one continuous simulation from the day it became
available, so a pool's reserves and a strategy's open position carry from one day to the next.

Day convention (one for both kinds): forward day d is [d 00:00, d+1 00:00) UTC; its log return takes the
value at d's start to the value at d's end, and it exists once d's candles have landed. A pool reads prices at
day boundaries (the row of day d closes day d), so its run starts one row earlier, at the last training price;
a strategy trades the bars of each day.
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


def run_start(tunable: Tunable, first_day: datetime) -> datetime:
    """Where a run whose first reported day is `first_day` starts (see the module docstring)."""
    return first_day - DAY if tunable.kind == "pool" else first_day


def day_of(label: str) -> str:
    return label[:10]


def run_days(tunable: Tunable, data, params: dict, first_day: datetime, last_day: datetime,
             bucket: int = 1) -> dict[str, ForwardDay]:
    """{YYYY-MM-DD: ForwardDay} for every day in [first_day, last_day] from one run of `params` (ending on a
    multiple of `bucket` days from its start: the data must reach that far, padded with `pad_flat`)."""
    start = run_start(tunable, first_day)
    days = (last_day + DAY - start).days
    ev = tunable.evaluate(data, [params], start, start + math.ceil(days / bucket) * bucket * DAY, summary=False,
                          benchmarks=True, trades=tunable.trades)
    bench = ev.benchmark_log_returns[tunable.benchmark]
    trades_by_day: dict[str, list[dict]] = {}
    for t in (ev.trades[0] if ev.trades else []):
        closed = str(np.datetime64(int(t["exit_time"]), "ms").astype("datetime64[D]"))
        trades_by_day.setdefault(closed, []).append(t)
    first, last = first_day.strftime("%Y-%m-%d"), last_day.strftime("%Y-%m-%d")
    out = {}
    for i, label in enumerate(ev.dates):
        d = day_of(label)
        if not first <= d <= last:
            continue
        out[d] = ForwardDay(log_return=float(ev.log_returns[0, i]), value=float(ev.daily_values[0, i + 1]),
                            benchmark_log_return=float(bench[i]), trades=trades_by_day.get(d, []))
    return out


def window_log_returns(tunable: Tunable, data, params: dict, start: datetime, end: datetime) -> dict[str, float]:
    """{day: log return} of `params` on the days of [start, end), labelled by the convention above."""
    days = run_days(tunable, data, params, start, end - DAY)
    return {d: v.log_return for d, v in days.items()}
