"""A version run forward on data after its training window: one continuous simulation from the day it became
available, so a pool's reserves and a strategy's open position carry from one day to the next.

Day convention (one for both kinds): forward day d is [d 00:00, d+1 00:00) UTC; its log return takes the
value at d's start to the value at d's end, and it exists once d's candles have landed. A pool reads prices at
day boundaries (the row of day d closes day d), so its run starts one row earlier, at the last training price;
a strategy trades the bars of each day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from quant_core.contract import Tunable

DAY = timedelta(days=1)


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


def run_days(tunable: Tunable, data, params: dict, first_day: datetime, last_day: datetime) -> dict[str, ForwardDay]:
    """{YYYY-MM-DD: ForwardDay} for every day in [first_day, last_day] from one run of `params`."""
    ev = tunable.evaluate(data, [params], run_start(tunable, first_day), last_day + DAY, summary=False,
                          benchmarks=True, trades=tunable.trades)
    bench = ev.benchmark_log_returns[tunable.benchmark]
    trades_by_day: dict[str, list[dict]] = {}
    for t in (ev.trades[0] if ev.trades else []):
        closed = str(np.datetime64(int(t["exit_time"]), "ms").astype("datetime64[D]"))
        trades_by_day.setdefault(closed, []).append(t)
    first = first_day.strftime("%Y-%m-%d")
    out = {}
    for i, label in enumerate(ev.dates):
        d = day_of(label)
        if d < first:
            continue
        out[d] = ForwardDay(log_return=float(ev.log_returns[0, i]), value=float(ev.daily_values[0, i + 1]),
                            benchmark_log_return=float(bench[i]), trades=trades_by_day.get(d, []))
    return out


def window_log_returns(tunable: Tunable, data, params: dict, start: datetime, end: datetime) -> dict[str, float]:
    """{day: log return} of `params` on the days of [start, end), labelled by the convention above."""
    days = run_days(tunable, data, params, start, end - DAY)
    return {d: v.log_return for d, v in days.items()}
