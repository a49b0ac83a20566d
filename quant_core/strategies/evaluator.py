"""Training a CEX strategy with the training layer's gradient-free searches (grid, random, Optuna).

The strategy is a `SearchProblem` (quant_core.train.problem): its parameters are scalars (one
"token"), its axes and Optuna dimensions come from the strategy's schema, overridden by
`search_settings.parameter_space` / `optuna_settings.parameter_config`, and its evaluator backtests a
whole batch of combinations per segment in one compiled call. Segments are the training part, its
sub-periods (multi-objective Optuna) and the validation part (the last val_fraction of the days);
each is its own backtest, starting flat, with warm-up bars taken from before it. A segment with
fewer than strategy_settings.min_trades trades scores -inf on the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from quant_core.spec import ParameterRange, RunSpec, SearchRange
from quant_core.strategies import get_strategy
from quant_core.strategies.backtest import Costs, backtest
from quant_core.strategies.market import strategy_bars, whole_days
from quant_core.strategies.schema import Strategy, StrategyParam
from quant_core.train.pool import TrainedPool
from quant_core.train.problem import Axis, SearchDimension, SearchProblem, expand_around

TABLE_METRICS = ("net_profit", "n_trades", "win_rate", "profit_factor", "daily_log_sharpe", "max_drawdown")
SPACE = "optimisation_settings.search_settings.parameter_space"


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
        self.strategy = spec.strategy

    def scores(self, params: dict[str, np.ndarray]) -> np.ndarray:
        flat = {k: np.asarray(v, dtype=np.float64).reshape(np.shape(v)[0], -1)[:, 0] for k, v in params.items()}
        out = []
        for bars in self.bars:
            m = backtest(bars, flat, self.costs, strategy=self.strategy, metrics=self._names).metrics
            seg = np.stack([m[n] for n in self.metrics], axis=1)  # [B, M]
            seg[m["n_trades"] < self.min_trades, 0] = -np.inf
            out.append(seg)
        res = np.stack(out, axis=2)
        return np.where(np.isfinite(res), res, -np.inf)


def _axis(p: StrategyParam, entry, points: str, default_points: int) -> Axis:
    if isinstance(entry, list):
        return Axis(p.name, None, p.check(np.asarray(entry), SPACE))
    if entry is None:
        if p.kind == "choice":
            return Axis(p.name, None, np.asarray(p.choices, dtype=np.float64))
        entry = SearchRange(low=p.low, high=p.high, log_scale=p.log_scale, n=default_points)
    elif p.kind == "choice":
        raise ValueError(f"{SPACE}.{p.name}: a choice parameter takes a list of its choices {list(p.choices)}")
    p.check(np.asarray([entry.low, entry.high]), SPACE)
    if points == "grid":
        vals = np.geomspace(entry.low, entry.high, entry.n) if entry.log_scale else np.linspace(
            entry.low, entry.high, entry.n)
        return Axis(p.name, None, np.unique(np.round(vals)) if p.kind == "int" else vals)
    return Axis(p.name, None, None, entry.low, entry.high, entry.log_scale, integer=p.kind == "int")


def strategy_axes(strategy: Strategy, spec: RunSpec, points: str) -> list[Axis]:
    settings = spec.optimisation_settings.search_settings
    given = {strategy.param(k).name: v for k, v in settings.parameter_space.items()}
    return [_axis(p, given.get(p.name), points, settings.default_points) for p in strategy.params]


def strategy_dimensions(strategy: Strategy, spec: RunSpec) -> list[SearchDimension]:
    settings = spec.optimisation_settings.optuna_settings
    initial = strategy.resolve(spec.parameters)  # type: ignore[arg-type]
    dims = []
    for p in strategy.params:
        if p.kind == "choice":
            dims.append(SearchDimension(p.name, p.low, p.high, False, True, "choice", p.choices))
            continue
        rng = settings.parameter_config.get(p.name, ParameterRange(low=p.low, high=p.high, log_scale=p.log_scale))
        p.check(np.asarray([rng.low, rng.high]), "optimisation_settings.optuna_settings.parameter_config")
        low, high = rng.low, rng.high
        if settings.expand_around:
            low, high = expand_around(low, high, rng.log_scale, initial[p.name])
        if p.kind == "int":
            low, high = float(np.ceil(low)), float(np.floor(high))
        dims.append(SearchDimension(p.name, low, high, rng.log_scale, True, p.kind))
    return dims


def strategy_problem(candles: pl.DataFrame, timeframe: str, spec: RunSpec, start: datetime | None = None,
                     end: datetime | None = None) -> SearchProblem:
    strategy = get_strategy(spec.strategy)  # type: ignore[arg-type]
    start, end = start or spec.start, end or spec.end
    val_fraction = spec.optimisation_settings.val_fraction
    segments = day_segments(start, end, val_fraction)
    base = {k: np.asarray([v]) for k, v in strategy.resolve(spec.parameters).items()}  # type: ignore[arg-type]

    def evaluator(metrics: tuple[str, ...], n_sub_periods: int) -> StrategyEvaluator:
        return StrategyEvaluator(candles, timeframe, spec, day_segments(start, end, val_fraction, n_sub_periods),
                                 metrics)

    return SearchProblem(base=base, tokens=[strategy.name], has_validation=len(segments) > 1,
                         axes=lambda points: strategy_axes(strategy, spec, points),
                         dimensions=lambda: strategy_dimensions(strategy, spec), evaluator=evaluator,
                         table_metrics=TABLE_METRICS)


def scalars(params: dict) -> dict[str, float]:
    """{name: [v]} (a search's per-token lists) -> {name: v}."""
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in params.items()}


def train_strategy(
    candles: pl.DataFrame,
    timeframe: str,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedPool:
    """Maximise spec.return_val over [start, end) (default: the spec's training window) with the spec's
    method; parameters come back as one number each."""
    from quant_core.train.grid import run_grid

    method = spec.optimisation_settings.method
    start, end = start or spec.start, end or spec.end
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    problem = strategy_problem(candles, timeframe, spec, start, end)
    common = {"metric": spec.return_val, "method": method, "seed": seed, "start": start, "end": end}
    if method == "optuna":
        from quant_core.train.search import run_study  # optuna only when asked for

        r = run_study(problem, spec, seed=seed, n_trials=n_trials, log=log)
        return TrainedPool(params=scalars(r.best_params), objective=r.best_value, n_evaluations=r.n_trials,
                           seconds=r.seconds, candidates=[scalars(c) for c in r.candidates],
                           n_configurations=r.n_trials, history=r.history,
                           details={"stopped_early": r.stopped_early, "study_name": r.study_name,
                                    "sampler": spec.optimisation_settings.optuna_settings.sampler}, **common)
    r = run_grid(problem, spec, seed=seed, n_samples=n_trials, log=log)
    return TrainedPool(params=scalars(r.best_params), objective=r.best_value, n_evaluations=r.n_evaluations,
                       seconds=r.seconds, history=r.table, candidates=[scalars(c) for c in r.candidates],
                       n_configurations=r.n_evaluations,
                       details={"top": r.top, "evaluations_per_second": r.evaluations_per_second,
                                "batch_size": r.batch_size}, **common)
