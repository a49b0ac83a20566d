from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.train.objective import PoolObjective
from quant_core.train.search import run_study
from quant_core.train.split import plan_split
from quant_core.tunables import tunable_for
from quant_core.validate.folds import WalkForwardSettings, make_folds
from quant_core.validate.walk_forward import walk_forward

D0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_rolling_folds():
    folds = make_folds(D0, D0 + timedelta(days=100), WalkForwardSettings(train_days=30, test_days=10, gap_days=5))
    assert len(folds) == 6
    f = folds[1]
    assert (f.train_start, f.train_end) == (D0 + timedelta(days=10), D0 + timedelta(days=40))
    assert (f.test_start, f.test_end) == (D0 + timedelta(days=45), D0 + timedelta(days=55))
    assert all(x.test_start >= x.train_end for x in folds)


def test_anchored_folds_expand():
    folds = make_folds(D0, D0 + timedelta(days=60), WalkForwardSettings(train_days=20, test_days=10, anchored=True))
    assert [f.train_start for f in folds] == [D0] * 4
    assert [(f.train_end - D0).days for f in folds] == [20, 30, 40, 50]


def test_too_short_names_the_fix():
    with pytest.raises(ValueError, match="shorten train_days"):
        make_folds(D0, D0 + timedelta(days=20), WalkForwardSettings(train_days=30, test_days=10))


def _spec(**kw):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-21",
        "endDateString": "2024-03-01", "endTestDateString": "2024-04-20", "max_memory_days": 20,
        "optimisation_settings": {"method": "optuna", "optuna_settings": {
            "n_trials": 8, "n_jobs": 4, "n_startup_trials": 4, "expand_around": False,
            "parameter_config": {"memory_days": {"low": 1, "high": 30, "log_scale": True, "scalar": True},
                                 "k_per_day": {"low": 1, "high": 300, "log_scale": True}}}}, **kw})


def _problem(panel, spec):
    return tunable_for(spec).problem(panel, spec.start, spec.end)


def optuna_axes(spec):
    return _problem(random_walk_panel(120, seed=2), spec).axes("optuna")


def test_search_finds_the_best_of_its_trials_and_is_reproducible():
    panel = random_walk_panel(120, seed=2)
    spec = _spec()
    axes = optuna_axes(spec)
    # memory_days is searched as one value for every token, k_per_day token by token (Optuna's default)
    assert [a.token for a in axes if a.name == "memory_days"] == [None]
    assert [a.token for a in axes if a.name == "k_per_day"] == [0, 1, 2]
    # val_fraction 0.2 holds out the last 20%: trials are scored on the training part before it
    objective = PoolObjective(panel, spec, end=plan_split(panel, spec).train_end)
    a = run_study(_problem(panel, spec), spec, seed=1)
    b = run_study(_problem(panel, spec), spec, seed=1)
    assert a.best_params == b.best_params and a.n_trials == 8
    assert a.best_value == max(h["value"] for h in a.history)
    # the reported value is the objective at the reported parameters
    again = objective({k: np.array([v]) for k, v in a.best_params.items()})[0]
    assert again == pytest.approx(a.best_value, rel=1e-12)
    assert len(set(a.best_params["memory_days"])) == 1


def test_objective_refuses_rules_that_need_extra_series_and_skips_unused_parameters():
    panel = random_walk_panel(120, seed=2)
    with pytest.raises(ValueError, match="market_cap"):
        PoolObjective(panel, _spec().model_copy(update={"rule": "index_market_cap"}))
    # memory_days_2 only matters with use_alt_lamb: searched only then
    assert "memory_days_2" not in {a.name for a in optuna_axes(_spec())}
    assert "memory_days_2" in {a.name for a in optuna_axes(_spec().model_copy(update={"use_alt_lamb": True}))}


@pytest.mark.slow
def test_walk_forward_report():
    panel = random_walk_panel(120, seed=4)
    spec = _spec()
    rep = walk_forward(panel, spec, WalkForwardSettings(train_days=30, test_days=20), seed=0)
    assert len(rep.folds) == 3  # 90 days: 30 train + 20 test, rolled by 20
    assert rep.sample_size == sum(len(f.oos_log_returns) for f in rep.folds) == 3 * 19
    assert np.isfinite(rep.oos_sharpe) and np.isfinite(rep.mean_is_sharpe)
    assert rep.benchmark == "hodl" and rep.sample_unit == "out-of-sample days"
    uniform = rep.other_benchmarks["uniform"]
    assert len(rep.oos_equity) == len(rep.oos_dates) == len(uniform["equity"]) == rep.sample_size
    assert len(rep.oos_benchmark_equity) == rep.sample_size and np.isfinite(rep.oos_benchmark_sharpe)
    assert np.isfinite(uniform["sharpe"]) and uniform["sharpe"] != rep.oos_benchmark_sharpe
    sig = rep.significance
    assert sig["n_configurations"] == 8 and 0 <= sig["deflated_sharpe"] <= 1
    assert sig["deflated_sharpe_p_value"] == pytest.approx(1 - sig["deflated_sharpe"])
    assert 0 <= sig["pbo"] <= 1 and sig["n_candidates"] == 8 and len(sig["candidate_p_bh"]) == 8
    assert all(b >= p for b, p in zip(sig["candidate_p_bh"], sig["candidate_p_values"], strict=True))
    # walk-forward efficiency (Pardo): per fold OOS / IS annualised Sharpe, NaN where IS <= 0; mean and worst
    for f in rep.folds:
        is_s, oos_s = f.in_sample["sharpe"], f.out_of_sample["sharpe"]
        if is_s > 0:
            assert f.walk_forward_efficiency == pytest.approx(oos_s / is_s, rel=1e-12)
        else:
            assert np.isnan(f.walk_forward_efficiency)
    wfe = np.array([f.walk_forward_efficiency for f in rep.folds])
    assert rep.undefined_efficiency_folds == int(np.isnan(wfe).sum())
    np.testing.assert_equal(rep.mean_walk_forward_efficiency, np.mean(wfe))
    np.testing.assert_equal(rep.worst_walk_forward_efficiency, np.min(wfe))
    import json

    json.dumps(rep.to_dict())


def test_walk_forward_efficiency_edge_cases():
    from quant_core.validate.walk_forward import walk_forward_efficiency

    assert walk_forward_efficiency(2.0, 1.0) == 0.5
    assert walk_forward_efficiency(1.0, -0.5) == -0.5
    assert np.isnan(walk_forward_efficiency(0.0, 1.0)) and np.isnan(walk_forward_efficiency(-1.0, -2.0))
    assert np.isnan(walk_forward_efficiency(float("nan"), 1.0))


def test_out_of_sample_ignores_prices_after_the_test_window():
    """Perturbing prices after a fold's test window leaves its out-of-sample numbers unchanged."""
    from quant_core.data.panel import PricePanel

    panel = random_walk_panel(120, seed=4)
    spec = _spec()
    s = WalkForwardSettings(train_days=30, test_days=20, min_folds=1)
    base = walk_forward(panel, spec, s, seed=0, n_trials=4, end=D0 + timedelta(days=20 + 50))
    prices = panel.prices.copy()
    prices[71:] *= 1.5
    moved = walk_forward(PricePanel(panel.timestamps, panel.tokens, prices, 1440, {}), spec, s, seed=0, n_trials=4,
                         end=D0 + timedelta(days=20 + 50))
    assert base.folds[0].oos_log_returns == moved.folds[0].oos_log_returns
