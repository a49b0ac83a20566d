"""Walk-forward validation of a CEX strategy, on the validation layer's folds and statistics.

Each fold retrains on its training window (quant_core.strategies.train) and backtests the winner on
its test window, starting flat with indicator warm-up from the bars before the test start. The
out-of-sample daily log returns of all folds are concatenated (Sharpe, significance as for pools),
the benchmark is buy-and-hold of the market over the same days, and the sample size the lifecycle
stage reads is the number of out-of-sample trades. A fold whose training finds no admissible parameter
set (none met strategy_settings.min_trades) stays out of the market over its test window: flat equity,
no trades, recorded as such, which is what live trading would do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl

from quant_core import metrics
from quant_core.spec import RunSpec
from quant_core.strategies.backtest import TRADE_METRICS, BacktestResult, Costs, backtest
from quant_core.strategies.market import strategy_bars
from quant_core.strategies.train import train_strategy
from quant_core.train.problem import NoFiniteCandidate
from quant_core.validate.walk_forward import (
    FoldResult,
    WalkForwardReport,
    WalkForwardSettings,
    evidence,
    fold_report,
    make_folds,
)


def run_backtest(candles: pl.DataFrame, timeframe: str, spec: RunSpec, params: list[dict[str, float]],
                 start: datetime, end: datetime, *, trades: bool = False) -> BacktestResult:
    """Backtest K parameter sets (user units) over [start, end) in one call."""
    bars = strategy_bars(candles, timeframe, start, end, spec.max_memory_days)
    batch = {k: np.asarray([p[k] for p in params], dtype=np.float64) for k in params[0]}
    return backtest(bars, batch, Costs.from_settings(spec.strategy_settings), strategy=spec.strategy, trades=trades)


def summary_of(result: BacktestResult, j: int = 0) -> dict[str, float]:
    return {k: float(v[j]) for k, v in result.metrics.items()}


def flat_summary(days: int, capital: float) -> dict[str, float]:
    """The metrics of staying out of the market for `days` days."""
    out = dict.fromkeys(TRADE_METRICS, float("nan"))
    out.update(metrics.summary(np.full(days + 1, capital), 1), net_profit=0.0, n_trades=0.0, max_drawdown=0.0,
               exposure=0.0)
    return out


def buy_and_hold(candles: pl.DataFrame, timeframe: str, spec: RunSpec, start: datetime, end: datetime) -> np.ndarray:
    """Daily value path [D + 1] of the capital held in the market from the window's first open."""
    bars = strategy_bars(candles, timeframe, start, end, 0)
    w = bars.window
    closes = bars.close[w].reshape(bars.n_days, bars.bars_per_day)[:, -1]
    return spec.strategy_settings.initial_capital * np.concatenate([[1.0], closes / bars.open[w][0]])


def walk_forward_strategy(
    candles: pl.DataFrame,
    timeframe: str,
    spec: RunSpec,
    settings: WalkForwardSettings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> WalkForwardReport:
    """Retrain per fold over [start, end) (default: startDateString .. endTestDateString or end)."""
    start = start or spec.start
    end = end or spec.end_test or spec.end
    folds, all_r, all_hodl, dates, trades, n_configurations, last = [], [], [], [], [], [], None
    capital = spec.strategy_settings.initial_capital
    for fold in make_folds(start, end, settings):
        try:
            trained = train_strategy(candles, timeframe, spec, start=fold.train_start, end=fold.train_end,
                                     seed=seed, n_trials=n_trials)
        except NoFiniteCandidate as exc:
            if log:
                log(f"fold {fold.index}: no admissible parameter set ({exc}); the fold stays out of the market")
            test_days, train_days = (fold.test_end - fold.test_start).days, (fold.train_end - fold.train_start).days
            flat = flat_summary(test_days, capital)
            all_r.append(np.zeros(test_days))
            hodl = buy_and_hold(candles, timeframe, spec, fold.test_start, fold.test_end)
            all_hodl.append(np.diff(np.log(hodl)))
            dates.extend(str(np.datetime64(fold.test_start.date()) + i) for i in range(test_days))
            folds.append(FoldResult(fold=fold, params={}, in_sample=flat_summary(train_days, capital),
                                    out_of_sample=flat, oos_hodl=metrics.summary(hodl, 1),
                                    oos_log_returns=[0.0] * test_days))
            continue
        is_res = run_backtest(candles, timeframe, spec, [trained.params], fold.train_start, fold.train_end)
        oos = run_backtest(candles, timeframe, spec, [trained.params], fold.test_start, fold.test_end, trades=True)
        hodl = buy_and_hold(candles, timeframe, spec, fold.test_start, fold.test_end)
        r = np.diff(np.log(oos.daily_equity[0]))
        all_r.append(r)
        all_hodl.append(np.diff(np.log(hodl)))
        dates.extend(str(np.datetime64(int(t), "ms").astype("datetime64[D]") - 1) for t in oos.day_starts[1:])
        trades.extend({"fold": fold.index, **t} for t in oos.trades[0])
        n_configurations.append(trained.n_configurations)
        last = trained
        folds.append(FoldResult(fold=fold, params=trained.params, in_sample=summary_of(is_res),
                                out_of_sample=summary_of(oos), oos_hodl=metrics.summary(hodl, 1),
                                oos_log_returns=r.tolist()))
        if log:
            f = folds[-1]
            log(f"fold {fold.index}: train {fold.train_start:%Y-%m-%d}..{fold.train_end:%Y-%m-%d} IS "
                f"{f.in_sample['daily_log_sharpe']:.3f} ({f.in_sample['n_trades']:.0f} trades), test "
                f"{fold.test_start:%Y-%m-%d}..{fold.test_end:%Y-%m-%d} OOS {f.out_of_sample['daily_log_sharpe']:.3f} "
                f"({f.out_of_sample['n_trades']:.0f} trades)")
    r_all, h_all = np.concatenate(all_r), np.concatenate(all_hodl)
    candidates = None
    if last is not None and len(last.candidates) > 1:
        res = run_backtest(candles, timeframe, spec, last.candidates, start, end)
        candidates = np.diff(np.log(res.daily_equity), axis=1).T  # [days, K]
    significance = evidence(r_all, int(round(np.mean(n_configurations or [1]))), candidates)
    return fold_report(spec.return_val, folds, r_all, h_all, dates, significance, len(trades), trades=trades,
                       sample_unit="out-of-sample trades")
