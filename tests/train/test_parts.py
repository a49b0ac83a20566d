"""A search cut into parts (quant_core.train.parts) gives what one in-process `train` gives: grid and random parts
combine to the same table and parameters bit for bit; Optuna workers sharing a study in one storage run the whole
budget between them, each from its own seed, and the result is read back from the storage."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import optuna
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.train.parts import combine_parts, plan_search, run_part
from quant_core.train.trainer import train

PANEL = random_walk_panel(200, seed=5)


def _spec(opt):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-30", "max_memory_days": 20,
        "optimisation_settings": {"val_fraction": 0.25, **opt}})


GRID = _spec({"method": "grid", "search_settings": {"batch_size": 4, "top_k": 5, "parameter_space": {
    "memory_days": [2, 3, 5, 8, 13], "k_per_day": {"low": 1, "high": 100, "log_scale": True, "n": 5}}}})


def _without_timing(t):
    d = dict(vars(t))
    for k in ("seconds", "environment"):
        d.pop(k)
    d["details"] = {k: v for k, v in d["details"].items() if k not in ("evaluations_per_second", "parts")}
    return d


@pytest.mark.parametrize("n_parts", [2, 3, 7])
def test_grid_parts_combine_to_the_whole_search_bit_for_bit(n_parts):
    parts = plan_search(PANEL, GRID, seed=1, n_parts=n_parts)
    assert len(parts) == min(n_parts, 7)  # 25 candidates in batches of 4: at most 7 parts
    assert parts[0].lo == 0 and parts[-1].hi == 25 and all(p.lo % 4 == 0 for p in parts)
    assert all(a.hi == b.lo for a, b in zip(parts, parts[1:], strict=False))
    outcomes = [run_part(PANEL, GRID, p) for p in reversed(parts)]  # any order
    combined = combine_parts(PANEL, GRID, outcomes)
    whole = train(PANEL, GRID, seed=1)
    np.testing.assert_equal(_without_timing(combined), _without_timing(whole))
    assert [p["part"] for p in combined.details["parts"]] == list(range(len(parts)))


def test_random_parts_use_the_seed_and_budget_of_the_plan():
    spec = _spec({"method": "random", "search_settings": {"batch_size": 8, "parameter_space": {
        "memory_days": {"low": 2, "high": 40, "log_scale": True}, "k_per_day": {"low": 5, "high": 50}}}})
    parts = plan_search(PANEL, spec, seed=9, budget=30, n_parts=2)
    assert [(p.lo, p.hi) for p in parts] == [(0, 16), (16, 30)]
    combined = combine_parts(PANEL, spec, [run_part(PANEL, spec, p) for p in parts])
    np.testing.assert_equal(_without_timing(combined), _without_timing(train(PANEL, spec, seed=9, n_trials=30)))


def test_one_part_unless_asked_and_methods_that_cannot_split_are_refused():
    gd = _spec({"method": "gradient_descent"})
    (part,) = plan_search(PANEL, gd, seed=0)
    assert part.kind == "whole"
    with pytest.raises(ValueError, match="search_steps=3: method gradient_descent trains one path"):
        plan_search(PANEL, gd, seed=0, n_parts=3)
    with pytest.raises(ValueError, match="search_steps=0: use 1 to 256"):
        plan_search(PANEL, GRID, seed=0, n_parts=0)
    opt = _spec({"method": "optuna", "optuna_settings": {"n_trials": 8}})
    with pytest.raises(ValueError, match="needs a database every step reaches"):
        plan_search(PANEL, opt, seed=0, n_parts=2)
    (whole,) = plan_search(PANEL, opt, seed=0, n_parts=1)
    assert whole.kind == "whole"


def _worker(spec, part, queue):
    queue.put(run_part(PANEL, spec, part))


def test_optuna_workers_share_one_study_in_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    spec = _spec({"method": "optuna", "optuna_settings": {"n_trials": 21, "n_jobs": 4, "n_startup_trials": 4}})
    parts = plan_search(PANEL, spec, seed=3, n_parts=3, storage=storage, study_name="week-1")
    assert [p.n_trials for p in parts] == [7, 7, 7] and {p.kind for p in parts} == {"worker"}
    ctx = mp.get_context("spawn")  # separate processes, as separate steps are
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec, p, queue)) for p in parts]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(o.n_trials for o in outcomes) == [7, 7, 7]
    trained = combine_parts(PANEL, spec, outcomes)
    assert trained.n_evaluations == 21 and trained.details["study_name"] == "week-1"
    study = optuna.load_study(study_name="week-1", storage=storage)
    assert len(study.trials) == 21
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert trained.objective == pytest.approx(best.value)
    assert trained.params == {k: v for k, v in trained.candidates[0].items()}
    # each worker samples from its own seed (the same seed would repeat the start-up proposals worker by worker)
    assert len({str(h["params"]) for h in trained.history}) == 21
    # a retried plan finds the study instead of failing on the existing name
    again = plan_search(PANEL, spec, seed=3, n_parts=3, storage=storage, study_name="week-1")
    assert again == parts
