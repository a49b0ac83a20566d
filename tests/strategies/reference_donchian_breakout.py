"""A plain-Python reference of the Donchian breakout strategy and its backtest.

Written from the rules in the module docstrings of `quant_core.strategies.donchian_breakout` (signals,
indicators) and `quant_core.strategies.backtest` (the position state machine with exit signals, a stop
anchored at the fill and no target), with loops over bars and nothing shared with the JAX implementation
(nor with the liquidity-sweep reference): every indicator is recomputed at every bar from its definition,
so the tests compare two independent readings of the same rules.

Bars are indexed over the data handed in (warm-up included); trades report bar indices relative to the
window (`window_start` is window bar 0).
"""

from __future__ import annotations

import math

PARAM_NAMES = ("entry_period", "exit_period", "stop_atr_mult", "atr_period", "sma_period", "max_hold_bars",
               "allow_short")


def channel_high(high, period: int, t: int) -> float | None:
    """max(high[t-N .. t-1]) (the current bar excluded); None for t < N."""
    if t < period:
        return None
    best = -math.inf
    for i in range(t - period, t):
        best = max(best, high[i])
    return best


def channel_low(low, period: int, t: int) -> float | None:
    """min(low[t-N .. t-1]) (the current bar excluded); None for t < N."""
    if t < period:
        return None
    best = math.inf
    for i in range(t - period, t):
        best = min(best, low[i])
    return best


def sma(x, period: int, t: int) -> float | None:
    """mean(x[t-P+1 .. t]) (the current bar included); None when undefined (t < P-1 or P = 0)."""
    if period <= 0 or t < period - 1:
        return None
    total = 0.0
    for i in range(t - period + 1, t + 1):
        total += x[i]
    return total / period


def true_range(high, low, close, t: int) -> float:
    """max(H-L, |H - C_prev|, |L - C_prev|); the first bar: H-L."""
    if t == 0:
        return high[0] - low[0]
    return max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))


def atr(high, low, close, period: int, t: int) -> float | None:
    """SMA_n of the true range; None for t < n-1."""
    if t < period - 1:
        return None
    total = 0.0
    for i in range(t - period + 1, t + 1):
        total += true_range(high, low, close, i)
    return total / period


def entry_at(high, low, close, params: dict, t: int) -> int:
    """+1 long, -1 short, 0 none (undefined indicators and two-way bars give 0) for bar t."""
    n = int(params["entry_period"])
    upper, lower = channel_high(high, n, t), channel_low(low, n, t)
    if upper is None or lower is None:
        return 0
    trend_period = int(params["sma_period"])
    if trend_period:
        trend = sma(close, trend_period, t)
        if trend is None:
            return 0
        trend_long, trend_short = close[t] > trend, close[t] < trend
    else:
        trend_long = trend_short = True
    long = close[t] > upper and trend_long
    short = bool(int(params["allow_short"])) and close[t] < lower and trend_short
    if long and short:
        return 0
    return 1 if long else -1 if short else 0


def exit_at(high, low, close, params: dict, t: int) -> int:
    """+1: a long exits at this close, -1: a short does, 0: neither (the long exit first)."""
    n = int(params["exit_period"])
    upper, lower = channel_high(high, n, t), channel_low(low, n, t)
    if lower is not None and close[t] < lower:
        return 1
    if upper is not None and close[t] > upper:
        return -1
    return 0


def reference_signals(high, low, close, window_start: int, params: dict) -> tuple[list[int], list[int]]:
    """Per window bar: the entry signal and the exit signal."""
    entries, exits = [], []
    for t in range(window_start, len(close)):
        entries.append(entry_at(high, low, close, params, t))
        exits.append(exit_at(high, low, close, params, t))
    return entries, exits


