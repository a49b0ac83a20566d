"""Learnable bounded__ bounds (learnable_bounds_settings.freeze_bounds: false): the feasible parametrisation,
gradients through it, training that moves (or, frozen, keeps) the bounds, and the trained pool simulating."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant_core.runspec import load_run_spec
from quant_core.sim.pool import check_bounds
from quant_core.sim.simulate import simulate
from quant_core.spec import RunSpecError, SpecNotice
from quant_core.train.gradient import WindowLoss, train_gradient
from quant_core.train.learnable_bounds import RAW_KEYS, bounds_from_raw, raw_from_bounds
from quant_core.train.params import initial_sets, parameter_layout
from quant_core.train.split import plan_split

PANEL = random_walk_panel(200, seed=3)
# tight enough that momentum's weights hit them on this path
TIGHT = {"min_weights_per_asset": [0.2512, 0.2793, 0.2037], "max_weights_per_asset": [0.4031, 0.4217, 0.4489]}


def _spec(freeze: bool = False, opt: dict | None = None, **kw):
    return load_run_spec({
        "rule": "bounded__momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-30", "max_memory_days": 20, "bout_offset": 14 * 1440,
        "parameters": {"memory_days": 4, "k_per_day": 200, **TIGHT},
        "learnable_bounds_settings": {"freeze_bounds": freeze},
        "optimisation_settings": {"n_iterations": 5, "n_parameter_sets": 1, "batch_size": 4, "base_lr": 0.3,
                                  **(opt or {})}, **kw})


def _assert_feasible(low: np.ndarray, high: np.ndarray) -> None:
    check_bounds(low, high)  # what resolving (and so simulating) a configuration demands
    assert np.all(low >= 0) and np.all(high <= 1) and np.all(low < high)
    assert low.sum() <= 1 <= high.sum()


_raw = st.floats(-60.0, 60.0, allow_nan=False)


@given(st.integers(2, 6).flatmap(lambda n: st.tuples(
    arrays(np.float64, (1,), elements=_raw), arrays(np.float64, (n,), elements=_raw),
    arrays(np.float64, (n,), elements=_raw))))
@settings(max_examples=300, deadline=None)
def test_every_unconstrained_point_gives_feasible_bounds_that_round_trip(raw):
    u = dict(zip(RAW_KEYS, raw, strict=True))
    low, high = (np.asarray(x) for x in bounds_from_raw(u))
    _assert_feasible(low, high)
    # mapping the bounds back gives the same bounds (the raw values themselves are not unique: softmax)
    again = [np.asarray(x) for x in bounds_from_raw(raw_from_bounds(low, high))]
    np.testing.assert_allclose(again[0], low, atol=1e-6)
    np.testing.assert_allclose(again[1], high, atol=1e-6)
    _assert_feasible(*again)


@given(st.integers(2, 6).flatmap(lambda n: st.tuples(
    arrays(np.float64, (1,), elements=st.floats(-6, 6)), arrays(np.float64, (n,), elements=st.floats(-6, 6)),
    arrays(np.float64, (n,), elements=st.floats(-6, 6)))))
@settings(max_examples=200, deadline=None)
def test_away_from_the_edges_the_round_trip_is_exact(raw):
    low, high = (np.asarray(x) for x in bounds_from_raw(dict(zip(RAW_KEYS, raw, strict=True))))
    again = bounds_from_raw(raw_from_bounds(low, high))
    np.testing.assert_allclose(np.asarray(again[0]), low, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(np.asarray(again[1]), high, rtol=1e-10, atol=1e-15)


def test_user_bounds_start_exactly_where_given():
    layout = parameter_layout(_spec())
    assert layout.bounds and not {"min_weights_per_asset", "max_weights_per_asset"} & set(layout.fixed)
    u = layout.to_unconstrained(layout.initial)
    assert set(RAW_KEYS) <= set(u) and u["raw_min_budget"].shape == (1,)
    user = layout.to_user({k: jnp.asarray(v) for k, v in u.items()})
    for name, want in TIGHT.items():
        np.testing.assert_allclose(np.asarray(user[name]), want, rtol=1e-12)
    # sets 1.. start around set 0 in the unconstrained space and stay feasible
    spec = _spec(opt={"n_parameter_sets": 4, "noise_scale": 1.0})
    sets = initial_sets(parameter_layout(spec), spec)
    user = layout.to_user({k: jnp.asarray(v) for k, v in sets.items()})
    for s in range(4):
        _assert_feasible(np.asarray(user["min_weights_per_asset"][s]), np.asarray(user["max_weights_per_asset"][s]))
    # frozen: the bounds are fixed values of the layout, as before
    frozen = parameter_layout(_spec(freeze=True))
    assert not frozen.bounds and set(TIGHT) <= set(frozen.fixed)
    assert not set(RAW_KEYS) & set(frozen.to_unconstrained(frozen.initial))


def test_the_loss_has_a_gradient_in_the_bounds_when_they_bind():
    spec = _spec(opt={"val_fraction": 0.0})
    layout = parameter_layout(spec)
    loss = WindowLoss(PANEL, spec, plan_split(PANEL, spec), layout)
    u = {k: jnp.asarray(v) for k, v in layout.to_unconstrained(layout.initial).items()}
    rows = loss.windows(jnp.asarray(loss.sources), jnp.asarray([0, 7]), None)
    grads = jax.grad(loss)(u, rows, jnp.asarray([0, 0]))
    for key in RAW_KEYS:
        assert np.all(np.isfinite(np.asarray(grads[key])))
    assert np.abs(np.asarray(grads["raw_gap_logits"])).max() > 1e-8
    assert np.abs(np.asarray(grads["raw_min_logits"])).max() > 1e-8


def test_training_moves_the_bounds_unless_frozen_and_the_result_simulates():
    opt = {"n_iterations": 3, "track_checkpoints": True, "checkpoint_interval": 1, "early_stopping": False}
    learned = train_gradient(PANEL, _spec(opt=opt))
    moved = [np.abs(np.asarray(c["params"][0][name]) - TIGHT[name]).max()
             for c in learned.checkpoints for name in TIGHT]
    assert max(moved) > 1e-3
    for c in learned.checkpoints:
        p = c["params"][0]
        _assert_feasible(np.asarray(p["min_weights_per_asset"]), np.asarray(p["max_weights_per_asset"]))
    frozen = train_gradient(PANEL, _spec(freeze=True, opt=opt))
    for name, want in TIGHT.items():
        assert frozen.params[name] == want
        assert all(name not in c["params"][0] for c in frozen.checkpoints)

    # the trained configuration (bounds included) simulates, and its own bounds are the ones applied
    spec = _spec()
    last = learned.checkpoints[-1]["params"][0]
    trained = simulate(PANEL, spec, last)
    rule_only = {k: v for k, v in last.items() if k not in TIGHT}  # the spec's starting bounds instead
    assert np.abs(simulate(PANEL, spec, rule_only).weights - trained.weights).max() > 1e-6
    simulate(PANEL, spec, learned.params)  # the selected set, as stored


def test_searches_need_the_bounds_listed_or_frozen_and_no_notice_remains():
    base = {"rule": "bounded__momentum", "tokens": ["AAA", "BBB", "CCC"]}
    for method in ("optuna", "grid", "random"):
        with pytest.raises(RunSpecError, match="freeze_bounds is false.*gradient_descent, bfgs or cma_es"):
            load_run_spec({**base, "optimisation_settings": {"method": method}})
        load_run_spec({**base, "learnable_bounds_settings": {"freeze_bounds": True},
                       "optimisation_settings": {"method": method}})
    load_run_spec({**base, "optimisation_settings": {"method": "optuna", "optuna_settings": {"parameter_config": {
        "max_weights_per_asset": {"low": 0.5, "high": 0.9}}}}})
    for method in ("gradient_descent", "bfgs", "cma_es"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_run_spec({**base, "optimisation_settings": {"method": method}})
        assert not [w for w in caught if issubclass(w.category, SpecNotice) and "learnable_bounds" in str(w.message)]
