"""Training a CEX strategy and reporting it: the `quant train SPEC --candles FILE` result.

`train_strategy_report` trains the spec's strategy on [startDateString, endDateString) with its method
(quant_core.strategies.train), backtests the best parameters over the whole training window and, when
endTestDateString is set, over the test window [endDateString, endTestDateString) (a fresh, flat start,
indicators warmed up on the bars before it), and returns every strategy metric and the trades of both.
`StrategyTrainingResult.to_json()` writes NaN and infinities as null and trade times as ISO UTC strings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl

from quant_core.spec import RunSpec
from quant_core.strategies.train import day_segments, train_strategy
from quant_core.strategies.walk_forward import run_backtest, summary_of
from quant_core.train.api import json_safe


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC string ('2024-01-01T05:00:00+00:00')."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat()


def trade_rows(trades: list[dict]) -> list[dict]:
    """The backtester's trade dicts with their entry/exit times as ISO UTC strings."""
    return [{**t, "entry_time": iso_utc(t["entry_time"]), "exit_time": iso_utc(t["exit_time"])} for t in trades]


@dataclass
class StrategyTrainingResult:
    strategy: str
    timeframe: str
    method: str
    seed: int
    objective: str  # the metric trained on (return_val)
    search_objective: float  # the best candidate's objective on the part of the window the search scored
    parameters: dict[str, float]  # user units, one number each
    metrics: dict[str, dict[str, float]]  # train, (test): every STRATEGY_METRICS name and "objective"
    trades: dict[str, list[dict]]  # train, (test): the backtester's trades, times as ISO UTC strings
    n_evaluations: int
    seconds: float
    top: list[dict] = field(default_factory=list)  # grid/random: top-k table rows; optuna: the best trials
    evaluations_per_second: float | None = None  # grid / random
    windows: dict[str, str | None] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    run_spec: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if d["evaluations_per_second"] is None:
            del d["evaluations_per_second"]
        return json_safe(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def summary(self) -> str:
        """A few lines for people: objective train -> test, trades, net profit, win rate, parameters."""
        parts = [p for p in ("train", "test") if p in self.metrics]

        def each(key: str, fmt: Callable[[float], str]) -> str:
            return ", ".join(f"{p} {fmt(self.metrics[p][key])}" for p in parts)

        def num(v: float, spec: str = ".4f") -> str:
            return format(v, spec) if math.isfinite(v) else "n/a"

        budget = f"{self.n_evaluations} {'trials' if self.method == 'optuna' else 'candidates'}"
        speed = f", {self.evaluations_per_second:.0f}/s" if self.evaluations_per_second else ""
        lines = [
            f"{self.strategy} ({self.timeframe}), {self.method}: {self.objective} "
            + " -> ".join(f"{p} {num(self.metrics[p]['objective'])}" for p in parts)
            + f" ({budget} in {self.seconds:.1f} s{speed}; the search's best: {num(self.search_objective)} on "
            f"its training part)",
            f"trades: {each('n_trades', lambda v: f'{v:.0f}')}; net profit: {each('net_profit', num)}; "
            f"win rate: {each('win_rate', lambda v: f'{100 * v:.1f}%' if math.isfinite(v) else 'n/a')}",
            "parameters: " + ", ".join(f"{k}={v:g}" for k, v in self.parameters.items()),
        ]
        return "\n".join(lines)


def _backtest(candles: pl.DataFrame, timeframe: str, spec: RunSpec, params: dict[str, float], start: datetime,
              end: datetime) -> tuple[dict[str, float], list[dict]]:
    res = run_backtest(candles, timeframe, spec, [params], start, end, trades=True)
    metrics = summary_of(res)
    metrics["objective"] = metrics[spec.return_val]
    return metrics, trade_rows(res.trades[0])  # type: ignore[index]


def _optuna_top(history: list[dict], k: int) -> list[dict]:
    finite = [h for h in history if math.isfinite(h["value"])]
    rows = []
    for h in sorted(finite, key=lambda h: -h["value"])[:k]:
        params = {name: float(np.asarray(v).reshape(-1)[0]) for name, v in h["params"].items()}
        rows.append({**{key: v for key, v in h.items() if key != "params"}, **params})
    return rows


def train_strategy_report(candles: pl.DataFrame, timeframe: str, spec: RunSpec, *,
                          log: Callable[[str], None] | None = None) -> StrategyTrainingResult:
    """Train spec.strategy on the spec's training window and backtest the winner on the training and
    test windows (module docstring). Raises ValueError / RuntimeError naming the problem and the fix."""
    if spec.strategy is None:
        raise ValueError("the spec has no `strategy`: train pool specs with quant_core.train.api")
    began = time.perf_counter()
    trained = train_strategy(candles, timeframe, spec, log=log)
    opt = spec.optimisation_settings
    metrics: dict[str, dict[str, float]] = {}
    trades: dict[str, list[dict]] = {}
    metrics["train"], trades["train"] = _backtest(candles, timeframe, spec, trained.params, spec.start, spec.end)
    if spec.end_test is not None:
        metrics["test"], trades["test"] = _backtest(candles, timeframe, spec, trained.params, spec.end,
                                                    spec.end_test)
    fmt = "%Y-%m-%d"
    segments = day_segments(spec.start, spec.end, opt.val_fraction)
    details = {k: v for k, v in trained.details.items() if k not in ("top", "evaluations_per_second")}
    details.update(
        n_configurations=trained.n_configurations,
        scored_on={"train": [f"{segments[0][0]:{fmt}}", f"{segments[0][1]:{fmt}}"],
                   "validation": [f"{segments[1][0]:{fmt}}", f"{segments[1][1]:{fmt}}"] if len(segments) > 1
                   else None},
        total_seconds=time.perf_counter() - began,
    )
    if trained.method == "optuna":
        top, speed = _optuna_top(trained.history, opt.search_settings.top_k), None
    else:
        top, speed = trained.details["top"], trained.details["evaluations_per_second"]
    return StrategyTrainingResult(
        strategy=spec.strategy, timeframe=timeframe, method=trained.method, seed=trained.seed,
        objective=spec.return_val, search_objective=trained.objective, parameters=dict(trained.params),
        metrics=metrics, trades=trades, n_evaluations=trained.n_evaluations, seconds=trained.seconds, top=top,
        evaluations_per_second=speed,
        windows={"train_start": spec.startDateString, "train_end": spec.endDateString,
                 "test_end": spec.endTestDateString},
        details=details, run_spec=spec.model_dump(mode="json"),
    )
