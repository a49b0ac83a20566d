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

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.strategies.schema import Strategy, StrategyParam

_PARAMS = (
    StrategyParam("lookback", 20, 10, 100, "int",
                  description="bars before the current one whose high/low form the swing levels"),
    StrategyParam("pierce_depth", 0.001, 0.0005, 0.005, log_scale=True,
                  description="how far beyond the swing level (fraction of it) the wick must reach"),
    StrategyParam("volume_spike_threshold", 2.0, 1.5, 4.0,
                  description="volume of the sweep bar as a multiple of its volume SMA"),
    StrategyParam("volume_period", 20, 5, 50, "int", description="bars in the volume SMA"),
    StrategyParam("stop_atr_mult", 1.0, 0.5, 2.0, description="stop distance beyond the sweep extreme, in ATRs"),
    StrategyParam("rr_ratio", 2.0, 1.0, 4.0, description="target distance as a multiple of the risk"),
    StrategyParam("max_hold_bars", 24, 6, 96, "int", description="bars after which an open trade is closed"),
    StrategyParam("atr_period", 14, 14, 21, "choice", (14, 21), description="bars in the ATR"),
    StrategyParam("sma_period", 200, 0, 200, "choice", (0, 50, 100, 200),
                  description="trend filter SMA of the close (0: off)"),
)

# parameters that decide the entry signals (the rest decide stops, targets and exits)
SIGNAL_PARAMS = ("lookback", "pierce_depth", "volume_spike_threshold", "volume_period", "sma_period")


def _bucket(n: int, step: int = 32) -> int:
    """Table heights rounded up so one compiled function serves batches with slightly different maxima."""
    return max(step, -(-n // step) * step)


def rolling_extremes(high: np.ndarray, low: np.ndarray, max_lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """[L, T] tables, row L = max(high[t-L..t-1]) / min(low[t-L..t-1]) (row 0 and t < L: NaN)."""
    t = high.size
    hi = np.full((max_lookback + 1, t), np.nan)
    lo = np.full((max_lookback + 1, t), np.nan)
    run_hi = np.full(t, -np.inf)
    run_lo = np.full(t, np.inf)
    for lb in range(1, max_lookback + 1):
        if lb >= t:
            break
        run_hi[lb:] = np.maximum(run_hi[lb:], high[:-lb])  # adds bar t-lb to bar t's window
        run_lo[lb:] = np.minimum(run_lo[lb:], low[:-lb])
        hi[lb, lb:] = run_hi[lb:]
        lo[lb, lb:] = run_lo[lb:]
    return hi, lo


def rolling_means(x: np.ndarray, periods) -> np.ndarray:
    """[len(periods), T]: row i = mean(x[t-P+1..t]) with P = periods[i] (NaN before P-1 bars; P = 0: NaN)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full((len(periods), x.size), np.nan)
    for i, p in enumerate(periods):
        p = int(p)
        if 0 < p <= x.size:
            out[i, p - 1:] = (c[p:] - c[:-p]) / p
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    tr[0] = high[0] - low[0]
    return tr


def atr_table(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """[n_choices, T]: ATR for each atr_period choice, in the schema's order."""
    return rolling_means(true_range(high, low, close), LIQUIDITY_SWEEP.param("atr_period").choices)


def atr_index(atr_period: np.ndarray) -> np.ndarray:
    choices = np.asarray(LIQUIDITY_SWEEP.param("atr_period").choices)
    return np.searchsorted(choices, atr_period).astype(np.int32)


def indicator_tables(high, low, close, volume, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every indicator the signal sets need, over the whole data (warm-up included)."""
    lmax = _bucket(int(sets["lookback"].max()))
    pmax = _bucket(int(sets["volume_period"].max()))
    swing_hi, swing_lo = rolling_extremes(high, low, lmax)
    sma_choices = [p for p in LIQUIDITY_SWEEP.param("sma_period").choices]
    return {"swing_hi": swing_hi, "swing_lo": swing_lo, "volume_sma": rolling_means(volume, range(pmax + 1)),
            "close_sma": rolling_means(close, sma_choices)}


def set_columns(sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per signal set: integer row indices into the tables and the float thresholds."""
    sma_choices = np.asarray(LIQUIDITY_SWEEP.param("sma_period").choices)
    return {
        "lookback": sets["lookback"].astype(np.int32),
        "volume_period": sets["volume_period"].astype(np.int32),
        "sma_row": np.searchsorted(sma_choices, sets["sma_period"]).astype(np.int32),
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


def _pad(n: int) -> int:
    """Signal sets are padded to a power of two so batches reuse one compiled function."""
    return 1 << max(3, (n - 1).bit_length())


def prepare_batch(bars, p: dict[str, np.ndarray]):
    """Indicator tables, signal sets and per-combination lanes of a checked batch (host side; see
    Strategy.prepare)."""
    keys = np.stack([p[k] for k in SIGNAL_PARAMS], axis=1)
    uniq, set_index = np.unique(keys, axis=0, return_inverse=True)
    uniq = np.concatenate([uniq, np.repeat(uniq[:1], _pad(len(uniq)) - len(uniq), axis=0)])
    sets = {k: uniq[:, i] for i, k in enumerate(SIGNAL_PARAMS)}
    tables = indicator_tables(bars.high, bars.low, bars.close, bars.volume, sets)
    w = bars.window
    win = {k: v[w] for k, v in bars.ohlc().items()}
    signals = signal_table({k: jnp.asarray(v) for k, v in win.items()},
                           {k: jnp.asarray(v[:, w]) for k, v in tables.items()},
                           {k: jnp.asarray(v) for k, v in set_columns(sets).items()})
    atr = atr_table(bars.high, bars.low, bars.close)[:, w].T  # [T, n_atr]
    lanes = {"set": set_index.reshape(-1).astype(np.int32), "atr_row": atr_index(p["atr_period"]),
             "rr_ratio": p["rr_ratio"], "stop_atr_mult": p["stop_atr_mult"], "max_hold_bars": p["max_hold_bars"]}
    return win, signals, atr, lanes


LIQUIDITY_SWEEP = Strategy(
    "liquidity_sweep",
    _PARAMS,
    description="liquidity sweep: a wick through a recent swing high/low closes back inside it on a volume "
    "spike; trade the reversal with an ATR stop beyond the wick and a reward:risk target",
    prepare=prepare_batch,
)
