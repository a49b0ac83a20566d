"""Issue 18 item 14: reports, the store and exports carry every metric in its natural sign.

Training maximises risk measures negated (quant_core.metrics.METRICS); what a person or a trader reads
(`metrics.summary`, evaluations, `quant train`'s result and summary, stored versions, `quant configs export`)
shows volatility, drawdowns, durations and the ulcer index as the positive numbers they are.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import jax.numpy as jnp
import pytest

import quant_core  # noqa: F401  (enables float64)
from quant_core import metrics
from quant_core.cli import main
from quant_core.lifecycle import LifecycleStage
from quant_core.report import TrainingResult
from quant_core.store import ConfigurationStore, NewConfiguration

# daily values with a drawdown (peak 105, trough 99) and a recovery
V = [100.0, 102.0, 101.0, 105.0, 103.0, 99.0, 100.0, 104.0, 106.0, 104.0, 107.0, 108.0]
RISKS = ("greatest_draw_down", "weekly_max_drawdown", "annualised_volatility", "max_drawdown_duration", "ulcer")


def test_summary_reports_risk_measures_positive_and_training_keeps_them_negated():
    got = metrics.summary(V, 1)
    for name in RISKS:
        objective = float(metrics.get_metric(name)(jnp.asarray(V), 1))
        assert objective < 0, name  # what the optimiser maximises
        assert got[name] == pytest.approx(-objective, rel=1e-12) and got[name] > 0, name
    assert got["max_drawdown_duration"] == 4.0
    assert got["greatest_draw_down"] == pytest.approx(1 - 99 / 105, rel=1e-12)
    assert got["daily_log_sharpe"] == pytest.approx(float(metrics.daily_log_sharpe(jnp.asarray(V), 1)))
    flat = metrics.summary([100.0] * 8, 1)
    assert all(flat[name] == 0.0 and math.copysign(1.0, flat[name]) == 1.0 for name in RISKS)  # no "-0.0"


def test_natural_sign_helpers():
    assert metrics.natural_value("ulcer", -8.73) == 8.73 and metrics.natural_value("sharpe", -1.0) == -1.0
    assert metrics.natural_value("ulcer", None) is None
    assert metrics.natural_signs({"max_drawdown": -0.2, "net_profit": -5.0}) == {"max_drawdown": 0.2,
                                                                                "net_profit": -5.0}
    assert metrics.maximised("ulcer") == "-ulcer" and metrics.maximised("daily_log_sharpe") == "daily_log_sharpe"
    assert metrics.better("ulcer") == "lower is better" and metrics.better("sortino") == "higher is better"


def _version(metrics_json: dict) -> NewConfiguration:
    d = datetime(2024, 1, 1, tzinfo=UTC)
    return NewConfiguration(
        universe_key="u1", strategy="liquidity_sweep", method="random", exchanges=["binance"], symbols=["BTC/USDT"],
        timeframe="1h", parameters={"rr_ratio": 2.0}, metrics=metrics_json, lifecycle_stage=LifecycleStage.DISCOVERY,
        stage_reason="r", stage_evidence={}, sample_size=3, train_start=d, train_end=d.replace(month=3),
        test_start=d.replace(month=3), test_end=d.replace(month=4), data_hash="h", code_version="v", seed=0,
        run_spec={})


def test_configs_export_shows_natural_signs_for_versions_written_before_and_after(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    # a version as written before natural signs: risk measures negated, no "signs" marker
    old = {"in_sample": {"annualised_volatility": -0.376, "max_drawdown_duration": -124.0, "ulcer": -8.73,
                         "max_drawdown": -0.2, "daily_log_sharpe": 1.1, "net_profit": -3.0},
           "holdout": {"ulcer": -2.5, "greatest_draw_down": -0.1},
           "walk_forward": {"oos_sharpe": 0.7}, "training_objective": 5.0}
    new = {"in_sample": {"annualised_volatility": 0.2, "ulcer": 1.5}, "holdout": {}, "signs": "natural"}
    with ConfigurationStore(url) as store:
        old_id = store.add_version(_version(old)).id
        new_id = store.add_version(_version(new | {"walk_forward": {"oos_sharpe": 0.1}})).id
    capsys.readouterr()
    assert main(["configs", "export", str(old_id), "--url", url]) == 0
    exported = json.loads(capsys.readouterr().out)["metrics"]
    assert exported["in_sample"] == {"annualised_volatility": 0.376, "max_drawdown_duration": 124.0, "ulcer": 8.73,
                                     "max_drawdown": 0.2, "daily_log_sharpe": 1.1, "net_profit": -3.0}
    assert exported["holdout"] == {"ulcer": 2.5, "greatest_draw_down": 0.1}
    assert exported["walk_forward"] == {"oos_sharpe": 0.7} and "converted on read" in exported["signs"]
    assert main(["configs", "export", str(new_id), "--url", url]) == 0
    exported = json.loads(capsys.readouterr().out)["metrics"]
    assert exported["in_sample"] == {"annualised_volatility": 0.2, "ulcer": 1.5} and exported["signs"] == "natural"


def _result(objective: str, test: bool = True) -> TrainingResult:
    parts = {"initial_train": 0.5622, "train": 1.1609, **({"test": 1.8878} if test else {})}
    return TrainingResult(
        kind="pool", name="momentum", tokens=["BTC", "ETH"], method="optuna", seed=3, objective=objective,
        search_objective=-1.3574 if objective == "ulcer" else 1.3574,
        parameters={"memory_days": [7.0, 7.0]}, metrics={p: {objective: v, "objective": v} for p, v in parts.items()},
        n_evaluations=64, seconds=2.0,
        details={"scored_on": {"train": ["2024-01-01", "2024-07-01"], "validation": ["2024-07-01", "2024-09-01"]}},
        windows={"train_start": "2024-01-01 00:00:00", "train_end": "2024-09-01 00:00:00",
                 "test_end": "2024-12-01 00:00:00" if test else None},
        run_spec={"optimisation_settings": {"method": "optuna", "early_stopping_metric": "daily_log_sharpe",
                                            "optuna_settings": {"sampler": "tpe", "overfitting_penalty": 0.0,
                                                                "multi_objective": False}}},
    )


def test_train_summary_says_what_each_number_is():
    text = _result("daily_log_sharpe").summary()
    assert "daily_log_sharpe (higher is better)" in text
    assert "training window 2024-01-01..2024-09-01" in text and "test window 2024-09-01..2024-12-01" in text
    assert "starting parameters 0.5622" in text and "trained 1.1609" in text and "1.8878" in text
    # the search's own number, on the part it scored, and what it maximised
    assert "tpe search maximised daily_log_sharpe on the train part 2024-01-01..2024-07-01" in text
    assert "best score 1.3574" in text and "seed 3" in text
    text = _result("ulcer", test=False).summary()
    assert "ulcer (lower is better)" in text and "starting parameters 0.5622" in text
    assert "maximised -ulcer" in text and "best score -1.3574" in text and "test window" not in text


def test_trained_result_reports_natural_signs_and_the_search_table_too(tmp_path):
    """A small grid search end to end: metrics, the top table and the summary in natural signs."""
    from helpers import random_walk_panel

    from quant_core.report import train_report
    from quant_core.runspec import load_run_spec

    panel = random_walk_panel(200, tokens=("AAA", "BBB"), seed=4, sigma=0.05)
    spec = load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB"], "startDateString": "2024-02-01",
        "endDateString": "2024-05-01", "endTestDateString": "2024-07-01", "max_memory_days": 20,
        "return_val": "ulcer",
        "optimisation_settings": {"method": "grid", "search_settings": {"default_points": 2}}})
    result = train_report(panel, spec)
    for part in ("initial_train", "train", "test"):
        m = result.metrics[part]
        assert m["ulcer"] > 0 and m["annualised_volatility"] > 0 and m["greatest_draw_down"] >= 0, part
        assert m["objective"] == m["ulcer"]
    assert result.search_objective < 0  # the search maximised -ulcer
    assert all(row["train_ulcer"] > 0 and row["train_greatest_draw_down"] >= 0 for row in result.top)
    assert all(row["train_ulcer"] > 0 for row in result.history)
    text = result.summary()
    assert "ulcer (lower is better)" in text and "maximised -ulcer" in text


def test_live_status_reports_the_forward_drawdown_positive():
    from types import SimpleNamespace

    from quant_core.live.status import forward_summary

    returns = [0.01, -0.03, 0.005, 0.02]
    values, v = [], 100.0
    for r in returns:
        v *= math.exp(r)
        values.append(v)
    records = [SimpleNamespace(log_return=r, benchmark_log_return=0.0, value=x, n_trades=0,
                               day=datetime(2024, 5, 1 + i, tzinfo=UTC))
               for i, (r, x) in enumerate(zip(returns, values, strict=True))]
    assert forward_summary(records)["max_drawdown"] == pytest.approx(-math.expm1(-0.03))  # deepest after the -3 % day
