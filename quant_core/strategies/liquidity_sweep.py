"""The liquidity-sweep strategy: a swing level is pierced, rejected on high volume, and price reverses.

Rules on bar t (all indicators read bars <= t only; bars are indexed over the data handed in,
warm-up included):

- swing_high_t = max(high[t-L .. t-1]), swing_low_t = min(low[t-L .. t-1]), L = `lookback`
  (the current bar excluded; undefined for t < L);
- SMA_P(x)_t = mean(x[t-P+1 .. t]) (the current bar included; undefined for t < P-1);
- true range TR_t = max(high_t - low_t, |high_t - close_{t-1}|, |low_t - close_{t-1}|) (TR_0 = high_0 - low_0),
  ATR_n = SMA_n(TR), n = `atr_period`;
- long signal: low_t < swing_low_t (1 - pierce_depth) and close_t > swing_low_t (pierced and rejected),
  volume_t >= volume_spike_threshold x SMA_P(volume)_t with P = `volume_period`, and, when
  `sma_period` is not 0 (off), close_t > SMA_sma_period(close)_t;
- short signal: high_t > swing_high_t (1 + pierce_depth) and close_t < swing_high_t, the same volume
  test, and close_t < SMA(close)_t when the trend filter is on;
- a bar that signals both ways is ambiguous and skipped; an undefined indicator means no signal;
- the stop is set at the signal bar: the sweep extreme -/+ stop_atr_mult x ATR_t (long: low_t - m ATR_t,
  short: high_t + m ATR_t).

Entries, exits and costs are the bracket-order state machine of `quant_core.strategies.backtest`
(entry at the next bar's open, target = entry +- rr_ratio x risk, stop first when both are inside one
bar, time exit after max_hold_bars, one position at a time, fees and slippage on both sides).
"""

from __future__ import annotations

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
from quant_core.strategies.schema import Prepared, Strategy, strategy_param

if TYPE_CHECKING:  # the type only: registering a strategy does not load the backtester
    from quant_core.strategies.backtest import Bars


_PARAMS = (
    strategy_param("lookback", 10, 100, 20, kind="int", unit="bars",
          description="bars before the current one whose high/low form the swing levels"),
    strategy_param("pierce_depth", 0.0005, 0.005, 0.001, log_scale=True, unit="fraction",
          description="how far beyond the swing level (fraction of it) the wick must reach"),
    strategy_param("volume_spike_threshold", 1.5, 4.0, 2.0, unit="x volume SMA",
          description="volume of the sweep bar as a multiple of its volume SMA"),
    strategy_param("volume_period", 5, 50, 20, kind="int", unit="bars", description="bars in the volume SMA"),
    strategy_param("stop_atr_mult", 0.5, 2.0, 1.0, unit="ATRs", description="stop distance beyond the sweep extreme"),
    strategy_param("rr_ratio", 1.0, 4.0, 2.0, unit="x risk", description="target distance as a multiple of the risk"),
    strategy_param("max_hold_bars", 6, 96, 24, kind="int", unit="bars",
                   description="bars after which an open trade closes"),
    ATR_PERIOD,
    TREND_SMA,
)

# parameters that decide the entry signals (the rest decide stops, targets and exits)
SIGNAL_PARAMS = ("lookback", "pierce_depth", "volume_spike_threshold", "volume_period", "sma_period")


def indicator_tables(high, low, close, volume, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every indicator the signal sets need, over the whole data (warm-up included)."""
    lmax = bucket(int(sets["lookback"].max()))
    pmax = bucket(int(sets["volume_period"].max()))
    swing_hi, swing_lo = rolling_extremes(high, low, lmax)
    sma_choices = [p for p in LIQUIDITY_SWEEP.param("sma_period").choices]
    return {"swing_hi": swing_hi, "swing_lo": swing_lo, "volume_sma": rolling_means(volume, range(pmax + 1)),
            "close_sma": rolling_means(close, sma_choices)}


def set_columns(sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per signal set: integer row indices into the tables and the float thresholds."""
    return {
        "lookback": sets["lookback"].astype(np.int32),
        "volume_period": sets["volume_period"].astype(np.int32),
        "sma_row": choice_index(LIQUIDITY_SWEEP.param("sma_period").choices, sets["sma_period"]),
        "sma_on": sets["sma_period"] > 0,
        "pierce_depth": sets["pierce_depth"],
        "volume_spike_threshold": sets["volume_spike_threshold"],
    }


@jax.jit
def signal_table(bars: dict[str, jax.Array], tables: dict[str, jax.Array], cols: dict[str, jax.Array]) -> jax.Array:
    """[T, S] int8 signals (+1 long, -1 short, 0 none) of S signal sets over the bars handed in."""
    low, high, close, volume = bars["low"], bars["high"], bars["close"], bars["volume"]

    def one(lb, vp, sma_row, sma_on, depth, vthr):
        sw_lo = tables["swing_lo"][lb]
        sw_hi = tables["swing_hi"][lb]
        spike = volume >= vthr * tables["volume_sma"][vp]
        sma = tables["close_sma"][sma_row]
        long = (low < sw_lo * (1.0 - depth)) & (close > sw_lo) & spike & (~sma_on | (close > sma))
        short = (high > sw_hi * (1.0 + depth)) & (close < sw_hi) & spike & (~sma_on | (close < sma))
        return (long & ~short).astype(jnp.int8) - (short & ~long).astype(jnp.int8)

    sig = jax.vmap(one)(cols["lookback"], cols["volume_period"], cols["sma_row"], cols["sma_on"],
                        cols["pierce_depth"], cols["volume_spike_threshold"])
    return sig.T


def prepare_batch(bars: Bars, p: dict[str, np.ndarray]) -> Prepared:
    """Indicator tables, signal sets and per-combination lanes of a checked batch (host side; see
    Strategy.prepare): entry signals only, the stop beyond the signal bar's extreme, a reward:risk target."""
    sets, set_index = signal_sets(p, SIGNAL_PARAMS)
    tables = indicator_tables(bars.high, bars.low, bars.close, bars.volume, sets)
    w = bars.window
    win = {k: v[w] for k, v in bars.ohlc().items()}
    signals = signal_table({k: jnp.asarray(v) for k, v in win.items()},
                           {k: jnp.asarray(v[:, w]) for k, v in tables.items()},
                           {k: jnp.asarray(v) for k, v in set_columns(sets).items()})
    atr_choices = LIQUIDITY_SWEEP.param("atr_period").choices
    atr = atr_table(bars.high, bars.low, bars.close, atr_choices)[:, w].T  # [T, n_atr]
    lanes = {"set": set_index, "atr_row": choice_index(atr_choices, p["atr_period"]),
             "rr_ratio": p["rr_ratio"], "stop_atr_mult": p["stop_atr_mult"], "max_hold_bars": p["max_hold_bars"]}
    return Prepared(bars=win, entries=signals, atr=atr, lanes=lanes, stop_anchor="extreme")


LIQUIDITY_SWEEP = Strategy(
    "liquidity_sweep",
    _PARAMS,
    description="liquidity sweep: a wick through a recent swing high/low closes back inside it on a volume "
    "spike; trade the reversal with an ATR stop beyond the wick and a reward:risk target",
    prepare=prepare_batch,
)

STRATEGY = LIQUIDITY_SWEEP  # registers it (quant_core.strategies discovers module-level STRATEGY)
