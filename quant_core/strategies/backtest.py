"""The trade backtester: signals vectorised over bars, the position a `lax.scan` over bars, both
vmapped over parameter combinations, so a whole grid batch is one compiled call.

A strategy hands the state machine a `Prepared` (quant_core.strategies.schema): the window's bars,
entry signals [T, S], optional exit signals [T, S], ATRs [T, A], per-combination lanes, and where its
stops are anchored. Bracket-order rules (shared by every CEX strategy):

- a signal on bar t (taken only when no position is open after bar t's exits, and t is not the last
  bar of the window) enters at bar t+1's open: fill = open x (1 + side x slippage);
- the initial stop is stop_atr_mult x ATR_t (the signal bar's ATR) away from its anchor: the signal
  bar's extreme ("extreme": long low_t - m ATR_t, short high_t + m ATR_t) or the fill ("fill": fill -
  side x m ATR_t); risk = |fill - stop|; if the open gapped beyond the stop (side x (fill - stop) <= 0,
  which a fill-anchored stop meets only with a zero distance), or the stop is undefined (ATR not yet
  defined), the entry is skipped;
- target = fill + side x rr_ratio x risk when the lanes carry rr_ratio (finite); a strategy without a
  profit target leaves the lane out (a static branch: the target test is a constant false);
- from the entry bar on, each bar's exits are tried in this order, long (short mirrored), and the first
  that applies closes the trade:
  1. stop: low <= stop, filled at min(open, stop) (a gap through it fills at the open);
  2. target: high >= target, filled at max(open, target); both inside one bar -> the stop (the bar's
     path is unknown; assume the worse);
  3. exit signal: exits[t] = +1 closes a long (-1 a short) at the close ("signal");
  4. time: the trade has been open max_hold_bars bars (the entry bar counts as one), at the close;
  5. end: the window's last bar, at the close.
  Stop and target are resting orders hit inside the bar, so they come before anything decided at the
  close. An exit signal is computed from the bar's close and fills at it, like the time exit at the same
  price, so it ranks before time only to name the reason the strategy chose. Without exit signals
  (exits None) step 3 is not compiled at all: a strategy without them (the liquidity sweep) pays nothing;
- an exit at a close and a new entry signal at the same close (a reversal) enter at the next open;
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
from quant_core.strategies.schema import Prepared, Strategy
from quant_core.strategies.tally import Tally
from quant_core.strategies.trade_events import run_events

# indexed by the recorded reason code (new reasons are appended so that codes keep their meaning)
EXIT_REASONS = ("stop", "target", "time", "end", "signal")
_REQUIRED_LANES = ("set", "atr_row", "stop_atr_mult", "max_hold_bars")
# Bars per iteration of the inner scan, by backend. On a GPU each scan iteration costs kernel launches whatever the
# batch, and 8 bars per iteration ran one call of 16,384 combinations 4.3x faster on an H200 (0.60 s -> 0.14 s;
# 32: 0.16 s, and a 4x longer compile); on the CPU unrolling only slowed the call (4,096 combinations: 2.1 s at 1,
# 3.6 s at 2, 5.6 s at 8). benchmarks/bench_backtest.py --unroll measures others (it sets BAR_UNROLL).
UNROLL_BY_BACKEND = {"cpu": 1, "gpu": 8}
BAR_UNROLL: int | None = None  # None: UNROLL_BY_BACKEND for the default backend
# How a metrics-only backtest runs: "events" steps from trade to trade (trade_events), "scan" bar by bar. On 2 CPU
# cores the events engine ran the 201,600-combination grid (batches of 4,096) in 10.2 s against 48.8 s, and one call
# of 4,096 random combinations in 1.29 s against 2.19 s; but its program compiles ~0.8 s slower (1.3 s against 0.5 s
# for 512 combinations over 157 days of 5m bars), and at 512 combinations it ran no faster (0.77 s against 0.78 s, 157
# days): so the CPU takes it for batches of EVENTS_MIN_BATCH or more. A GPU keeps the scan: measured there on an
# H200 (the grid in 1.7 s at 8 bars per iteration), the events engine not yet. EVENT_ENGINE True / False overrides
# both (bench_backtest --engines).
ENGINE_BY_BACKEND = {"cpu": "events", "gpu": "scan"}
EVENTS_MIN_BATCH = 2048
EVENT_ENGINE: bool | None = None


def event_engine(batch: int = EVENTS_MIN_BATCH) -> bool:
    """Whether a metrics-only backtest of `batch` combinations steps from trade to trade here."""
    if EVENT_ENGINE is not None:
        return EVENT_ENGINE
    return ENGINE_BY_BACKEND.get(jax.default_backend(), "scan") == "events" and batch >= EVENTS_MIN_BATCH


def bar_unroll() -> int:
    """Bars per iteration of the inner scan on this backend (or BAR_UNROLL where set)."""
    return BAR_UNROLL or UNROLL_BY_BACKEND.get(jax.default_backend(), 1)

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


# Costs are traced, not compile-time constants: markets that differ only in fees (binance 10 bps, kraken 40)
# share one compiled scan instead of compiling their own (~0.5 s per kernel and window length).
jax.tree_util.register_dataclass(Costs, data_fields=["fee", "slippage", "position_fraction", "initial_capital"],
                                 meta_fields=[])


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
    pend_stop: jax.Array  # its stop level (anchor "extreme") or stop distance m x ATR (anchor "fill")
    mark: jax.Array  # equity marked at the last close
    tally: Tally


def _bar(state: _State, x, p, costs: Costs, record: bool, stop_from_fill: bool):
    """One bar for every combination ([B] lanes); p holds the per-combination exit parameters.

    Static branches (no exit signals: exit_row None; no target: no "rr_ratio" lane; the stop anchor)
    keep what a strategy does not use out of the compiled scan."""
    o, h, lo, c, sig_row, exit_row, atr_row, last = x
    fee, slip, frac = costs.fee, costs.slippage, costs.position_fraction
    has_target = "rr_ratio" in p
    s, a = state, state.tally
    # 1. the entry decided at the previous close fills at this open
    fill = o * (1.0 + s.pend * slip)
    pend_stop = fill - s.pend * s.pend_stop if stop_from_fill else s.pend_stop
    ok = (s.pend != 0) & (s.pend * (fill - pend_stop) > 0)
    pos = jnp.where(ok, s.pend, s.pos)
    entry = jnp.where(ok, fill, s.entry)
    stop = jnp.where(ok, pend_stop, s.stop)
    target = (jnp.where(ok, fill + s.pend * p["rr_ratio"] * jnp.abs(fill - pend_stop), s.target) if has_target
              else s.target)
    held = jnp.where(ok, 0.0, s.held)
    # 2. exits: stop first, then target, then the exit signal, time, end of window
    inpos = pos != 0
    held = held + inpos
    long = pos > 0
    hit_stop = inpos & jnp.where(long, lo <= stop, h >= stop)
    hit_target = inpos & jnp.where(long, h >= target, lo <= target) if has_target else jnp.zeros_like(inpos)
    timed = inpos & (held >= p["max_hold_bars"])
    exit_ = hit_stop | hit_target | timed | (inpos & last)
    if exit_row is not None:
        signalled = inpos & (exit_row[p["set"]].astype(jnp.float64) == pos)
        exit_ = exit_ | signalled
    price = jnp.where(hit_stop, jnp.where(long, jnp.minimum(o, stop), jnp.maximum(o, stop)),
                      jnp.where(hit_target, jnp.where(long, jnp.maximum(o, target), jnp.minimum(o, target)), c))
    xfill = price * (1.0 - pos * slip)
    r = pos * (xfill - entry) / entry - fee * (1.0 + xfill / entry)
    pnl = a.equity * frac * r
    win = exit_ & (r > 0)
    loss = exit_ & ~(r > 0)
    equity = a.equity + jnp.where(exit_, pnl, 0.0)
    side_during = pos
    pos = jnp.where(exit_, 0.0, pos)
    mark = jnp.where(pos != 0, equity * (1.0 + frac * (pos * (c - entry) / entry - fee)), equity)
    peak = jnp.maximum(a.peak, mark)
    # 3. a signal at this close: the entry is due at the next open
    sig = sig_row[p["set"]].astype(jnp.float64)
    take = (pos == 0) & (sig != 0) & ~last
    atr = atr_row[p["atr_row"]]
    if stop_from_fill:
        new_stop = p["stop_atr_mult"] * atr  # the distance; the level needs the fill
    else:
        new_stop = jnp.where(sig > 0, lo - p["stop_atr_mult"] * atr, h + p["stop_atr_mult"] * atr)
    new = _State(
        pos=pos, entry=entry, stop=stop, target=target, held=held,
        pend=jnp.where(take, sig, 0.0), pend_stop=jnp.where(take, new_stop, 0.0),
        mark=mark, tally=Tally(
            equity=equity, peak=peak, max_dd=jnp.maximum(a.max_dd, 1.0 - mark / peak),
            n=a.n + exit_, wins=a.wins + win, sum_r=a.sum_r + jnp.where(exit_, r, 0.0),
            sum_r2=a.sum_r2 + jnp.where(exit_, r * r, 0.0), sum_win_r=a.sum_win_r + jnp.where(win, r, 0.0),
            sum_loss_r=a.sum_loss_r + jnp.where(loss, r, 0.0), gross_win=a.gross_win + jnp.where(win, pnl, 0.0),
            gross_loss=a.gross_loss + jnp.where(loss, pnl, 0.0), exposure=a.exposure + inpos),
    )
    if not record:
        return new, None
    later = jnp.where(timed, 2, 3)
    if exit_row is not None:
        later = jnp.where(signalled, 4, later)
    reason = jnp.where(hit_stop, 0, jnp.where(hit_target, 1, later))
    return new, {"exit": exit_, "side": side_during, "entry": entry, "exit_price": xfill, "r": r, "pnl": pnl,
                 "reason": jnp.where(exit_, reason, -1), "held": held, "mark": mark}


def _initial_state(b: int, capital: float) -> _State:
    z = jnp.zeros(b)
    cap = jnp.full(b, capital)
    return _State(pos=z, entry=jnp.ones(b), stop=z, target=z, held=z, pend=z, pend_stop=z, mark=cap,
                  tally=Tally.start(cap))


@functools.partial(jax.jit, static_argnames=("bars_per_day", "record", "stop_from_fill", "unroll"))
def _run(ohlc, signals, exits, atr, params, costs: Costs, bars_per_day: int, record: bool = False,
         stop_from_fill: bool = False, unroll: int = 1):
    """Nested scans: days outer (their closing marks are the daily path), bars inner. exits None (an
    empty pytree) compiles the scan without exit signals."""
    b = params["set"].shape[0]
    t = ohlc["open"].shape[0]
    last = jnp.arange(t) == t - 1
    xs = (ohlc["open"], ohlc["high"], ohlc["low"], ohlc["close"], signals, exits, atr, last)
    days = jax.tree.map(lambda a: a.reshape((t // bars_per_day, bars_per_day) + a.shape[1:]), xs)

    def day(state, xd):
        state, ys = jax.lax.scan(lambda s, x: _bar(s, x, params, costs, record, stop_from_fill), state, xd,
                                 unroll=unroll)
        return state, (state.mark, ys)

    final, (marks, ys) = jax.lax.scan(day, _initial_state(b, costs.initial_capital), days)
    final = final.tally
    if record:
        ys = jax.tree.map(lambda a: a.reshape((t,) + a.shape[2:]), ys)
    return final, marks, ys


@functools.partial(jax.jit, static_argnames=("names",))
def _metrics(final: Tally, marks, hodl, capital, names: tuple[str, ...], n_bars: int):
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


def prepare(bars: Bars, params: dict[str, np.ndarray], strategy: Strategy | str = "liquidity_sweep") -> Prepared:
    """The strategy's inputs to the state machine for a batch of combinations (see Strategy.prepare),
    checked against the contract so that a strategy's mistake is named here, not deep in a trace."""
    s = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if s.prepare is None:
        raise BacktestError(f"strategy {s.name!r} has no prepare function: it cannot be backtested")
    out = s.prepare(bars, s.batch(params))
    if not isinstance(out, Prepared):
        raise BacktestError(f"strategy {s.name!r}: prepare returned a {type(out).__name__}, not a Prepared")
    _check_prepared(out, s.name)
    return out


