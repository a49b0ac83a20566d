"""Training a CEX strategy (grid, random, Optuna), its guards and spec validation, and walk-forward.

Candles are hourly OHLCV with planted volume spikes on far-wicked bars (the backtester reference tests'
generator), so liquidity sweeps trigger often enough for trade counts and metrics to mean something.
Windows and batch sizes are shared between tests: JAX compiles once per shape.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from test_backtest_reference import ohlcv

import quant_core  # noqa: F401  (JAX float64)
from quant_core.data.market_candles import MarketCandles
from quant_core.data.schema import CANDLE_SCHEMA
from quant_core.data.synthetic import synthetic_candles
from quant_core.runspec import load_run_spec
from quant_core.spec import RunSpecError
from quant_core.strategies.liquidity_sweep import LIQUIDITY_SWEEP
from quant_core.train.problem import NoFiniteCandidate
from quant_core.train.trainer import train
from quant_core.tunables import StrategyTunable
from quant_core.validate.folds import WalkForwardSettings
from quant_core.validate.walk_forward import walk_forward

TF = "1h"
FIRST = datetime(2024, 1, 1, tzinfo=UTC)
START = datetime(2024, 1, 21, tzinfo=UTC)  # 20 days of warm-up before the training window
END = START + timedelta(days=90)
DAY = timedelta(days=1)

# a small explicit grid: 2 x 2 x 2 x 2 = 16 candidates (one value pins a parameter)
GRID = {
    "lookback": [10, 20],
    "pierce_depth": [0.001],
    "volume_spike_threshold": [1.5, 2.5],
    "volume_period": [20],
    "stop_atr_mult": [1.0],
    "rr_ratio": [1.5, 2.5],
    "max_hold_bars": [24],
    "atr_period": [14],
    "sma_period": [0, 50],
}


def spiky_candles(days: int = 140, seed: int = 0, first: datetime = FIRST, bars_per_day: int = 24) -> pl.DataFrame:
    """`days` whole days of candles (CANDLE_SCHEMA) from `first`, with planted volume spikes."""
    n = days * bars_per_day
    data = ohlcv(np.random.default_rng(seed), n)
    step = 86_400_000 // bars_per_day
    ms = int(first.timestamp() * 1000) + step * np.arange(n, dtype=np.int64)
    frame = pl.DataFrame({"timestamp": ms, **data})
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))).select(
        pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())


@pytest.fixture(scope="module")
def candles() -> MarketCandles:
    return MarketCandles(spiky_candles(), TF)


def run_backtest(candles: MarketCandles, spec, params: list[dict], start: datetime, end: datetime,
                 trades: bool = False):
    return StrategyTunable(spec).backtest(candles, params, start, end, trades=trades)


def make_spec(method: str = "random", val_fraction: float = 0.2, min_trades: int = 0, search: dict | None = None,
              optuna: dict | None = None, **extra):
    opt = {"method": method, "val_fraction": val_fraction,
           "search_settings": {"batch_size": 16, **(search or {})},
           "optuna_settings": {"n_jobs": 4, "n_startup_trials": 4, **(optuna or {})}}
    return load_run_spec({
        "strategy": "liquidity_sweep", "startDateString": f"{START:%Y-%m-%d}", "endDateString": f"{END:%Y-%m-%d}",
        "max_memory_days": 20, "strategy_settings": {"min_trades": min_trades, "taker_fee_bps": 5},
        "optimisation_settings": opt, **extra})


def training_part(val_fraction: float) -> tuple[datetime, datetime]:
    days = (END - START).days
    return START, START + (days - int(days * val_fraction)) * DAY


def assert_in_schema(params: dict[str, float]) -> None:
    assert set(params) == {p.name for p in LIQUIDITY_SWEEP.params}
    LIQUIDITY_SWEEP.resolve(params)  # raises on a value outside the schema
    for p in LIQUIDITY_SWEEP.params:
        if p.kind == "int":
            assert params[p.name] == round(params[p.name]), p.name
        if p.kind == "choice":
            assert params[p.name] in p.choices, p.name


# ------------------------------------------------------------------------------------------------ grid


@pytest.mark.parametrize("val_fraction", [0.2, 0.0])
def test_grid_best_row_is_the_max_and_reproduces(candles, val_fraction):
    spec = make_spec("grid", val_fraction, min_trades=5, search={"parameter_space": GRID})
    trained = train(candles, spec)
    table = trained.history
    assert len(table) == 16 == trained.n_evaluations
    objective = np.array([row["train_daily_log_sharpe"] for row in table])
    assert np.isfinite(objective).sum() >= 8
    best = table[int(np.argmax(objective))]
    assert best["train_n_trades"] >= 5 and trained.objective != 0
    assert trained.objective == pytest.approx(objective.max(), rel=1e-12)
    assert trained.details["top"][0] == best
    tops = [r["train_daily_log_sharpe"] for r in trained.details["top"]]
    assert tops == sorted(tops, reverse=True)
    assert trained.params == {k: best[k] for k in GRID}
    assert ("validation_daily_log_sharpe" in best) == (val_fraction > 0)
    # the reported objective is the backtest of the returned parameters on the training part
    start, end = training_part(val_fraction)
    res = run_backtest(candles, spec, [trained.params], start, end, trades=True)
    assert float(res.metrics["daily_log_sharpe"][0]) == pytest.approx(trained.objective, rel=1e-9)
    assert float(res.metrics["n_trades"][0]) == best["train_n_trades"] == len(res.trades[0])
    assert float(res.metrics["net_profit"][0]) == pytest.approx(best["train_net_profit"], rel=1e-9)
    if val_fraction:
        val = run_backtest(candles, spec, [trained.params], end, END)
        assert float(val.metrics["daily_log_sharpe"][0]) == pytest.approx(best["validation_daily_log_sharpe"],
                                                                           rel=1e-9, nan_ok=True)


def test_min_trades_scores_thin_candidates_minus_inf(candles):
    table = train(candles, make_spec("grid", search={"parameter_space": GRID})).history
    counts = np.array([row["train_n_trades"] for row in table])
    threshold = float(np.median(counts))  # some candidates fall below it, some do not
    assert counts.min() < threshold <= counts.max()
    guarded = train(candles, make_spec("grid", min_trades=int(threshold),
                                                    search={"parameter_space": GRID}))
    for row, plain in zip(guarded.history, table, strict=True):
        if row["train_n_trades"] < threshold:
            assert row["train_daily_log_sharpe"] == -np.inf
        else:
            assert row["train_daily_log_sharpe"] == plain["train_daily_log_sharpe"]
    assert guarded.history[[r["candidate"] for r in guarded.history].index(guarded.details["top"][0]["candidate"])][
        "train_n_trades"] >= threshold
    with pytest.raises(NoFiniteCandidate, match="min_trades"):
        train(candles, make_spec("grid", min_trades=100_000, search={"parameter_space": GRID}))
    with pytest.raises(NoFiniteCandidate, match="min_trades"):
        train(candles, make_spec("random", min_trades=100_000, search={"n_samples": 16}))


# ---------------------------------------------------------------------------------------------- random


def test_random_is_seeded_and_in_schema(candles):
    spec = make_spec("random", search={"n_samples": 24})  # 24 candidates: one full batch of 16, one padded
    a = train(candles, spec, seed=3)
    b = train(candles, spec, seed=3)
    c = train(candles, spec, seed=4)
    assert a.n_evaluations == len(a.history) == 24
    assert a.history == b.history and a.params == b.params and a.objective == b.objective
    names = [p.name for p in LIQUIDITY_SWEEP.params]
    points = lambda r: [[row[n] for n in names] for row in r.history]  # noqa: E731
    assert points(a) != points(c)
    for row in a.history + c.history:
        assert_in_schema({n: row[n] for n in names})
    assert_in_schema(a.params)
    objective = [row["train_daily_log_sharpe"] for row in a.history]
    assert a.objective == max(objective)
    assert a.candidates[0] == a.params and len(a.candidates) == 10  # top_k
    # n_trials overrides search_settings.n_samples
    assert train(candles, spec, seed=3, n_trials=8).n_evaluations == 8


def test_random_respects_a_given_range(candles):
    spec = make_spec("random", search={"n_samples": 16, "parameter_space": {
        "lookback": {"low": 12, "high": 15}, "rr_ratio": [1.25, 3.5], "sma_period": [0]}})
    trained = train(candles, spec, seed=1)
    looks = {row["lookback"] for row in trained.history}
    assert looks <= {12.0, 13.0, 14.0, 15.0}
    assert {row["rr_ratio"] for row in trained.history} <= {1.25, 3.5}
    assert {row["sma_period"] for row in trained.history} == {0.0}


# ---------------------------------------------------------------------------------------------- optuna


def test_optuna_batches_trials_with_whole_numbers_and_choices(candles):
    spec = make_spec("optuna", optuna={"n_trials": 8})
    trained = train(candles, spec, seed=0)
    assert trained.method == "optuna" and trained.n_evaluations == len(trained.history) == 8
    for h in trained.history:
        assert_in_schema({k: v[0] for k, v in h["params"].items()})
    assert_in_schema(trained.params)
    finite = [h["value"] for h in trained.history if np.isfinite(h["value"])]
    assert trained.objective == max(finite)
    start, end = training_part(0.2)
    res = run_backtest(candles, spec, [trained.params], start, end)
    assert float(res.metrics["daily_log_sharpe"][0]) == pytest.approx(trained.objective, rel=1e-9)
    # same seed, same study
    again = train(candles, spec, seed=0)
    assert again.params == trained.params
    with pytest.raises(NoFiniteCandidate, match="min_trades"):  # every trial under min_trades
        train(candles, make_spec("optuna", min_trades=100_000, optuna={"n_trials": 4}))


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(("change", "message"), [
    ({"strategy": "liquidity_swep"}, "did you mean 'liquidity_sweep'"),
    ({"parameters": {"lookbak": 20}}, "did you mean 'lookback'"),
    ({"parameters": {"lookback": 5}}, "parameters.lookback: 5 is outside [10, 100]"),
    ({"parameters": {"lookback": 20.5}}, "parameters.lookback: whole numbers only"),
    ({"parameters": {"atr_period": 15}}, "parameters.atr_period: 15 is not one of [14, 21]"),
    ({"optimisation_settings": {"method": "gradient_descent"}}, "gradient descent cannot train"),
    ({"return_val": "sharpe_ratio"}, "return_val 'sharpe_ratio' is not a strategy metric"),
    ({"optimisation_settings": {"search_settings": {"parameter_space": {"lookbakc": [10]}}}}, "lookback"),
])
def test_spec_validation_names_the_field(change, message):
    data = {"strategy": "liquidity_sweep", "startDateString": "2024-01-21", "endDateString": "2024-04-20", **change}
    with pytest.raises(RunSpecError) as err:
        load_run_spec(data)
    assert message in str(err.value)


@pytest.mark.parametrize(("method", "space", "message"), [
    ("grid", {"lookback": [5, 20]}, "parameter_space.lookback: 5 is outside [10, 100]"),
    ("random", {"volume_spike_threshold": {"low": 1.0, "high": 2.0}},
     "parameter_space.volume_spike_threshold: 1 is outside [1.5, 4]"),
    ("grid", {"atr_period": [14, 15]}, "parameter_space.atr_period: 15 is not one of [14, 21]"),
    ("grid", {"max_hold_bars": [6.5]}, "parameter_space.max_hold_bars: whole numbers only"),
    ("random", {"sma_period": {"low": 0, "high": 100}}, "parameter_space.sma_period: a choice parameter takes a list"),
])
def test_search_space_outside_the_schema_names_the_parameter(method, space, message):
    """Refused when the spec loads, before any data is read (a Dagster run fails at its launch config)."""
    with pytest.raises(RunSpecError) as err:
        make_spec(method, search={"parameter_space": space, "n_samples": 4})
    assert message in str(err.value)


@pytest.mark.parametrize(("config", "message"), [
    ({"rr_ratio": {"low": 0.5, "high": 3}}, r"parameter_config.rr_ratio: 0.5 is outside [1, 4]"),
    ({"sma_period": {"low": 0, "high": 100}}, "Optuna searches every choice of [0, 50, 100, 200]"),
])
def test_optuna_range_outside_the_schema_names_the_parameter(config, message):
    with pytest.raises(RunSpecError) as err:
        make_spec("optuna", optuna={"n_trials": 4, "parameter_config": config})
    assert message in str(err.value)


def test_window_problems_name_the_fix(candles):
    with pytest.raises(ValueError, match="each part needs 2 or more"):
        train(candles, make_spec(), start=START, end=START + 3 * DAY)
    with pytest.raises(ValueError, match="not a UTC midnight"):
        train(candles, make_spec(), start=START + timedelta(hours=5), end=END)
    with pytest.raises(ValueError, match="move the window inside the data"):
        train(candles, make_spec(), start=START, end=datetime(2024, 6, 1, tzinfo=UTC))


# ---------------------------------------------------------------------------------------------- walk-forward


@pytest.mark.slow
def test_walk_forward_on_synthetic_candles():
    market = synthetic_candles(timeframe=TF, start="2024-01-01", end="2024-05-01", seed=5)
    spiky = spiky_candles(days=121, seed=7)
    settings = WalkForwardSettings(train_days=40, test_days=15, min_folds=2)
    spec = make_spec("random", val_fraction=0.0, search={"n_samples": 16, "parameter_space": {
        "volume_spike_threshold": {"low": 1.5, "high": 2.0}, "lookback": {"low": 10, "high": 20}}})
    for data in (market, spiky):
        report = walk_forward(MarketCandles(data, TF), spec, settings, seed=2)
        assert [f.fold.index for f in report.folds] == [0, 1, 2]
        n_oos = sum(int(f.out_of_sample["n_trades"]) for f in report.folds)
        assert report.sample_size == n_oos == len(report.trades)
        assert report.sample_unit == "out-of-sample trades" and report.benchmark == "buy_and_hold"
        assert len(report.oos_dates) == 3 * settings.test_days == len(report.oos_equity) == len(
            report.oos_benchmark_equity)
        assert report.oos_dates[0] == f"{report.folds[0].fold.test_start:%Y-%m-%d}"
        assert report.oos_dates[-1] == f"{report.folds[-1].fold.test_end - DAY:%Y-%m-%d}"
        assert len(set(report.oos_dates)) == len(report.oos_dates)
        r_all = np.concatenate([f.oos_log_returns for f in report.folds])
        assert np.log(report.oos_equity[-1]) == pytest.approx(r_all.sum(), abs=1e-12)
        for f in report.folds:
            assert len(f.oos_log_returns) == settings.test_days
            assert_in_schema(f.params)
            lo, hi = (int(t.timestamp() * 1000) for t in (f.fold.test_start, f.fold.test_end))
            fold_trades = [t for t in report.trades if t["fold"] == f.fold.index]
            assert len(fold_trades) == f.out_of_sample["n_trades"]
            assert all(lo <= t["entry_time"] <= t["exit_time"] < hi for t in fold_trades)
        assert report.significance
    assert n_oos > 0  # the spiky market trades out of sample
    # no fold finds a parameter set with enough trades: every fold stays out of the market
    strict = spec.model_copy(update={"strategy_settings": spec.strategy_settings.model_copy(
        update={"min_trades": 100_000})})
    report = walk_forward(MarketCandles(spiky, TF), strict, settings, seed=2)
    assert len(report.folds) == 3 and report.sample_size == 0 and report.trades == []
    assert all(f.params == {} and f.out_of_sample["n_trades"] == 0 for f in report.folds)
    assert len(report.oos_dates) == 45 == len(report.oos_equity) and set(report.oos_equity) == {1.0}


def test_a_grid_across_a_constraint_scores_the_inadmissible_combinations_minus_inf():
    """donchian_breakout needs exit_period < entry_period: a grid spanning both sides searches the admissible
    part (the rest scores -inf) instead of refusing the whole search."""
    frame = synthetic_candles(timeframe=TF, start="2024-01-01", end="2024-03-01", seed=7)
    space = {"entry_period": {"low": 10, "high": 30, "n": 3}, "exit_period": {"low": 5, "high": 30, "n": 3},
             "stop_atr_mult": [2.0], "atr_period": [14], "sma_period": [0], "max_hold_bars": [200],
             "allow_short": [1]}
    spec = load_run_spec({"strategy": "donchian_breakout", "tokens": ["AAA"], "startDateString": "2024-01-15",
                          "endDateString": "2024-02-26", "max_memory_days": 3, "return_val": "net_profit",
                          "strategy_settings": {"min_trades": 0},
                          "optimisation_settings": {"method": "grid", "val_fraction": 0,
                                                    "search_settings": {"parameter_space": space}}})
    trained = train(MarketCandles(frame, TF), spec)
    rows = trained.history
    assert len(rows) == 9
    for row in rows:
        admissible = row["exit_period"] < row["entry_period"]
        assert np.isfinite(row["train_net_profit"]) == admissible, row
    assert trained.params["exit_period"] < trained.params["entry_period"]
    assert all(c["exit_period"] < c["entry_period"] for c in trained.candidates if c)
