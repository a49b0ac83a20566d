"""The trade backtester: signals vectorised over bars, the position a `lax.scan` over bars, both
vmapped over parameter combinations, so a whole grid batch is one compiled call.

Bracket-order rules (shared by every CEX strategy that emits entry signals and stop levels):

- a signal on bar t (taken only when no position is open after bar t's exits, and t is not the last
  bar of the window) enters at bar t+1's open: fill = open x (1 + side x slippage);
  risk = |fill - stop|, target = fill + side x rr_ratio x risk; if the open gapped beyond the stop
  (side x (fill - stop) <= 0), or the stop is undefined (ATR not yet defined), the entry is skipped;
- from the entry bar on, each bar checks, long (short mirrored): stop hit when low <= stop, target hit
  when high >= target; both inside one bar -> the stop. A stop fills at min(open, stop) (a gap through
  it fills at the open), a target at max(open, target); otherwise, once the trade has been open
  max_hold_bars bars (the entry bar counts as one), it exits at the close ("time"), and at the window's
  last bar whatever is open exits at the close ("end");
- exit fill = price x (1 - side x slippage); the trade's return on its notional
  r = side (exit - entry) / entry - fee (1 + exit / entry) charges the taker fee on both sides;
- one position at a time, sized at position_fraction of the equity: equity *= 1 + fraction x r;
- equity is marked to market at every close (open trade: its entry fee paid, exit costs not yet);
  the marks at each UTC day's last bar form the daily equity path the daily metrics read.

Bars are handed in as whole UTC days of the window (D x bars_per_day) plus warm-up bars before it for
the indicators; nothing before the window is traded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from quant_core import metrics as M
from quant_core.strategies import get_strategy
from quant_core.strategies.schema import Strategy

EXIT_REASONS = ("stop", "target", "time", "end")

# metrics from the trades and the per-bar marks (the scan's accumulators); the daily equity path gets
# every metric of quant_core.metrics as well (daily_log_sharpe, sortino, calmar, returns, ...)
TRADE_METRICS = ("net_profit", "n_trades", "win_rate", "avg_win", "avg_loss", "profit_factor", "expectancy",
                 "sharpe_per_trade", "max_drawdown", "exposure")
STRATEGY_METRICS: tuple[str, ...] = TRADE_METRICS + tuple(M.METRICS)


class BacktestError(ValueError):
    """Bars or settings a backtest cannot use; the message names the fix."""


@dataclass(frozen=True)
class Costs:
    """Trading costs and sizing (fractions, not bps) of one backtest."""

    fee: float
    slippage: float
    position_fraction: float
    initial_capital: float

    @classmethod
    def from_settings(cls, s) -> Costs:
        """From `spec.strategy_settings` (bps there, fractions here)."""
        return cls(s.taker_fee_bps * 1e-4, s.slippage_bps * 1e-4, s.position_fraction, s.initial_capital)


@dataclass(frozen=True)
class Bars:
    """One market's candles: warm-up bars then the window's D whole days of bars_per_day bars each."""

    timestamp: np.ndarray  # int64 ms, candle open times
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    window_start: int  # index of the window's first bar
    bars_per_day: int

    def __post_init__(self) -> None:
        n = self.timestamp.size
        for name in ("open", "high", "low", "close", "volume"):
            if getattr(self, name).shape != (n,):
                raise BacktestError(f"bars.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if (n - self.window_start) % self.bars_per_day or n <= self.window_start:
            raise BacktestError(f"the window holds {n - self.window_start} bars, not whole days of "
                                f"{self.bars_per_day}: give whole UTC days")

    @property
    def n_days(self) -> int:
        return (self.timestamp.size - self.window_start) // self.bars_per_day

    @property
    def window(self) -> slice:
        return slice(self.window_start, self.timestamp.size)

    def ohlc(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("open", "high", "low", "close", "volume")}


class _State(NamedTuple):
    pos: jax.Array  # -1, 0, +1
    entry: jax.Array
    stop: jax.Array
    target: jax.Array
    held: jax.Array
    pend: jax.Array  # side of the entry due at the next open
    pend_stop: jax.Array
    equity: jax.Array  # cash equity (after closed trades)
    mark: jax.Array  # equity marked at the last close
    peak: jax.Array
    max_dd: jax.Array
    n: jax.Array
    wins: jax.Array
    sum_r: jax.Array
    sum_r2: jax.Array
    sum_win_r: jax.Array
    sum_loss_r: jax.Array
    gross_win: jax.Array
    gross_loss: jax.Array
    exposure: jax.Array


def _bar(state: _State, x, p, costs: Costs, record: bool):
    """One bar for every combination ([B] lanes); p holds the per-combination exit parameters."""
    o, h, lo, c, sig_row, atr_row, last = x
    fee, slip, frac = costs.fee, costs.slippage, costs.position_fraction
    s = state
    # 1. the entry decided at the previous close fills at this open
    fill = o * (1.0 + s.pend * slip)
    ok = (s.pend != 0) & (s.pend * (fill - s.pend_stop) > 0)
    pos = jnp.where(ok, s.pend, s.pos)
    entry = jnp.where(ok, fill, s.entry)
    stop = jnp.where(ok, s.pend_stop, s.stop)
    target = jnp.where(ok, fill + s.pend * p["rr_ratio"] * jnp.abs(fill - s.pend_stop), s.target)
    held = jnp.where(ok, 0.0, s.held)
    # 2. exits: stop first, then target, then time / end of window
    inpos = pos != 0
    held = held + inpos
    long = pos > 0
    hit_stop = inpos & jnp.where(long, lo <= stop, h >= stop)
    hit_target = inpos & jnp.where(long, h >= target, lo <= target)
    timed = inpos & (held >= p["max_hold_bars"])
    exit_ = hit_stop | hit_target | timed | (inpos & last)
    price = jnp.where(hit_stop, jnp.where(long, jnp.minimum(o, stop), jnp.maximum(o, stop)),
                      jnp.where(hit_target, jnp.where(long, jnp.maximum(o, target), jnp.minimum(o, target)), c))
    xfill = price * (1.0 - pos * slip)
    r = pos * (xfill - entry) / entry - fee * (1.0 + xfill / entry)
    pnl = s.equity * frac * r
    win = exit_ & (r > 0)
    loss = exit_ & ~(r > 0)
    equity = s.equity + jnp.where(exit_, pnl, 0.0)
    side_during = pos
    pos = jnp.where(exit_, 0.0, pos)
    mark = jnp.where(pos != 0, equity * (1.0 + frac * (pos * (c - entry) / entry - fee)), equity)
    peak = jnp.maximum(s.peak, mark)
    # 3. a signal at this close: the entry is due at the next open
    sig = sig_row[p["set"]].astype(jnp.float64)
    take = (pos == 0) & (sig != 0) & ~last
    atr = atr_row[p["atr_row"]]
    pend_stop = jnp.where(sig > 0, lo - p["stop_atr_mult"] * atr, h + p["stop_atr_mult"] * atr)
    new = _State(
        pos=pos, entry=entry, stop=stop, target=target, held=held,
        pend=jnp.where(take, sig, 0.0), pend_stop=jnp.where(take, pend_stop, 0.0),
        equity=equity, mark=mark, peak=peak, max_dd=jnp.maximum(s.max_dd, 1.0 - mark / peak),
        n=s.n + exit_, wins=s.wins + win, sum_r=s.sum_r + jnp.where(exit_, r, 0.0),
        sum_r2=s.sum_r2 + jnp.where(exit_, r * r, 0.0), sum_win_r=s.sum_win_r + jnp.where(win, r, 0.0),
        sum_loss_r=s.sum_loss_r + jnp.where(loss, r, 0.0), gross_win=s.gross_win + jnp.where(win, pnl, 0.0),
        gross_loss=s.gross_loss + jnp.where(loss, pnl, 0.0), exposure=s.exposure + inpos,
    )
    if not record:
        return new, None
    reason = jnp.where(hit_stop, 0, jnp.where(hit_target, 1, jnp.where(timed, 2, 3)))
    return new, {"exit": exit_, "side": side_during, "entry": entry, "exit_price": xfill, "r": r, "pnl": pnl,
                 "reason": jnp.where(exit_, reason, -1), "held": held, "mark": mark}


def _initial_state(b: int, capital: float) -> _State:
    z = jnp.zeros(b)
    cap = jnp.full(b, capital)
    return _State(pos=z, entry=jnp.ones(b), stop=z, target=z, held=z, pend=z, pend_stop=z, equity=cap, mark=cap,
                  peak=cap, max_dd=z, n=z, wins=z, sum_r=z, sum_r2=z, sum_win_r=z, sum_loss_r=z, gross_win=z,
                  gross_loss=z, exposure=z)


@functools.partial(jax.jit, static_argnames=("costs", "bars_per_day", "record"))
def _run(ohlc, signals, atr, params, costs: Costs, bars_per_day: int, record: bool = False):
    """Nested scans: days outer (their closing marks are the daily path), bars inner."""
    b = params["set"].shape[0]
    t = ohlc["open"].shape[0]
    last = jnp.arange(t) == t - 1
    xs = (ohlc["open"], ohlc["high"], ohlc["low"], ohlc["close"], signals, atr, last)
    days = jax.tree.map(lambda a: a.reshape((t // bars_per_day, bars_per_day) + a.shape[1:]), xs)

    def day(state, xd):
        state, ys = jax.lax.scan(lambda s, x: _bar(s, x, params, costs, record), state, xd)
        return state, (state.mark, ys)

    final, (marks, ys) = jax.lax.scan(day, _initial_state(b, costs.initial_capital), days)
    if record:
        ys = jax.tree.map(lambda a: a.reshape((t,) + a.shape[2:]), ys)
    return final, marks, ys


@functools.partial(jax.jit, static_argnames=("names", "n_bars"))
def _metrics(final: _State, marks, hodl, capital, names: tuple[str, ...], n_bars: int):
    """{name: [B]} from the scan's accumulators and the daily marks [D, B]."""
    n = final.n
    losses = n - final.wins
    mean_r = final.sum_r / n
    trade = {
        "net_profit": final.equity - capital,
        "n_trades": n,
        "win_rate": final.wins / n,
        "avg_win": final.sum_win_r / final.wins,
        "avg_loss": final.sum_loss_r / losses,
        "profit_factor": final.gross_win / jnp.abs(final.gross_loss),  # +inf with no loser
        "expectancy": mean_r,
        "sharpe_per_trade": mean_r / jnp.sqrt(jnp.maximum(final.sum_r2 / n - mean_r**2, 0.0)),
        "max_drawdown": -final.max_dd,
        "exposure": final.exposure / n_bars,
    }
    path = jnp.concatenate([jnp.full((1, marks.shape[1]), capital), marks], axis=0).T  # [B, D+1]
    bench = M.Benchmarks(hodl=hodl, uniform_hodl=hodl)
    out = {}
    for name in names:
        if name in trade:
            out[name] = trade[name]
        else:
            fn = M.get_metric(name)
            out[name] = jax.vmap(lambda v, fn=fn: fn(v, 1, bench))(path)
    return out


