"""A plain-Python reference of the liquidity-sweep strategy and its bracket-order backtester.

Written from the rules in the module docstrings of `quant_core.strategies.liquidity_sweep` (signals,
indicators) and `quant_core.strategies.backtest` (the position state machine), with loops over bars and
nothing shared with the JAX implementation: every indicator is recomputed at every bar from its
definition, so the tests compare two independent readings of the same rules.

Bars are indexed over the data handed in (warm-up included); trades report bar indices relative to the
window (`window_start` is window bar 0).
"""

from __future__ import annotations

import math

PARAM_NAMES = ("lookback", "pierce_depth", "volume_spike_threshold", "volume_period", "stop_atr_mult", "rr_ratio",
               "max_hold_bars", "atr_period", "sma_period")


def sma(x, period: int, t: int) -> float | None:
    """mean(x[t-P+1 .. t]) (the current bar included); None when undefined (t < P-1 or P = 0)."""
    if period <= 0 or t < period - 1:
        return None
    total = 0.0
    for i in range(t - period + 1, t + 1):
        total += x[i]
    return total / period


def swing_high(high, lookback: int, t: int) -> float | None:
    """max(high[t-L .. t-1]) (the current bar excluded); None for t < L."""
    if t < lookback:
        return None
    best = -math.inf
    for i in range(t - lookback, t):
        best = max(best, high[i])
    return best


def swing_low(low, lookback: int, t: int) -> float | None:
    """min(low[t-L .. t-1]) (the current bar excluded); None for t < L."""
    if t < lookback:
        return None
    best = math.inf
    for i in range(t - lookback, t):
        best = min(best, low[i])
    return best


def true_range(high, low, close, t: int) -> float:
    """max(H-L, |H - C_prev|, |L - C_prev|); the first bar: H-L."""
    if t == 0:
        return high[0] - low[0]
    return max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))


def atr(high, low, close, period: int, t: int) -> float | None:
    """SMA_n of the true range; None for t < n-1."""
    if t < period - 1:
        return None
    return sma([true_range(high, low, close, i) for i in range(t - period + 1, t + 1)], period, period - 1)


def signal_at(high, low, close, volume, params: dict, t: int) -> int:
    """+1 long, -1 short, 0 none (undefined indicators and two-way bars give 0) for bar t."""
    lookback = int(params["lookback"])
    depth = float(params["pierce_depth"])
    sw_hi = swing_high(high, lookback, t)
    sw_lo = swing_low(low, lookback, t)
    vol_sma = sma(volume, int(params["volume_period"]), t)
    if sw_hi is None or sw_lo is None or vol_sma is None:
        return 0
    spike = volume[t] >= float(params["volume_spike_threshold"]) * vol_sma
    trend_period = int(params["sma_period"])
    if trend_period:
        trend = sma(close, trend_period, t)
        if trend is None:
            return 0
        trend_long, trend_short = close[t] > trend, close[t] < trend
    else:
        trend_long = trend_short = True
    long = low[t] < sw_lo * (1.0 - depth) and close[t] > sw_lo and spike and trend_long
    short = high[t] > sw_hi * (1.0 + depth) and close[t] < sw_hi and spike and trend_short
    if long and short:
        return 0
    return 1 if long else -1 if short else 0


def reference_signals(high, low, close, volume, window_start: int,
                      params: dict) -> tuple[list[int], list[float | None]]:
    """Per window bar: the signal and its stop level (None without a signal or when the ATR is undefined)."""
    sides, stops = [], []
    m = float(params["stop_atr_mult"])
    for t in range(window_start, len(close)):
        side = signal_at(high, low, close, volume, params, t)
        a = atr(high, low, close, int(params["atr_period"]), t) if side else None
        if a is None:  # an undefined indicator means no signal
            side = 0
        sides.append(side)
        stops.append(None if not side else (low[t] - m * a if side > 0 else high[t] + m * a))
    return sides, stops


def reference_backtest(open_, high, low, close, volume, window_start: int, params: dict, fee: float, slippage: float,
                       position_fraction: float, initial_capital: float, *, timestamp=None,
                       stats: dict | None = None) -> tuple[list[dict], list[float], float]:
    """(trades, bar_equity, final_equity) of one parameter combination over the window.

    trades: dicts with entry_bar/exit_bar (window indices), entry_time/exit_time (from `timestamp`, None
    without it), side, entry_price/exit_price (fills with slippage), return, pnl, exit_reason.
    bar_equity: the equity marked at every window bar's close. `stats`, when given, is filled with counts
    of what happened (signals, entries skipped on a gap, stop/target fills at the open).
    """
    open_, high, low, close, volume = (list(map(float, a)) for a in (open_, high, low, close, volume))
    sides, stops = reference_signals(high, low, close, volume, window_start, params)
    rr = float(params["rr_ratio"])
    max_hold = int(params["max_hold_bars"])
    n_window = len(close) - window_start
    counts = {"signals": sum(1 for s in sides if s), "skipped_gap": 0, "stop_at_open": 0, "target_at_open": 0,
              "signals_while_in_position": 0}

    equity = float(initial_capital)
    trades: list[dict] = []
    marks: list[float] = []
    side = 0  # the open position: +1 long, -1 short, 0 flat
    entry = stop = target = 0.0
    held = entry_bar = 0
    pending: tuple[int, float] | None = None  # (side, stop) of the entry due at this bar's open

    for k in range(n_window):
        t = window_start + k
        o, h, lo, c = open_[t], high[t], low[t], close[t]
        last = k == n_window - 1

        # entry at this open, decided at the previous close
        if pending is not None:
            p_side, p_stop = pending
            pending = None
            fill = o * (1.0 + p_side * slippage)
            if p_side * (fill - p_stop) > 0:
                side, entry, stop = p_side, fill, p_stop
                target = fill + p_side * rr * abs(fill - p_stop)
                held, entry_bar = 0, k
            else:
                counts["skipped_gap"] += 1

        # exits: stop first, then target, then time, then the end of the window
        if side:
            held += 1
            if side > 0:
                hit_stop, hit_target = lo <= stop, h >= target
            else:
                hit_stop, hit_target = h >= stop, lo <= target
            reason = None
            if hit_stop:
                reason, price = "stop", (min(o, stop) if side > 0 else max(o, stop))
                counts["stop_at_open"] += price == o and o != stop
            elif hit_target:
                reason, price = "target", (max(o, target) if side > 0 else min(o, target))
                counts["target_at_open"] += price == o and o != target
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
                side = 0

        # mark at the close: an open trade has paid its entry fee, not yet its exit costs
        if side:
            marks.append(equity * (1.0 + position_fraction * (side * (c - entry) / entry - fee)))
        else:
            marks.append(equity)

        # a signal at this close enters at the next open (flat after this bar's exits, not the last bar)
        if sides[k]:
            if side == 0 and not last:
                pending = (sides[k], stops[k])
            elif side:
                counts["signals_while_in_position"] += 1

    if stats is not None:
        stats.update(counts)
    return trades, marks, equity