def reference_backtest(open_, high, low, close, window_start: int, params: dict, fee: float, slippage: float,
                       position_fraction: float, initial_capital: float, *, timestamp=None,
                       stats: dict | None = None) -> tuple[list[dict], list[float], float]:
    """(trades, bar_equity, final_equity) of one parameter combination over the window.

    trades: dicts with entry_bar/exit_bar (window indices), entry_time/exit_time (from `timestamp`, None
    without it), side, entry_price/exit_price (fills with slippage), return, pnl, exit_reason.
    bar_equity: the equity marked at every window bar's close. `stats`, when given, is filled with counts
    of what happened (signals, stops filled at a gapped open, reversals, entries skipped for lack of an ATR).
    """
    open_, high, low, close = (list(map(float, a)) for a in (open_, high, low, close))
    entries, exits = reference_signals(high, low, close, window_start, params)
    m = float(params["stop_atr_mult"])
    atr_period = int(params["atr_period"])
    max_hold = int(params["max_hold_bars"])
    n_window = len(close) - window_start
    counts = {"entry_signals": sum(1 for s in entries if s), "stop_at_open": 0, "reversals": 0,
              "signals_while_in_position": 0, "skipped_no_atr": 0}

    equity = float(initial_capital)
    trades: list[dict] = []
    marks: list[float] = []
    side = 0  # the open position: +1 long, -1 short, 0 flat
    entry = stop = 0.0
    held = entry_bar = 0
    pending: tuple[int, float | None] | None = None  # (side, stop distance) of the entry due at this open

    for k in range(n_window):
        t = window_start + k
        o, h, lo, c = open_[t], high[t], low[t], close[t]
        last = k == n_window - 1

        # entry at this open, decided at the previous close; the stop hangs from the fill
        if pending is not None:
            p_side, distance = pending
            pending = None
            fill = o * (1.0 + p_side * slippage)
            if distance is None:
                counts["skipped_no_atr"] += 1
            else:
                p_stop = fill - p_side * distance
                if p_side * (fill - p_stop) > 0:
                    side, entry, stop = p_side, fill, p_stop
                    held, entry_bar = 0, k

        # exits: the stop inside the bar, then at the close the exit signal, time, the end of the window
        exited_here = False
        if side:
            held += 1
            hit_stop = lo <= stop if side > 0 else h >= stop
            reason = None
            if hit_stop:
                reason, price = "stop", (min(o, stop) if side > 0 else max(o, stop))
                counts["stop_at_open"] += price == o and o != stop
            elif exits[k] == side:
                reason, price = "signal", c
            elif held >= max_hold:
                reason, price = "time", c
            elif last:
                reason, price = "end", c
            if reason is not None:
                exit_fill = price * (1.0 - side * slippage)
                r = side * (exit_fill - entry) / entry - fee * (1.0 + exit_fill / entry)
                pnl = equity * position_fraction * r
                equity *= 1.0 + position_fraction * r
                trades.append({
                    "entry_bar": entry_bar, "exit_bar": k,
                    "entry_time": None if timestamp is None else int(timestamp[window_start + entry_bar]),
                    "exit_time": None if timestamp is None else int(timestamp[t]),
                    "side": "long" if side > 0 else "short", "entry_price": entry, "exit_price": exit_fill,
                    "return": r, "pnl": pnl, "exit_reason": reason,
                })
                exited_here = side
                side = 0

        # mark at the close: an open trade has paid its entry fee, not yet its exit costs
        if side:
            marks.append(equity * (1.0 + position_fraction * (side * (c - entry) / entry - fee)))
        else:
            marks.append(equity)

        # an entry signal at this close enters at the next open (flat after this bar's exits, not the last bar)
        if entries[k]:
            if side == 0 and not last:
                a = atr(high, low, close, atr_period, t)
                pending = (entries[k], None if a is None else m * a)
                counts["reversals"] += exited_here == -entries[k]
            elif side:
                counts["signals_while_in_position"] += 1

    if stats is not None:
        stats.update(counts)
    return trades, marks, equity
