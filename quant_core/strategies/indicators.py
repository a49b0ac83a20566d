"""Indicator tables and signal-set batching shared by the CEX strategies (host side, NumPy).

Every table covers all the bars handed in (warm-up included) with NaN where the indicator is not yet
defined, so a strategy's vectorised signal rules read "undefined" as "no signal" (comparisons with NaN
are false). Tables are indexed by period (one row per period) so that a vmapped signal function picks
its row with an integer, and their heights are bucketed so that batches with slightly different maxima
reuse one compiled function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quant_core.strategies.schema import strategy_param

# the indicator parameters strategies share (a strategy may give another default: dataclasses.replace)
ATR_PERIOD = strategy_param("atr_period", 14, 21, 14, kind="choice", choices=(14, 21), unit="bars",
                            description="bars in the ATR")
TREND_SMA = strategy_param("sma_period", 0, 200, 200, kind="choice", choices=(0, 50, 100, 200), unit="bars",
                           description="trend filter SMA of the close (0: off)")


def bucket(n: int, step: int = 32) -> int:
    """Table heights rounded up so one compiled function serves batches with slightly different maxima."""
    return max(step, -(-n // step) * step)


def pad_sets(n: int) -> int:
    """Signal sets are padded to a power of two (at least 8) so batches reuse one compiled function."""
    return 1 << max(3, (n - 1).bit_length())


def rolling_extremes(high: np.ndarray, low: np.ndarray, max_lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """[L + 1, T] tables, row L = max(high[t-L..t-1]) / min(low[t-L..t-1]) (row 0 and t < L: NaN).

    The current bar is excluded: a breakout or sweep compares bar t with the bars before it."""
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


def rolling_means(x: np.ndarray, periods: Sequence[float] | range) -> np.ndarray:
    """[len(periods), T]: row i = mean(x[t-P+1..t]) with P = periods[i] (NaN before P-1 bars; P = 0: NaN)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full((len(periods), x.size), np.nan)
    for i, p in enumerate(periods):
        p = int(p)
        if 0 < p <= x.size:
            out[i, p - 1:] = (c[p:] - c[:-p]) / p
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(high - low, |high - close_prev|, |low - close_prev|); the first bar has no previous close: high - low."""
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    tr[0] = high[0] - low[0]
    return tr


def atr_table(high: np.ndarray, low: np.ndarray, close: np.ndarray, periods: Sequence[float]) -> np.ndarray:
    """[len(periods), T]: ATR_n = SMA_n(true range) for each period n (a choice parameter's choices)."""
    return rolling_means(true_range(high, low, close), periods)


def choice_index(choices: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Row indices (int32) of checked choice-parameter values into a table built over `choices` (sorted)."""
    return np.searchsorted(np.asarray(choices), values).astype(np.int32)


def signal_sets(p: dict[str, np.ndarray], names: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The distinct signal sets of a batch and each combination's set index.

    Combinations that differ only in exit/stop parameters share their signals: signals are computed once
    per distinct tuple of `names`. Sets are padded (repeating the first) to `pad_sets` rows."""
    keys = np.stack([p[k] for k in names], axis=1)
    uniq, set_index = np.unique(keys, axis=0, return_inverse=True)
    uniq = np.concatenate([uniq, np.repeat(uniq[:1], pad_sets(len(uniq)) - len(uniq), axis=0)])
    return {k: uniq[:, i] for i, k in enumerate(names)}, set_index.reshape(-1).astype(np.int32)
