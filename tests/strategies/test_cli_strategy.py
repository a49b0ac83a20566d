"""`quant train SPEC --candles FILE` on CEX strategy specs: the JSON result, the summary and the errors."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from test_train_strategy import assert_in_schema, spiky_candles

from quant_core.cli import main
from quant_core.data.market_candles import MarketCandles
from quant_core.data.synthetic import synthetic_candles
from quant_core.runspec import load_run_spec
from quant_core.strategies.backtest import STRATEGY_METRICS
from quant_core.tunables import StrategyTunable

SPEC = """\
strategy: liquidity_sweep
startDateString: "2024-01-21"
endDateString: "2024-03-06"
endTestDateString: "2024-04-20"
max_memory_days: 20
strategy_settings: {min_trades: 3, taker_fee_bps: 5}
optimisation_settings:
  method: random
  val_fraction: 0.0  # train and test windows of 45 days: one compiled backtest shape serves both
  search_settings: {batch_size: 16}
  optuna_settings: {n_jobs: 4, n_startup_trials: 4}
"""
TRAIN = (datetime(2024, 1, 21, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))
TEST = (TRAIN[1], datetime(2024, 4, 20, tzinfo=UTC))


def _no_nan(text: str) -> dict:
    def bad(token):
        raise AssertionError(f"{token} in the JSON")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("candles")
    spiky = spiky_candles(days=120)  # 2024-01-01 .. 2024-04-30
    paths = {"spiky": d / "spiky_1h.parquet", "synthetic": d / "synthetic_1h.parquet", "spec": d / "spec.yaml"}
    spiky.write_parquet(paths["spiky"])
    synthetic_candles(timeframe="1h", start="2024-01-01", end="2024-05-01", seed=3).write_parquet(paths["synthetic"])
    paths["spec"].write_text(SPEC)
    return paths


def spec_file(tmp_path, text: str = SPEC, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_random_writes_parameters_metrics_and_trades(files, tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["train", str(files["spec"]), "--candles", str(files["spiky"]), "--out", str(out), "--seed", "5",
            "--budget", "16"]
    assert main(argv) == 0
    payload = _no_nan(out.read_text())
    assert {"strategy", "method", "seed", "parameters", "metrics", "trades", "n_evaluations", "seconds",
            "evaluations_per_second", "top", "run_spec"} <= set(payload)
    assert payload["strategy"] == "liquidity_sweep" and payload["method"] == "random" and payload["seed"] == 5
    assert payload["timeframe"] == "1h" and payload["objective"] == "daily_log_sharpe"
    assert payload["n_evaluations"] == 16 and payload["seconds"] > 0 and payload["evaluations_per_second"] > 0
    params = payload["parameters"]
    assert_in_schema(params)
    assert len(payload["top"]) == 10 and {k: payload["top"][0][k] for k in params} == params
    assert payload["search_objective"] == payload["top"][0]["train_daily_log_sharpe"]
    # val_fraction 0: the search scored the whole training window, as the reported train backtest does
    assert payload["metrics"]["train"]["objective"] == pytest.approx(payload["search_objective"], rel=1e-12)
    assert payload["details"]["scored_on"] == {"train": ["2024-01-21", "2024-03-06"], "validation": None}
    run_spec = load_run_spec(payload["run_spec"])  # the spec as run, with the CLI overrides
    assert run_spec.strategy == "liquidity_sweep"
    assert run_spec.optimisation_settings.search_settings.n_samples == 16
    assert run_spec.optimisation_settings.initial_random_key == 5
    assert set(payload["metrics"]) == set(payload["trades"]) == {"initial_train", "train", "test"}
    candles = MarketCandles(pl.read_parquet(files["spiky"]), "1h")
    tunable = StrategyTunable(run_spec)
    initial = tunable.user_params(tunable.initial())
    for part, (start, end), p in (("initial_train", TRAIN, initial), ("train", TRAIN, params),
                                  ("test", TEST, params)):
        m, trades = payload["metrics"][part], payload["trades"][part]
        assert set(STRATEGY_METRICS) | {"objective"} == set(m)
        assert m["objective"] == m["daily_log_sharpe"]
        assert m["n_trades"] == len(trades)
        # each window is its own backtest, starting flat with warm-up from before it
        res = tunable.backtest(candles, [p], start, end, trades=True)
        assert m["daily_log_sharpe"] == pytest.approx(float(res.metrics["daily_log_sharpe"][0]), rel=1e-12)
        assert len(res.trades[0]) == len(trades)
        if part == "initial_train":
            continue
        assert len(trades) > 0
        for name in ("net_profit", "win_rate", "expectancy", "avg_win", "daily_log_sharpe", "max_drawdown",
                     "exposure", "sharpe_per_trade"):
            assert m[name] is not None and math.isfinite(m[name]), (part, name)
        assert sum(t["pnl"] for t in trades) == pytest.approx(m["net_profit"], rel=1e-9)
        for t in trades:
            entry, exit_ = datetime.fromisoformat(t["entry_time"]), datetime.fromisoformat(t["exit_time"])
            assert entry.utcoffset() == timedelta(0) and start <= entry <= exit_ < end
            assert t["side"] in ("long", "short") and t["exit_reason"] in ("stop", "target", "time", "end")
    printed = capsys.readouterr().out
    assert "read 2880 1h candles" in printed and f"wrote {out}" in printed
    assert "liquidity_sweep (1h), random (seed 5): trained on daily_log_sharpe (higher is better)" in printed
    assert "starting parameters " in printed and " -> trained " in printed and "over the test window" in printed
    assert f"trades: train {len(payload['trades']['train'])}, test {len(payload['trades']['test'])}" in printed
    assert "win rate: train " in printed and 'parameters: {"lookback": ' in printed


def test_optuna_and_grid_on_synthetic_candles(files, tmp_path, capsys):
    optuna = spec_file(tmp_path, SPEC.replace("method: random", "method: optuna"), "optuna.yaml")
    out = tmp_path / "optuna.json"
    assert main(["train", optuna, "--candles", str(files["spiky"]), "--budget", "8", "--out", str(out)]) == 0
    payload = _no_nan(out.read_text())
    assert payload["method"] == "optuna" and payload["n_evaluations"] == 8
    assert "evaluations_per_second" not in payload
    values = [row["value"] for row in payload["top"]]
    assert values == sorted(values, reverse=True) and values[0] == payload["search_objective"]
    assert {k: payload["top"][0][k] for k in payload["parameters"]} == payload["parameters"]
    assert_in_schema(payload["parameters"])
    capsys.readouterr()

    space = ("  search_settings: {batch_size: 16, parameter_space: {lookback: [10, 15], volume_spike_threshold: "
             "[1.5, 2.0], sma_period: [0], rr_ratio: [2.0], stop_atr_mult: [1.0], pierce_depth: [0.001], "
             "volume_period: [10], max_hold_bars: [24], atr_period: [14]}}\n")
    grid = SPEC.replace("method: random", "method: grid").replace("  search_settings: {batch_size: 16}\n", space)
    grid = grid.replace("min_trades: 3", "min_trades: 0").replace('endTestDateString: "2024-04-20"\n', "")
    out = tmp_path / "grid.json"
    assert main(["train", spec_file(tmp_path, grid, "grid.yaml"), "--candles", str(files["synthetic"]),
                 "--timeframe", "1h", "--budget", "99", "--out", str(out)]) == 0
    payload = _no_nan(out.read_text())
    assert payload["method"] == "grid" and payload["n_evaluations"] == 4 and len(payload["top"]) == 4
    assert set(payload["metrics"]) == set(payload["trades"]) == {"initial_train", "train"}
    assert payload["parameters"]["lookback"] in (10, 15) and payload["parameters"]["sma_period"] == 0
    assert payload["metrics"]["train"]["n_trades"] == len(payload["trades"]["train"])
    printed = capsys.readouterr().out
    assert "--budget does not change a grid" in printed and "test window" not in printed


def test_reads_csv(files, tmp_path):
    csv = tmp_path / "btc_1h.csv"
    pl.read_parquet(files["spiky"]).with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(csv)
    out = tmp_path / "r.json"
    assert main(["train", str(files["spec"]), "--candles", str(csv), "--seed", "5", "--budget", "16",
                 "--out", str(out)]) == 0
    payload = _no_nan(out.read_text())
    assert payload["timeframe"] == "1h" and payload["n_evaluations"] == 16 and payload["metrics"]["test"]


def test_infers_4h_candles(files, tmp_path):
    four = pl.read_parquet(files["spiky"]).group_by_dynamic("timestamp", every="4h").agg(
        pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
        pl.col("volume").sum())
    path = tmp_path / "btc_4h.parquet"
    four.write_parquet(path)
    out = tmp_path / "r.json"
    spec = spec_file(tmp_path, SPEC.replace("min_trades: 3", "min_trades: 0"))
    assert main(["train", spec, "--candles", str(path), "--budget", "4", "--out", str(out)]) == 0
    payload = _no_nan(out.read_text())
    assert payload["timeframe"] == "4h" and payload["n_evaluations"] == 4
    assert all(t["entry_time"][11:13] in ("00", "04", "08", "12", "16", "20") for t in payload["trades"]["train"])


# ------------------------------------------------------------------------------------------------ errors


def test_flags_that_do_not_fit_the_spec(files, tmp_path, capsys):
    spec, candles = str(files["spec"]), str(files["spiky"])
    assert main(["train", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pass --candles FILE" in err and "liquidity_sweep" in err
    assert main(["train", spec, "--prices", "prices.csv"]) == 2
    err = capsys.readouterr().err
    assert "--prices is for pool specs" in err and "pass --candles FILE" in err
    assert main(["train", spec, "--candles", candles, "--prices", "prices.csv"]) == 2
    assert "--prices is for pool specs" in capsys.readouterr().err
    pool = spec_file(tmp_path, "rule: momentum\ntokens: [BTC, ETH]\n", "pool.yaml")
    assert main(["train", pool, "--candles", candles]) == 2
    err = capsys.readouterr().err
    assert "--candles is for CEX strategy specs" in err and "pass --prices FILE" in err
    assert main(["train", pool]) == 2
    assert "pass --prices FILE" in capsys.readouterr().err
    assert main(["train", spec, "--candles", str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet: no such file" in capsys.readouterr().err


def test_gappy_candles_name_the_missing_bar_and_the_fix(files, tmp_path, capsys):
    candles = pl.read_parquet(files["spiky"])
    lost = [datetime(2024, 2, 10, 5, tzinfo=UTC), datetime(2024, 2, 10, 6, tzinfo=UTC)]
    gappy = tmp_path / "gappy.parquet"
    candles.filter((pl.col("timestamp") != lost[0]) & (pl.col("timestamp") != lost[1])).write_parquet(gappy)
    assert main(["train", str(files["spec"]), "--candles", str(gappy)]) == 2
    err = capsys.readouterr().err
    assert "misses 2 1h candle(s) inside the spec's window 2024-01-21 .. 2024-04-20" in err
    assert "the first missing candle opens at 2024-02-10 05:00 UTC" in err
    assert f"quant data import {gappy} --max-fill 2 --out FILLED.parquet" in err


def test_a_gap_in_the_warm_up_only_shortens_it(files, tmp_path, capsys):
    candles = pl.read_parquet(files["spiky"])
    gappy = tmp_path / "warm_gap.parquet"
    candles.filter(pl.col("timestamp") != datetime(2024, 1, 10, 3, tzinfo=UTC)).write_parquet(gappy)
    spec = spec_file(tmp_path, SPEC.replace("min_trades: 3", "min_trades: 0"))
    assert main(["train", spec, "--candles", str(gappy), "--budget", "4"]) == 0
    assert "note: 1 gap(s) outside the spec's window" in capsys.readouterr().out


def test_window_outside_the_data(files, tmp_path, capsys):
    late = spec_file(tmp_path, SPEC.replace('endTestDateString: "2024-04-20"', 'endTestDateString: "2024-06-01"'))
    assert main(["train", late, "--candles", str(files["spiky"])]) == 2
    err = capsys.readouterr().err
    assert "the spec's window 2024-01-21 00:00 .. 2024-06-01 00:00 (startDateString .. endTestDateString)" in err
    assert "cover 2024-01-01 00:00 .. 2024-04-30 00:00" in err and "move the dates inside the data" in err
    early = spec_file(tmp_path, SPEC.replace('startDateString: "2024-01-21"', 'startDateString: "2023-12-01"'))
    assert main(["train", early, "--candles", str(files["spiky"])]) == 2
    assert "is not inside the candles" in capsys.readouterr().err


def test_timeframes_that_do_not_fit(files, tmp_path, capsys):
    assert main(["train", str(files["spec"]), "--candles", str(files["spiky"]), "--timeframe", "4h"]) == 2
    err = capsys.readouterr().err
    assert "holds 1h candles" in err and "--resample 4h" in err
    weekly = tmp_path / "weekly.parquet"
    synthetic_candles(timeframe="1w", start="2023-01-02", end="2024-06-03").write_parquet(weekly)
    assert main(["train", str(files["spec"]), "--candles", str(weekly)]) == 2
    assert "holds 1w candles; CEX strategies need a timeframe that divides a day" in capsys.readouterr().err


def test_min_trades_nobody_reaches_exits_2(files, tmp_path, capsys):
    spec = spec_file(tmp_path, SPEC.replace("min_trades: 3", "min_trades: 100000"))
    assert main(["train", spec, "--candles", str(files["spiky"]), "--budget", "4"]) == 2
    assert "min_trades" in capsys.readouterr().err


def test_budget_must_be_positive(files, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(files["spec"]), "--candles", str(files["spiky"]), "--budget", "0"])
    assert "--budget must be >= 1" in capsys.readouterr().err


def test_help_names_both_inputs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--candles" in text and "--prices" in text and "--timeframe" in text
    assert np.all([flag in text for flag in ("--out", "--seed", "--budget")])
