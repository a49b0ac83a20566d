"""A CEX strategy as a tunable: one market's candles in, the vmapped bracket-order backtester underneath.

Parameters are one number each (a one-"token" problem). Its benchmark is buy-and-hold of the market from
the window's first open ("buy_and_hold"). Every evaluation is a fresh backtest that starts flat, with
indicator warm-up from the bars before the window; daily log returns are those of the equity marked at
each UTC day's last close. A fold whose training finds no admissible parameter set stays out of the
market (flat equity, no trades), which is what live trading would do.
"""

from __future__ import annotations

import difflib
from datetime import datetime

import numpy as np
import polars as pl

from quant_core import metrics
from quant_core.contract import Evaluation
from quant_core.data.market_candles import MarketCandles
from quant_core.data.schema import Market
from quant_core.params import Param
from quant_core.plots import strategy_plot
from quant_core.spec import StrategySpec
from quant_core.strategies import get_strategy
from quant_core.strategies.backtest import STRATEGY_METRICS, TRADE_METRICS, BacktestResult, Costs, backtest
from quant_core.strategies.evaluator import StrategyEvaluator, day_segments
from quant_core.strategies.market import strategy_bars, whole_days
from quant_core.train.problem import SearchProblem, check_overrides

TABLE_METRICS = ("net_profit", "n_trades", "win_rate", "profit_factor", "daily_log_sharpe", "max_drawdown")


def flat_summary(days: int, capital: float) -> dict[str, float]:
    """The metrics of staying out of the market for `days` days."""
    out = dict.fromkeys(TRADE_METRICS, float("nan"))
    out.update(metrics.summary(np.full(days + 1, capital), 1), net_profit=0.0, n_trades=0.0, max_drawdown=0.0,
               exposure=0.0)
    return out


