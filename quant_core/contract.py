"""The contract every tunable satisfies: a TFMM pool rule (quant_core.sim.tunable) and a CEX strategy
(quant_core.strategies.tunable) alike.

A tunable has parameters (`quant_core.params.Param`), poses a search problem on a window of its data,
evaluates parameter sets on a window (`Evaluation`: daily values and log returns, its benchmark, trades
when it trades, metrics), hashes the data it read, and says how it reports its parameters. One trainer
(`quant_core.train.trainer`), one walk-forward (`quant_core.validate.walk_forward`), one report
(`quant_core.report`) and one Dagster asset factory sit on it; none of them asks which kind it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl

from quant_core.data.schema import Market
from quant_core.params import Param
from quant_core.train.problem import SearchProblem

Kind = Literal["pool", "strategy"]


@dataclass
class Evaluation:
    """K parameter sets run over one window [start, end) of whole days.

    `log_returns[k]` are set k's daily log returns (D of them, `dates` labels each with the day it ends on:
    a strategy marks every day's close of the window, D = its days; a pool reads prices at day boundaries, so
    its window's last row closes its last return, D = days - 1); `benchmark_log_returns`
    the same for each benchmark (the first is the tunable's own: HODL of the pool's tokens, buy-and-hold of
    the strategy's market). `metrics` (every metric of the kind, per set) is filled when asked for;
    `trades` per set for tunables that trade, when asked for."""

    dates: list[str]
    log_returns: np.ndarray  # [K, D]
    daily_values: np.ndarray  # [K, D + 1]: the start value, then each day's close
    metrics: list[dict[str, float]] | None = None
    benchmark_log_returns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [D]
    benchmark_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    trades: list[list[dict]] | None = None


class Tunable(Protocol):
    """What the trainer, walk-forward, report and assets need of a pool rule or a CEX strategy."""

    kind: Kind
    name: str  # the rule (hooks included) or the strategy
    data_name: str  # what its data is called on the platform: "price_panel" (pools), "candles" (strategies)
    differentiable: bool  # gradient descent can train it
    benchmark: str  # the name of its primary benchmark in Evaluation.benchmark_log_returns
    sample_unit: str  # what a walk-forward's sample size counts
    trades: bool  # whether evaluations carry trades
    table_metrics: tuple[str, ...]  # shown per candidate in search tables
    metric_names: tuple[str, ...]  # what return_val may name

    def check(self) -> None:
        """Raise naming the field and the fix when the run spec asks what this tunable cannot do (unknown
        parameters, values outside its schema, a metric it does not report): run when a spec is loaded."""
        ...

    def params(self) -> tuple[Param, ...]: ...

    def initial(self) -> dict[str, np.ndarray]:
        """Every parameter's starting value, user units, {name: [n]} (n tokens; 1 for a strategy)."""
        ...

    def problem(self, data: Any, start: datetime, end: datetime) -> SearchProblem: ...

    def evaluate(self, data: Any, params: list[dict], start: datetime, end: datetime, *, summary: bool = True,
                 benchmarks: bool = True, trades: bool = False) -> Evaluation: ...

    def stay_out(self, data: Any, start: datetime, end: datetime) -> Evaluation:
        """The evaluation of holding no position (a fold whose training found nothing admissible); raises
        for tunables that cannot stay out (a pool always holds its tokens)."""
        ...

    def user_params(self, params: dict) -> dict:
        """A search's {name: [n]} as the tunable reports and stores its parameters."""
        ...

    def stored_params(self, params: dict) -> dict:
        """Parameters as a configuration row holds them for live trading (pools: by token)."""
        ...

    def params_from_stored(self, stored: dict) -> dict:
        """Parameters as a configuration row holds them -> what `evaluate` takes (the inverse of stored_params)."""
        ...

    def scored_parts(self, data: Any, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """[training part, (validation part)] that a search over [start, end) scores."""
        ...

    def data_hash(self, data: Any) -> str: ...

    def load_data(self, markets: dict[str, Market], frames: dict[str, pl.DataFrame]) -> Any:
        """Its data from its markets' candles ({token: market}, {market key: frame})."""
        ...

    def describe_data(self, data: Any) -> dict:
        """Plain facts about the data for people (rows, first, last, ...)."""
        ...

    def plot(self, data: Any, params: dict, start: datetime, end: datetime, title: str,
             split: datetime | None = None) -> bytes:
        """A PNG of the parameters over [start, end); `split` marks the end of training."""
        ...

    def validate_data(self, data: Any, start: datetime, end: datetime) -> None:
        """Raise naming the fix when the data cannot support a run over [start, end) (checked before work)."""
        ...
