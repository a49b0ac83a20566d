"""The Donchian breakout: trend following on OHLCV alone (the "turtle" channel breakout).

Rules on bar t (all indicators read bars <= t only; bars are indexed over the data handed in,
warm-up included):

- upper_N(t) = max(high[t-N .. t-1]), lower_N(t) = min(low[t-N .. t-1]): the channel of the N bars
  before t (the current bar excluded; undefined for t < N);
- SMA_P(close)_t = mean(close[t-P+1 .. t]) (the current bar included; undefined for t < P-1);
- true range TR_t = max(high_t - low_t, |high_t - close_{t-1}|, |low_t - close_{t-1}|) (TR_0 = high_0 - low_0),
  ATR_n = SMA_n(TR), n = `atr_period`;
- long entry: close_t > upper_E(t), E = `entry_period`, and, when `sma_period` is not 0 (off),
  close_t > SMA_sma_period(close)_t;
- short entry (only with `allow_short` = 1): close_t < lower_E(t), and close_t < SMA(close)_t when the
  trend filter is on; a bar that signals both ways (only possible on bars with high < low) is skipped;
- exit signal (trailing channel, X = `exit_period`): a long exits when close_t < lower_X(t), a short when
  close_t > upper_X(t) (the long exit wins on a bar that meets both, again only possible on bad bars);
- an undefined indicator means no signal (neither entry nor exit);
- exit_period < entry_period: the trailing channel is the tighter one; other combinations are refused.

Entries, exits and costs are the bracket-order state machine of `quant_core.strategies.backtest` with a
stop anchored at the fill and no target: entry at the next bar's open (slippage applies), initial stop =
fill - side x stop_atr_mult x ATR_t of the signal bar t, the stop tested inside every bar, the exit signal
at the close, a time exit after max_hold_bars, the window's end; one position at a time; taker fee and
slippage on both sides. A close below lower_E is also below lower_X (X < E), so a short entry signal
closes an open long at that close and the short enters at the next open (a reversal), and vice versa.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.strategies.indicators import (
    ATR_PERIOD,
    TREND_SMA,
    atr_table,
    bucket,
    choice_index,
    rolling_extremes,
    rolling_means,
    signal_sets,
)
from quant_core.strategies.schema import Constraint, Prepared, Strategy, strategy_param

if TYPE_CHECKING:  # the type only: registering a strategy does not load the backtester
    from quant_core.strategies.backtest import Bars


_PARAMS = (
    strategy_param("entry_period", 10, 100, 20, kind="int", unit="bars",
       description="bars before the current one whose highest high / lowest low a close must break to enter"),
    strategy_param("exit_period", 5, 50, 10, kind="int", unit="bars",
       description="bars of the trailing channel whose opposite side a close must cross to exit "
       "(below entry_period)"),
    strategy_param("stop_atr_mult", 1.0, 5.0, 2.0, unit="ATRs",
                   description="initial stop distance from the entry fill"),
    ATR_PERIOD,
    dataclasses.replace(TREND_SMA, default=0),
    strategy_param("max_hold_bars", 24, 500, 200, kind="int", unit="bars",
                   description="bars after which an open trade closes"),
    strategy_param("allow_short", 0, 1, 1, kind="choice", choices=(0, 1), unit="flag",
       description="1: trade downside breakouts short as well; 0: longs only"),
)

# parameters that decide the entry and exit signals (the rest decide stops and time exits)
SIGNAL_PARAMS = ("entry_period", "exit_period", "sma_period", "allow_short")

CONSTRAINTS = (
    Constraint(("exit_period", "entry_period"), lambda x, e: x < e,
               "exit_period must be below entry_period (the trailing exit channel is the tighter one)"),
)


def indicator_tables(high: np.ndarray, low: np.ndarray, close: np.ndarray,
                     sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The channels (one row per period up to the batch's longest) and the trend SMAs over the whole data."""
    upper, lower = rolling_extremes(high, low, bucket(int(sets["entry_period"].max())))
    return {"upper": upper, "lower": lower,
            "close_sma": rolling_means(close, DONCHIAN_BREAKOUT.param("sma_period").choices)}


def set_columns(sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per signal set: integer row indices into the tables and the on/off switches."""
    return {
        "entry_period": sets["entry_period"].astype(np.int32),
        "exit_period": sets["exit_period"].astype(np.int32),
        "sma_row": choice_index(DONCHIAN_BREAKOUT.param("sma_period").choices, sets["sma_period"]),
        "sma_on": sets["sma_period"] > 0,
        "short_on": sets["allow_short"] > 0,
    }


@jax.jit
def signal_tables(close: jax.Array, tables: dict[str, jax.Array],
                  cols: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """([T, S] entries, [T, S] exits) int8 of S signal sets: entries +1 long / -1 short, exits +1 close a
    long / -1 close a short. NaN (undefined) channels and SMAs compare false: no signal."""

    def one(n_entry, n_exit, sma_row, sma_on, short_on):
        sma = tables["close_sma"][sma_row]
        long = (close > tables["upper"][n_entry]) & (~sma_on | (close > sma))
        short = short_on & (close < tables["lower"][n_entry]) & (~sma_on | (close < sma))
        entries = (long & ~short).astype(jnp.int8) - (short & ~long).astype(jnp.int8)
        exit_long = close < tables["lower"][n_exit]
        exit_short = (close > tables["upper"][n_exit]) & ~exit_long
        return entries, exit_long.astype(jnp.int8) - exit_short.astype(jnp.int8)

    entries, exits = jax.vmap(one)(cols["entry_period"], cols["exit_period"], cols["sma_row"], cols["sma_on"],
                                   cols["short_on"])
    return entries.T, exits.T


def prepare_batch(bars: Bars, p: dict[str, np.ndarray]) -> Prepared:
    """Channels, signal sets and per-combination lanes of a batch (host side; see Strategy.prepare): entry
    and exit signals, the stop anchored at the fill, no target (no rr_ratio lane)."""
    DONCHIAN_BREAKOUT.check_constraints(p)  # also when called without Strategy.batch
    sets, set_index = signal_sets(p, SIGNAL_PARAMS)
    tables = indicator_tables(bars.high, bars.low, bars.close, sets)
    w = bars.window
    win = {k: v[w] for k, v in bars.ohlc().items()}
    entries, exits = signal_tables(jnp.asarray(win["close"]), {k: jnp.asarray(v[:, w]) for k, v in tables.items()},
                                   {k: jnp.asarray(v) for k, v in set_columns(sets).items()})
    atr_choices = DONCHIAN_BREAKOUT.param("atr_period").choices
    atr = atr_table(bars.high, bars.low, bars.close, atr_choices)[:, w].T  # [T, n_atr]
    lanes = {"set": set_index, "atr_row": choice_index(atr_choices, p["atr_period"]),
             "stop_atr_mult": p["stop_atr_mult"], "max_hold_bars": p["max_hold_bars"]}
    return Prepared(bars=win, entries=entries, atr=atr, lanes=lanes, exits=exits, stop_anchor="fill")


DONCHIAN_BREAKOUT = Strategy(
    "donchian_breakout",
    _PARAMS,
    description="Donchian breakout: enter when the close breaks the highest high / lowest low of the previous "
    "entry_period bars (optionally with an SMA trend filter), exit when it crosses the tighter exit_period "
    "channel the other way, an ATR stop from the fill, no target",
    prepare=prepare_batch,
    constraints=CONSTRAINTS,
)

STRATEGY = DONCHIAN_BREAKOUT  # registers it (quant_core.strategies discovers module-level STRATEGY)
