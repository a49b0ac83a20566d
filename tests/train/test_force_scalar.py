"""optimisation_settings.force_scalar: one value of each rule parameter shared by every token
(quant_core/train/force_scalar.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.sim.pool import get_pool
from quant_core.sim.simulate import simulate
from quant_core.spec import RunSpecError
from quant_core.train.gradient import train_gradient
from quant_core.train.params import initial_sets, parameter_layout
from quant_core.train.problem import search_axes
from quant_core.tunables import tunable_for

TOKENS = ["AAA", "BBB", "CCC"]
PANEL = random_walk_panel(200, seed=3)
HONOURED = ("momentum", "anti_momentum", "power_channel", "mean_reversion_channel",
            "triple_threat_mean_reversion_channel")


def _spec(rule="momentum", force=True, opt=None, **kw):
    return load_run_spec({
        "rule": rule, "tokens": TOKENS, "startDateString": "2024-01-31", "endDateString": "2024-05-30",
        "max_memory_days": 20, "bout_offset": 14 * 1440,
        "optimisation_settings": {"force_scalar": force, "n_iterations": 6, "n_parameter_sets": 2, "batch_size": 4,
                                  **(opt or {})}, **kw})


def test_default_is_off_and_true_is_accepted():
    assert load_run_spec({"rule": "momentum"}).optimisation_settings.force_scalar is False
    assert _spec().optimisation_settings.force_scalar is True


@pytest.mark.parametrize("rule", HONOURED)
def test_layout_has_one_value_per_rule_parameter(rule):
    shared, per_token = parameter_layout(_spec(rule)), parameter_layout(_spec(rule, force=False))
    assert [p.name for p in shared.trainable] == [p.name for p in per_token.trainable]
    names = {p.name for p in get_pool(rule).rule.params}
    assert {p.name for p in shared.trainable} <= names and all(p.scalar for p in shared.trainable)
    u = shared.to_unconstrained(shared.initial)
    assert all(v.shape == (1,) for v in u.values())
    assert all(v.shape == (3,) for v in per_token.to_unconstrained(per_token.initial).values())
    sets = initial_sets(shared, _spec(rule))
    assert all(v.shape == (2, 1) for v in sets.values())
    assert not np.allclose(sets["k_per_day"][0], sets["k_per_day"][1])  # sets 1.. still get their noise
    user = {k: np.asarray(v) for k, v in shared.to_user(sets).items()}
    assert all(v.shape == (2, 3) and np.all(v == v[:, :1]) for v in user.values())  # reported per token, equal


def test_ensemble_members_each_share_one_value():
    spec = _spec("ensemble__momentum", opt={"n_ensemble_members": 3})
    layout = parameter_layout(spec)
    sets = initial_sets(layout, spec)
    assert sets["memory_days"].shape == (2, 3, 1)
    assert len(np.unique(sets["memory_days"][0])) == 3  # members spread, one value each


def test_gradient_training_keeps_tokens_equal_and_differs_from_per_token_training():
    opt = {"track_checkpoints": True, "checkpoint_interval": 3}
    shared = train_gradient(PANEL, _spec(opt=opt))
    per_token = train_gradient(PANEL, _spec(force=False, opt=opt))
    for c in shared.checkpoints:
        for params in c["params"]:
            for name in ("memory_days", "k_per_day"):
                assert np.ptp(params[name]) == 0.0, (c["iteration"], name, params[name])
    for name in ("memory_days", "k_per_day"):
        assert np.ptp(shared.params[name]) == 0.0
    start = parameter_layout(_spec()).initial["k_per_day"][0]
    last = shared.checkpoints[-1]["params"][0]
    assert last["k_per_day"][0] != pytest.approx(start)  # it trained
    moved = per_token.checkpoints[-1]["params"][0]
    assert np.ptp(moved["k_per_day"]) > 0 and not np.allclose(moved["k_per_day"], last["k_per_day"])
    # the reported per-token lists simulate unchanged, with or without force_scalar
    sim = simulate(PANEL, _spec(force=False), shared.params)
    np.testing.assert_allclose(sim.values, simulate(PANEL, _spec(), shared.params).values)


def test_unequal_per_token_starting_values_are_refused_equal_ones_accepted():
    with pytest.raises(RunSpecError, match=r"parameters.k_per_day: optimisation_settings.force_scalar .* differ"):
        _spec(parameters={"k_per_day": [10, 20, 30]})
    with pytest.raises(RunSpecError, match="for each ensemble member"):
        _spec("ensemble__momentum", parameters={"memory_days": [[5, 5, 5], [6, 7, 6]]})
    layout = parameter_layout(_spec(parameters={"k_per_day": [25, 25, 25]}))
    np.testing.assert_allclose(layout.to_user(layout.to_unconstrained(layout.initial))["k_per_day"], [25.0] * 3)
    _spec("ensemble__momentum", parameters={"memory_days": [[5, 5, 5], [6, 6, 6]]})
    # a parameter nothing reads is not checked (memory_days_2 without use_alt_lamb); warm-start overrides are
    _spec(parameters={"memory_days_2": [5, 6, 7]})
    with pytest.raises(ValueError, match="parameters.memory_days: "):
        parameter_layout(_spec(), overrides={"memory_days": [5, 6, 7]})


@pytest.mark.parametrize("rule", ["difference_momentum", "min_variance", "index_market_cap", "balancer",
                                  "gyroscope"])
def test_a_rule_whose_reference_ignores_it_is_refused_by_name(rule):
    tokens = ["AAA", "BBB"] if rule == "gyroscope" else TOKENS
    with pytest.raises(RunSpecError, match=rf"force_scalar: true is not honoured by rule '{rule}'"):
        load_run_spec({"rule": rule, "tokens": tokens, "optimisation_settings": {"force_scalar": True}})
    load_run_spec({"rule": rule, "tokens": tokens})


@pytest.mark.parametrize("points", ["optuna", "grid", "random"])
def test_searches_get_one_axis_per_rule_parameter(points):
    ranges = {"k_per_day": {"low": 5, "high": 50, "scalar": False}}
    opt = {"method": "grid" if points != "optuna" else "optuna", "search_settings": {"parameter_space": ranges},
           "optuna_settings": {"parameter_config": ranges}}
    for force, want in ((True, [None]), (False, [0, 1, 2])):
        spec = _spec(force=force, opt=opt)
        tunable = tunable_for(spec)
        axes = search_axes(tunable.params(), spec, points, tunable.initial(), 3)
        assert [a.token for a in axes if a.name == "k_per_day"] == want
        assert [a.token for a in axes if a.name == "memory_days"] == ([None] if force or points != "optuna"
                                                                     else [0, 1, 2])