class StrategyTunable:
    kind = "strategy"
    data_name = "candles"  # what its data is called on the platform (the Dagster asset)
    benchmark = "buy_and_hold"
    sample_unit = "out-of-sample trades"
    trades = True
    differentiable = False
    table_metrics = TABLE_METRICS
    metric_names = STRATEGY_METRICS

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec
        self.strategy = get_strategy(spec.strategy)
        self.name = self.strategy.name
        self.costs = Costs.from_settings(spec.strategy_settings)

    def check(self) -> None:
        """What the strategy accepts: `parameters` and search ranges within its schema (and its constraints),
        a metric it reports to train on. Raises naming the field and the fix."""
        spec = self.spec
        if spec.return_val not in self.metric_names:
            close = difflib.get_close_matches(spec.return_val, self.metric_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"return_val {spec.return_val!r} is not a strategy metric{hint}; use one of "
                             f"{sorted(self.metric_names)}")
        check_overrides(self.params(), spec, self.initial(), 1, f"strategy {self.name!r}")

    def params(self) -> tuple[Param, ...]:
        return self.strategy.params

    def initial(self) -> dict[str, np.ndarray]:
        return {k: np.asarray([v]) for k, v in self.strategy.resolve(self.spec.parameters).items()}  # type: ignore[arg-type]

    def problem(self, data: MarketCandles, start: datetime, end: datetime) -> SearchProblem:
        spec = self.spec
        val_fraction = spec.optimisation_settings.val_fraction
        segments = day_segments(start, end, val_fraction)

        def evaluator(names: tuple[str, ...], n_sub_periods: int) -> StrategyEvaluator:
            return StrategyEvaluator(data.frame, data.timeframe, spec,
                                     day_segments(start, end, val_fraction, n_sub_periods), names)

        return SearchProblem(base=self.initial(), tokens=[self.name], params=self.params(), spec=spec,
                             owner=f"strategy {self.name!r}", has_validation=len(segments) > 1,
                             evaluator=evaluator, table_metrics=TABLE_METRICS)

    def backtest(self, data: MarketCandles, params: list[dict], start: datetime, end: datetime, *,
                 trades: bool = False) -> BacktestResult:
        """K parameter sets (user units, one number each) over [start, end) in one compiled call."""
        bars = strategy_bars(data.frame, data.timeframe, start, end, self.spec.max_memory_days)
        batch = {k: np.asarray([p[k] for p in params], dtype=np.float64) for k in params[0]}
        return backtest(bars, batch, self.costs, strategy=self.strategy, trades=trades)

    def buy_and_hold(self, data: MarketCandles, start: datetime, end: datetime) -> np.ndarray:
        """Daily value path [D + 1] of the capital held in the market from the window's first open."""
        bars = strategy_bars(data.frame, data.timeframe, start, end, 0)
        w = bars.window
        closes = bars.close[w].reshape(bars.n_days, bars.bars_per_day)[:, -1]
        return self.costs.initial_capital * np.concatenate([[1.0], closes / bars.open[w][0]])

    def _with_benchmark(self, out: Evaluation, data: MarketCandles, start: datetime, end: datetime) -> Evaluation:
        hodl = self.buy_and_hold(data, start, end)
        out.benchmark_log_returns[self.benchmark] = np.diff(np.log(hodl))
        out.benchmark_metrics[self.benchmark] = metrics.summary(hodl, 1)
        return out

    def evaluate(self, data: MarketCandles, params: list[dict], start: datetime, end: datetime, *,
                 summary: bool = True, benchmarks: bool = True, trades: bool = False) -> Evaluation:
        res = self.backtest(data, params, start, end, trades=trades)
        dates = [str(np.datetime64(int(t), "ms").astype("datetime64[D]") - 1) for t in res.day_starts[1:]]
        out = Evaluation(dates=dates, log_returns=np.diff(np.log(res.daily_equity), axis=1),
                         daily_values=res.daily_equity,
                         # natural signs for reports and the store (the backtester's are the objective's)
                         metrics=[metrics.natural_signs({k: float(v[j]) for k, v in res.metrics.items()})
                                  for j in range(len(params))] if summary else None,
                         trades=res.trades)
        return self._with_benchmark(out, data, start, end) if benchmarks else out

    def stay_out(self, data: MarketCandles, start: datetime, end: datetime) -> Evaluation:
        days = whole_days(start, end)
        capital = self.costs.initial_capital
        out = Evaluation(dates=[str(np.datetime64(start.date()) + i) for i in range(days)],
                         log_returns=np.zeros((1, days)), daily_values=np.full((1, days + 1), capital),
                         metrics=[flat_summary(days, capital)], trades=[[]])
        return self._with_benchmark(out, data, start, end)

    def user_params(self, params: dict) -> dict[str, float]:
        """{name: [v]} (a search's one-token lists) -> {name: v}."""
        return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in params.items()}

    def stored_params(self, params: dict) -> dict[str, float]:
        return dict(params)

    def params_from_stored(self, stored: dict) -> dict:
        """The inverse of stored_params: {name: value} -> {name: [value]} (a search's one-token lists)."""
        return {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in stored.items()}

    def scored_parts(self, data: MarketCandles, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """[training part, (validation part)] a search scores over [start, end), in whole days."""
        return day_segments(start, end, self.spec.optimisation_settings.val_fraction)

    def load_data(self, markets: dict[str, Market], frames: dict[str, pl.DataFrame]) -> MarketCandles:
        """Its one market's candles."""
        (market,) = markets.values()
        return MarketCandles(frames[market.key], market.timeframe)

    def describe_data(self, data: MarketCandles) -> dict:
        return {"rows": data.frame.height, "first": str(data.frame["timestamp"].min()),
                "last": str(data.frame["timestamp"].max()), "timeframe": data.timeframe}

    def plot(self, data: MarketCandles, params: dict, start: datetime, end: datetime, title: str,
             split: datetime | None = None) -> bytes:
        """Equity (top) and the market's closes with every trade (bottom) over [start, end), one backtest."""
        res = self.backtest(data, [params], start, end, trades=True)
        bars = strategy_bars(data.frame, data.timeframe, start, end, 0)
        return strategy_plot(res.bar_timestamps, res.bar_equity[0], bars.close[bars.window], res.trades[0], title,
                             split=split.replace(tzinfo=None) if split else None)

    def data_hash(self, data: MarketCandles) -> str:
        return data.data_hash

    def validate_data(self, data: MarketCandles, start: datetime, end: datetime) -> None:
        strategy_bars(data.frame, data.timeframe, start, end, self.spec.max_memory_days)
