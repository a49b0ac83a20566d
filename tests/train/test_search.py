"""Grid, random and Optuna search: batched scoring equals one-by-one scoring; settings do what they say."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.spec import RunSpecError
from quant_core.train.grid import run_grid
from quant_core.train.objective import PoolEvaluator, PoolObjective
from quant_core.train.search import run_study
from quant_core.train.split import plan_split
from quant_core.tunables import tunable_for

PANEL = random_walk_panel(200, seed=5)


def _problem(spec):
    return tunable_for(spec).problem(PANEL, spec.start, spec.end)


def grid_search(spec, **kw):
    return run_grid(_problem(spec), spec, **kw)


def optuna_search(spec, **kw):
    return run_study(_problem(spec), spec, **kw)


def _spec(opt=None, **kw):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-30", "max_memory_days": 20,
        "optimisation_settings": {"val_fraction": 0.25, **(opt or {})}, **kw})


def test_grid_batches_equal_one_by_one_evaluation():
    space = {"memory_days": [3, 10, 30], "k_per_day": {"low": 1, "high": 100, "log_scale": True, "n": 3}}
    spec = _spec({"method": "grid", "search_settings": {"parameter_space": space, "batch_size": 4, "top_k": 3}})
    r = grid_search(spec)
    assert r.n_evaluations == 9 and r.batch_size == 4 and r.evaluations_per_second > 0
    assert sorted({round(row["k_per_day"], 9) for row in r.table}) == [1.0, 10.0, 100.0]
    train_end = plan_split(PANEL, spec).train_end
    single = PoolObjective(PANEL, spec, end=train_end)
    for row in r.table:
        one = single({"memory_days": np.full((1, 3), row["memory_days"]),
                      "k_per_day": np.full((1, 3), row["k_per_day"]), "memory_days_2": np.full((1, 3), 10.0)})[0]
        assert row["train_daily_log_sharpe"] == pytest.approx(one, rel=1e-10)
    values = [row["train_daily_log_sharpe"] for row in r.top]
    assert values == sorted(values, reverse=True) and values[0] == r.best_value
    assert r.best_params["memory_days"] == [r.top[0]["memory_days"]] * 3
    assert all("validation_daily_log_sharpe" in row for row in r.table)


def test_random_search_is_seeded_within_ranges_and_per_token_when_asked():
    space = {"memory_days": {"low": 2, "high": 40, "log_scale": True},
             "k_per_day": {"low": 5, "high": 50, "scalar": False}}
    spec = _spec({"method": "random", "search_settings": {"parameter_space": space, "n_samples": 40,
                                                          "batch_size": 16}})
    a, b = grid_search(spec, seed=3), grid_search(spec, seed=3)
    assert a.table == b.table and grid_search(spec, seed=4).table != a.table
    md = np.array([row["memory_days"] for row in a.table])
    assert md.min() >= 2 and md.max() <= 40 and np.median(md) < 21  # log-uniform leans low
    assert {"k_per_day[AAA]", "k_per_day[BBB]", "k_per_day[CCC]"} <= set(a.table[0])
    assert len({a.table[0][f"k_per_day[{t}]"] for t in ("AAA", "BBB", "CCC")}) == 3


def test_search_space_errors_name_the_fix():
    with pytest.raises(RunSpecError, match="its parameters are"):  # refused when the spec loads
        _spec({"search_settings": {"parameter_space": {"nope": [1, 2]}}})
    with pytest.raises(RunSpecError, match="low"):
        _spec({"search_settings": {"parameter_space": {"memory_days": {"low": 5, "high": 1}}}})
    big = {k: {"low": 1, "high": 2, "n": 100, "scalar": False} for k in ("memory_days", "k_per_day")}
    with pytest.raises(ValueError, match="method: random"):
        grid_search(_spec({"method": "grid", "search_settings": {"parameter_space": big}}))


def _optuna(**settings):
    base = {"n_trials": 8, "n_jobs": 4, "n_startup_trials": 4, "expand_around": False,
            "parameter_config": {"memory_days": {"low": 1, "high": 30, "log_scale": True, "scalar": True},
                                 "k_per_day": {"low": 1, "high": 100, "log_scale": True, "scalar": True}}}
    return _spec({"method": "optuna", "optuna_settings": {**base, **settings}})


def test_overfitting_penalty_scores_validation_minus_the_gap():
    r = optuna_search(_optuna(overfitting_penalty=0.5), seed=2)
    for h in r.history:
        assert h["value"] == pytest.approx(h["validation"] - 0.5 * max(0.0, h["train"] - h["validation"]))
    assert r.best_value == max(h["value"] for h in r.history)
    with pytest.raises(RunSpecError, match="val_fraction"):
        load_run_spec({"optimisation_settings": {"method": "optuna", "val_fraction": 0,
                                                 "optuna_settings": {"overfitting_penalty": 0.5}}})


def test_multi_objective_reports_sub_period_mean_std_and_worst():
    spec = _optuna(multi_objective=True, n_sub_periods=3)
    r = optuna_search(spec, seed=2)
    split = plan_split(PANEL, spec)
    edges = np.linspace(0, split.train_steps, 4).astype(int)
    ev = PoolEvaluator(PANEL, spec, segments=tuple(zip(edges[:-1], edges[1:], strict=True)))
    h = r.history[0]
    subs = ev.scores({"memory_days": np.array([h["params"]["memory_days"]]),
                      "k_per_day": np.array([h["params"]["k_per_day"]])})[0, 0]
    assert h["sub_mean"] == pytest.approx(subs.mean()) and h["sub_std"] == pytest.approx(subs.std())
    assert h["sub_worst"] == pytest.approx(subs.min())
    with pytest.raises(ValueError, match="cmaes"):
        optuna_search(_optuna(multi_objective=True, sampler="cmaes"))


@pytest.mark.parametrize("sampler", ["cmaes", "gp"])
def test_other_samplers_run(sampler):
    r = optuna_search(_optuna(sampler=sampler, n_trials=6, n_startup_trials=2), seed=1)
    assert r.n_trials == 6 and np.isfinite(r.best_value)


def test_study_survives_in_storage_and_continues(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = _optuna(storage={"type": "sqlite", "url": url}, study_name="momentum-aaa")
    optuna_search(spec, seed=1, n_trials=4)
    optuna_search(spec, seed=1, n_trials=4)
    study = optuna.load_study(study_name="momentum-aaa", storage=url)
    assert len(study.trials) == 8 and all("train" in t.user_attrs for t in study.trials)


def test_early_stopping_ends_the_study():
    spec = _optuna(n_trials=200, n_jobs=2, early_stopping={"enabled": True, "patience": 4, "min_improvement": 10.0})
    r = optuna_search(spec, seed=1)
    assert r.stopped_early and r.n_trials < 20


def test_gp_sampler_finds_a_smooth_optimum_better_than_random():
    from quant_core.train.gp_sampler import GaussianProcessSampler

    def f(trial):
        x = trial.suggest_float("x", 0.01, 100, log=True)
        y = trial.suggest_float("y", -5, 5)
        return -((np.log10(x) - 1.2) ** 2) - (y - 1.5) ** 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best = {}
    for name, sampler in (("gp", GaussianProcessSampler(seed=0, n_startup_trials=8)),
                          ("random", optuna.samplers.RandomSampler(seed=0))):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(f, n_trials=30)
        best[name] = study.best_value
    assert best["gp"] > -0.05 and best["gp"] > best["random"]