def _check_prepared(p: Prepared, name: str) -> None:
    t = p.bars["open"].shape[0]
    shape = tuple(p.entries.shape)
    if len(shape) != 2 or shape[0] != t:
        raise BacktestError(f"strategy {name!r}: entries have shape {shape}, expected ({t}, n_signal_sets)")
    if p.exits is not None and tuple(p.exits.shape) != shape:
        raise BacktestError(f"strategy {name!r}: exits have shape {tuple(p.exits.shape)}, expected {shape} "
                            "(the entries' signal sets)")
    if p.atr.ndim != 2 or p.atr.shape[0] != t:
        raise BacktestError(f"strategy {name!r}: atr has shape {p.atr.shape}, expected ({t}, n_atr_periods)")
    missing = [k for k in _REQUIRED_LANES if k not in p.lanes]
    if missing:
        raise BacktestError(f"strategy {name!r}: lanes miss {missing} (needed: {list(_REQUIRED_LANES)}, "
                            "optional: rr_ratio)")
    if p.stop_anchor not in ("extreme", "fill"):
        raise BacktestError(f"strategy {name!r}: stop_anchor {p.stop_anchor!r} is not 'extreme' or 'fill'")


def backtest(bars: Bars, params: dict[str, np.ndarray], costs: Costs, *, strategy: Strategy | str = "liquidity_sweep",
             metrics: tuple[str, ...] = STRATEGY_METRICS, trades: bool = False) -> BacktestResult:
    """Backtest B parameter combinations ({name: [B]}, user units; missing names take the strategy's defaults)
    in one compiled call. `trades=True` also returns each combination's trades and per-bar equity (keep B
    small)."""
    for name in metrics:
        if name not in STRATEGY_METRICS:
            raise BacktestError(f"unknown strategy metric {name!r}; valid: {sorted(STRATEGY_METRICS)}")
    prep = prepare(bars, params, strategy)
    win = prep.bars
    jwin = {k: jnp.asarray(v) for k, v in win.items()}
    exits = None if prep.exits is None else jnp.asarray(prep.exits)
    lanes = {k: jnp.asarray(v) for k, v in prep.lanes.items()}
    if trades or not event_engine(len(lanes["set"])):  # every bar recorded, or a small batch: the bar scan
        final, marks, ys = _run(jwin, prep.entries, exits, jnp.asarray(prep.atr), lanes, costs, bars.bars_per_day,
                                trades, prep.stop_anchor == "fill", bar_unroll())
    else:  # metrics only: stepped from trade to trade (trade_events), the scan's numbers
        (final, marks), ys = run_events(jwin, jnp.asarray(prep.entries), exits, jnp.asarray(prep.atr), lanes, costs,
                                        bars.bars_per_day, prep.stop_anchor == "fill"), None
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
