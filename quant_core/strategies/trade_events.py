"""The backtester's state machine stepped from trade to trade instead of bar by bar.

Why: a combination is flat on most bars (median exposure 0 and at most ~170 trades over 26,208 bars in a batch of
4,096 random liquidity-sweep combinations), yet the bar scan of `backtest._run` pays every bar, and on XLA:CPU it
pays it many times over (each of the ~20 state fields is its own fused loop re-reading the inputs). Here each loop
iteration is one entry attempt per combination: jump to the next entry signal (a bitmask per 64 bars and a
next-nonzero-word table, so a jump costs a few gathers), fill it, then walk the trade's bars in chunks of 64 until
it exits. The bracket-order rules and every formula are `backtest._bar`'s (the module docstring of backtest says
them); marks, peak and drawdown are taken on the same bars in the same order, so the results are the scan's to
rounding (XLA may contract a multiply-add differently in the two programs: 1 ulp seen;
tests/strategies/test_trade_events.py). The scan stays for `trades=True`, which records every bar.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from quant_core.strategies.tally import Tally

CHUNK = 32  # bars examined per step of a trade's exit search
WORD = 64  # bars per word of the entry-signal bitmask


class _Lane(NamedTuple):
    t_from: jax.Array  # the first bar whose close may give the next entry signal
    done: jax.Array
    tally: Tally
    daily: jax.Array  # [D] each day's closing mark


class _Exit(NamedTuple):
    base: jax.Array  # first bar of the next chunk
    found: jax.Array
    bar: jax.Array
    r: jax.Array
    pnl: jax.Array
    peak: jax.Array
    max_dd: jax.Array


def signal_words(entries: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per signal set: bit j of word w says bar 64w + j has an entry signal (the window's last bar, whose signal
    is never taken, left out), and the first word at or after w that has a bit set (W where none)."""
    t, s = entries.shape
    n_words = -(-t // WORD)
    has = (entries != 0) & (jnp.arange(t) < t - 1)[:, None]
    has = jnp.concatenate([has, jnp.zeros((n_words * WORD - t, s), bool)]).reshape(n_words, WORD, s)
    bits = jnp.sum(has.astype(jnp.uint64) << jnp.arange(WORD, dtype=jnp.uint64)[None, :, None], axis=1)
    idx = jnp.where(bits != 0, jnp.arange(n_words, dtype=jnp.int32)[:, None], n_words)
    nxt = jax.lax.cummin(jnp.concatenate([idx, jnp.full((1, s), n_words, jnp.int32)]), axis=0, reverse=True)
    return bits, nxt


def _lowest_bit(word: jax.Array) -> jax.Array:
    """Index of the lowest set bit of a nonzero uint64."""
    return (63 - jax.lax.clz(word & (~word + jnp.uint64(1)))).astype(jnp.int32)


def _next_signal(bits: jax.Array, nxt: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
    """The first bar >= t with an entry signal in set s (a bar past the window where none)."""
    n_words = bits.shape[0]
    w = jnp.minimum(t // WORD, n_words - 1)
    here = bits[w, s] & (jnp.uint64(0xFFFFFFFFFFFFFFFF) << (t % WORD).astype(jnp.uint64))
    here = jnp.where(t < n_words * WORD, here, jnp.uint64(0))
    w2 = nxt[jnp.minimum(w + 1, n_words), s]
    later = bits[jnp.minimum(w2, n_words - 1), s]
    return jnp.where(here != 0, w * WORD + _lowest_bit(here),
                     jnp.where(w2 < n_words, w2 * WORD + _lowest_bit(later), n_words * WORD))


@functools.partial(jax.jit, static_argnames=("bars_per_day", "stop_from_fill"))
def run_events(ohlc, signals, exits, atr, params, costs, bars_per_day: int, stop_from_fill: bool = False):
    """The scan's (final accumulators, daily marks [D, B]) for metrics: `backtest._run` without `record`."""
    o, h, lo, c = ohlc["open"], ohlc["high"], ohlc["low"], ohlc["close"]
    t = o.shape[0]
    fee, slip, frac = costs.fee, costs.slippage, costs.position_fraction
    has_target = "rr_ratio" in params
    bits, nxt = signal_words(signals)
    day_end = jnp.arange(1, t // bars_per_day + 1) * bars_per_day - 1
    offsets = jnp.arange(CHUNK, dtype=jnp.int32)

    def lane(p):
        s = p["set"]

        def attempt(st: _Lane) -> _Lane:
            ts = _next_signal(bits, nxt, s, st.t_from)
            done = st.done | (ts >= t - 1)
            ts = jnp.minimum(ts, t - 2)
            f = ts + 1
            side = signals[ts, s].astype(jnp.float64)
            fill = o[f] * (1.0 + side * slip)
            atr_v = atr[ts, p["atr_row"]]
            if stop_from_fill:
                stop = fill - side * (p["stop_atr_mult"] * atr_v)
            else:
                stop = jnp.where(side > 0, lo[ts] - p["stop_atr_mult"] * atr_v, h[ts] + p["stop_atr_mult"] * atr_v)
            ok = (side != 0) & (side * (fill - stop) > 0)
            target = fill + side * p["rr_ratio"] * jnp.abs(fill - stop) if has_target else jnp.float64(0.0)
            active = ~done & ok
            long = side > 0
            a = st.tally
            equity = a.equity

            def chunk(x: _Exit) -> _Exit:
                b = x.base + offsets
                bb = jnp.minimum(b, t - 1)
                ob, hb, lb, cb = o[bb], h[bb], lo[bb], c[bb]
                held = (b - f + 1).astype(jnp.float64)
                inpos = (b >= f) & (b < t)
                hit_stop = inpos & jnp.where(long, lb <= stop, hb >= stop)
                no_target = jnp.zeros_like(inpos)
                hit_target = inpos & jnp.where(long, hb >= target, lb <= target) if has_target else no_target
                ex = hit_stop | hit_target | (inpos & (held >= p["max_hold_bars"])) | (inpos & (b == t - 1))
                if exits is not None:
                    ex = ex | (inpos & (exits[bb, s].astype(jnp.float64) == side))
                found = jnp.any(ex)
                j = jnp.argmax(ex)
                price = jnp.where(hit_stop[j], jnp.where(long, jnp.minimum(ob[j], stop), jnp.maximum(ob[j], stop)),
                                  jnp.where(hit_target[j], jnp.where(long, jnp.maximum(ob[j], target),
                                                                     jnp.minimum(ob[j], target)), cb[j]))
                xfill = price * (1.0 - side * slip)
                r = side * (xfill - fill) / fill - fee * (1.0 + xfill / fill)
                pnl = equity * frac * r
                open_bar = inpos & (~found | (offsets < j))
                mark = jnp.where(open_bar, equity * (1.0 + frac * (side * (cb - fill) / fill - fee)),
                                 equity + pnl)
                seen = open_bar | (found & (offsets == j))
                peaks = jnp.maximum(x.peak, jax.lax.cummax(jnp.where(seen, mark, -jnp.inf)))
                dd = jnp.max(jnp.where(seen, 1.0 - mark / peaks, -jnp.inf))
                return _Exit(x.base + CHUNK, found, b[j], r, pnl, peaks[-1], jnp.maximum(x.max_dd, dd))

            start = _Exit(f - f % CHUNK, ~active, f, jnp.float64(0.0), jnp.float64(0.0), a.peak, a.max_dd)
            x = jax.lax.while_loop(lambda x: ~x.found, chunk, start)
            win = x.r > 0
            after = equity + x.pnl
            in_trade = (day_end >= f) & (day_end < x.bar)
            marks = jnp.where(in_trade, equity * (1.0 + frac * (side * (c[day_end] - fill) / fill - fee)), after)
            traded = _Lane(
                t_from=x.bar, done=done, daily=jnp.where(day_end >= f, marks, st.daily), tally=Tally(
                    equity=after, peak=x.peak, max_dd=x.max_dd, n=a.n + 1.0, wins=a.wins + win,
                    sum_r=a.sum_r + x.r, sum_r2=a.sum_r2 + x.r * x.r, sum_win_r=a.sum_win_r + jnp.where(win, x.r, 0.0),
                    sum_loss_r=a.sum_loss_r + jnp.where(win, 0.0, x.r),
                    gross_win=a.gross_win + jnp.where(win, x.pnl, 0.0),
                    gross_loss=a.gross_loss + jnp.where(win, 0.0, x.pnl),
                    exposure=a.exposure + (x.bar - f + 1).astype(jnp.float64)),
            )
            skipped = st._replace(t_from=jnp.where(done, st.t_from, f), done=done)
            return jax.tree.map(lambda new, old: jnp.where(active, new, old), traded, skipped)

        cap = costs.initial_capital * jnp.ones((), jnp.float64)
        init = _Lane(jnp.int32(0), jnp.bool_(False), Tally.start(cap), jnp.full(day_end.shape, cap))
        return jax.lax.while_loop(lambda st: ~st.done, attempt, init)

    out = jax.vmap(lane)(params)
    return out.tally, out.daily.T