@dataclass
class BacktestResult:
    """Per combination: the requested metrics; with trades=True also its trades and per-bar equity."""

    metrics: dict[str, np.ndarray]  # name -> [B]
    daily_equity: np.ndarray  # [B, D + 1]: initial capital, then each day's closing mark
    day_starts: np.ndarray  # [D + 1] int64 ms: the window start, then each day's end
    trades: list[list[dict]] | None = None
    bar_equity: np.ndarray | None = None  # [B, T_window]
    bar_timestamps: np.ndarray | None = None


def prepare(bars: Bars, params: dict[str, np.ndarray], strategy: Strategy | str = "liquidity_sweep"):
    """The strategy's inputs to the state machine for a batch of combinations (see Strategy.prepare)."""
    s = get_strategy(strategy) if isinstance(strategy, str) else strategy
    return s.prepare(bars, s.batch(params))


def backtest(bars: Bars, params: dict[str, np.ndarray], costs: Costs, *, strategy: Strategy | str = "liquidity_sweep",
             metrics: tuple[str, ...] = STRATEGY_METRICS, trades: bool = False) -> BacktestResult:
    """Backtest B parameter combinations ({name: [B]}, user units; missing names take the strategy's defaults)
    in one compiled call. `trades=True` also returns each combination's trades and per-bar equity (keep B
    small)."""
    for name in metrics:
        if name not in STRATEGY_METRICS:
            raise BacktestError(f"unknown strategy metric {name!r}; valid: {sorted(STRATEGY_METRICS)}")
    win, signals, atr, lanes = prepare(bars, params, strategy)
    jwin = {k: jnp.asarray(v) for k, v in win.items()}
    final, marks, ys = _run(jwin, signals, jnp.asarray(atr), {k: jnp.asarray(v) for k, v in lanes.items()},
                            costs, bars.bars_per_day, trades)
    d, bpd = bars.n_days, bars.bars_per_day
    closes = win["close"].reshape(d, bpd)[:, -1]
    hodl = costs.initial_capital * np.concatenate([[1.0], closes / win["open"][0]])
    out = _metrics(final, marks, jnp.asarray(hodl), costs.initial_capital, tuple(metrics), d * bpd)
    ts = bars.timestamp[bars.window]
    day_starts = np.concatenate([[ts[0]], ts.reshape(d, bpd)[:, -1] + (ts[1] - ts[0] if ts.size > 1 else 0)])
    result = BacktestResult(
        metrics={k: np.asarray(v, dtype=np.float64) for k, v in out.items()},
        daily_equity=np.concatenate([np.full((marks.shape[1], 1), costs.initial_capital), np.asarray(marks).T], 1),
        day_starts=day_starts,
    )
    if trades:
        rec = {k: np.asarray(v) for k, v in ys.items()}
        result.trades = [_trades_of(rec, j, ts) for j in range(rec["exit"].shape[1])]
        result.bar_equity = rec["mark"].T
        result.bar_timestamps = ts
    return result


def _trades_of(rec: dict[str, np.ndarray], j: int, ts: np.ndarray) -> list[dict]:
    out = []
    for t in np.flatnonzero(rec["exit"][:, j]):
        first = t - int(rec["held"][t, j]) + 1
        out.append({
            "entry_bar": int(first), "exit_bar": int(t),
            "entry_time": int(ts[first]), "exit_time": int(ts[t]),
            "side": "long" if rec["side"][t, j] > 0 else "short",
            "entry_price": float(rec["entry"][t, j]), "exit_price": float(rec["exit_price"][t, j]),
            "return": float(rec["r"][t, j]), "pnl": float(rec["pnl"][t, j]),
            "exit_reason": EXIT_REASONS[int(rec["reason"][t, j])],
        })
    return out
