"""How a search scores CEX strategy parameters: a whole batch of combinations per segment in one call.

Segments are the training part, its sub-periods (multi-objective Optuna) and the validation part (the
last val_fraction of the days); each is its own backtest, starting flat, with warm-up bars taken from
before it. A segment with fewer than strategy_settings.min_trades trades scores -inf on the objective.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from quant_core.spec import RunSpec
from quant_core.strategies import get_strategy
from quant_core.strategies.backtest import Costs, backtest
from quant_core.strategies.market import strategy_bars, whole_days


def day_segments(start: datetime, end: datetime, val_fraction: float, n_sub_periods: int = 0
                 ) -> list[tuple[datetime, datetime]]:
    """[training part, (sub-periods of it), (validation part)] in whole days."""
    days = whole_days(start, end)
    val = int(days * val_fraction)
    train = days - val
    if train < 2 or (val_fraction > 0 and val < 2):
        raise ValueError(f"optimisation_settings.val_fraction {val_fraction} splits {days} days into {train} "
                         f"training and {val} validation days; each part needs 2 or more: lengthen the window "
                         "or change val_fraction (0 turns the validation part off)")
    d = timedelta(days=1)
    segs = [(start, start + train * d)]
    if n_sub_periods:
        edges = np.linspace(0, train, n_sub_periods + 1).astype(int)
        if np.any(np.diff(edges) < 2):
            raise ValueError(f"optuna_settings.n_sub_periods {n_sub_periods} leaves sub-periods under 2 days of "
                             f"the {train} training days: lower n_sub_periods")
        segs += [(start + int(a) * d, start + int(b) * d) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    if val:
        segs.append((start + train * d, end))
    return segs


class StrategyEvaluator:
    """Scores {name: [B, 1] or [B]} combinations on each segment: [B, metrics, segments]."""

    def __init__(self, candles: pl.DataFrame, timeframe: str, spec: RunSpec,
                 segments: list[tuple[datetime, datetime]], metrics: tuple[str, ...]) -> None:
        self.metrics = tuple(metrics)
        self._names = tuple(dict.fromkeys((*self.metrics, "n_trades")))
        self.costs = Costs.from_settings(spec.strategy_settings)
        self.min_trades = spec.strategy_settings.min_trades
        self.bars = [strategy_bars(candles, timeframe, a, b, spec.max_memory_days) for a, b in segments]
        self.strategy = get_strategy(spec.strategy)

    def scores(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """A combination that breaks one of the strategy's constraints (donchian: exit_period < entry_period)
        scores -inf, so a grid or range that spans it still searches the admissible part."""
        flat = {k: np.asarray(v, dtype=np.float64).reshape(np.shape(v)[0], -1)[:, 0] for k, v in params.items()}
        ok = self.strategy.valid(self.strategy.complete(flat))
        if not ok.any():
            return np.full((ok.size, len(self.metrics), len(self.bars)), -np.inf)
        if not ok.all():  # run an admissible stand-in in their lanes (same batch shape, one compilation)
            stand_in = int(np.flatnonzero(ok)[0])
            flat = {k: np.where(ok, v, v[stand_in]) for k, v in flat.items()}
        out = []
        for bars in self.bars:
            m = backtest(bars, flat, self.costs, strategy=self.strategy, metrics=self._names).metrics
            seg = np.stack([m[n] for n in self.metrics], axis=1)  # [B, M]
            seg[m["n_trades"] < self.min_trades, 0] = -np.inf
            seg[~ok] = -np.inf
            out.append(seg)
        res = np.stack(out, axis=2)
        return np.where(np.isfinite(res), res, -np.inf)
