"""The reference's starting-set designs (parameter_init_method), learning-rate schedules and stratified window
sampling: each does what the module docstrings of quant_core.train.params / gradient / split say."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from test_gradient import PANEL, _spec  # the gradient tests' panel and momentum spec

from quant_core.runspec import load_run_spec
from quant_core.train.gradient import learning_rate, train_gradient
from quant_core.train.params import ensemble_offsets, initial_sets, parameter_layout
from quant_core.train.split import stratified_offsets


def _unit_points(method: str, n_sets: int, noise_scale: float = 0.3) -> np.ndarray:
    """Sets 1.. of the starting sets as points of [0, 1]^d: Phi(offset / noise_scale)."""
    spec = _spec({"parameter_init_method": method, "n_parameter_sets": n_sets, "noise_scale": noise_scale})
    layout = parameter_layout(spec)
    sets = initial_sets(layout, spec)
    u0 = layout.to_unconstrained(layout.initial)
    off = np.concatenate([(sets[p.name] - u0[p.name]).reshape(n_sets, -1) for p in layout.trainable], axis=1)
    assert np.all(off[0] == 0.0), "set 0 is the spec's own starting point"
    return norm.cdf(off[1:] / noise_scale)


def test_gaussian_sets_are_unchanged_by_the_designs():
    """`gaussian` (the default) draws one N(0, 1) per value and parameter, in layout order, as before the designs
    existed: stored configurations trained with it stay reproducible."""
    spec = _spec({"n_parameter_sets": 5, "noise_scale": 0.2, "initial_random_key": 7})
    layout = parameter_layout(spec)
    sets = initial_sets(layout, spec)
    rng = np.random.default_rng(7)
    u0 = layout.to_unconstrained(layout.initial)
    for p in layout.trainable:
        noise = rng.standard_normal((5, *u0[p.name].shape)) * 0.2
        noise[0] = 0.0
        np.testing.assert_array_equal(sets[p.name], u0[p.name] + noise)


@pytest.mark.parametrize("n_sets", [2, 5, 9])
def test_latin_hypercube_sets_fill_one_cell_per_coordinate(n_sets):
    """lhs: along every coordinate, the n-1 sets fall one in each of n-1 equal cells; centered_lhs: at the centres."""
    for method in ("lhs", "centered_lhs"):
        u = _unit_points(method, n_sets)
        m = n_sets - 1
        for col in u.T:
            assert sorted(np.floor(col * m).astype(int)) == list(range(m))
        if method == "centered_lhs":
            np.testing.assert_allclose(np.sort(u, axis=0), np.repeat(((np.arange(m) + 0.5) / m)[:, None],
                                                                     u.shape[1], axis=1), atol=1e-12)


def test_sobol_sets_are_the_scrambled_sequence_and_seeded():
    u = _unit_points("sobol", 9)
    assert u.shape[0] == 8 and np.all((u > 0) & (u < 1))
    # the first 2^k points of a Sobol sequence put one point in each of 2^k cells of every coordinate
    for col in u.T:
        assert sorted(np.floor(col * 8).astype(int)) == list(range(8))
    np.testing.assert_array_equal(u, _unit_points("sobol", 9))
    spec = _spec({"parameter_init_method": "sobol", "n_parameter_sets": 9, "initial_random_key": 1})
    layout = parameter_layout(spec)
    other = initial_sets(layout, spec)
    first = initial_sets(parameter_layout(_spec({"parameter_init_method": "sobol", "n_parameter_sets": 9})),
                         _spec({"parameter_init_method": "sobol", "n_parameter_sets": 9}))
    assert any(not np.array_equal(other[k], first[k]) for k in other)


def test_centered_lhs_ensemble_members_sit_at_cell_centres():
    z = ensemble_offsets("centered_lhs", 4, 3, seed=42)
    np.testing.assert_allclose(np.sort((z + 1) / 2, axis=0), np.repeat([[0.125], [0.375], [0.625], [0.875]], 3,
                                                                        axis=1), atol=1e-12)
    spec = load_run_spec({
        "rule": "ensemble__momentum", "tokens": ["AAA", "BBB"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-30", "max_memory_days": 20, "bout_offset": 14 * 1440,
        "optimisation_settings": {"n_ensemble_members": 4, "ensemble_init_method": "centered_lhs"}})
    assert spec.optimisation_settings.ensemble_init_method == "centered_lhs"


def test_cosine_and_exponential_schedules_run_base_lr_to_min_lr():
    spec = _spec({"lr_schedule_type": "cosine", "base_lr": 0.1, "lr_decay_ratio": 100, "n_iterations": 50})
    opt = spec.optimisation_settings
    assert learning_rate(opt, 0) == pytest.approx(0.1)
    assert learning_rate(opt, 25) == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))
    assert learning_rate(opt, 50) == pytest.approx(0.001) == learning_rate(opt, 80)
    spec = _spec({"lr_schedule_type": "exponential", "base_lr": 0.1, "lr_decay_ratio": 100, "n_iterations": 50})
    opt = spec.optimisation_settings
    lrs = np.array([learning_rate(opt, i) for i in range(51)])
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.001)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], 0.01 ** (1 / 50), rtol=1e-6)
    # the run's history records the schedule's rate at each iteration
    r = train_gradient(PANEL, _spec({"lr_schedule_type": "cosine", "n_iterations": 4, "early_stopping": False}))
    rates = [h["lr"][0] for h in r.history[1:]]
    assert rates[0] > rates[-1]


def test_a_decaying_schedule_that_would_not_decay_is_refused():
    for kind in ("cosine", "exponential", "warmup_cosine"):
        with pytest.raises(ValueError, match=f"lr_schedule_type '{kind}' decays from base_lr"):
            _spec({"lr_schedule_type": kind, "base_lr": 1e-3, "lr_decay_ratio": None, "min_lr": 1e-2})
    _spec({"lr_schedule_type": "constant", "base_lr": 1e-3, "lr_decay_ratio": None, "min_lr": 1e-2})


@settings(max_examples=60, deadline=None)
@given(r=st.integers(1, 5000), batch=st.integers(1, 64), seed=st.integers(0, 2**31 - 1))
def test_stratified_offsets_take_one_start_per_segment(r, batch, seed):
    offsets = np.asarray(stratified_offsets(jax.random.PRNGKey(seed), r, batch))
    edges = np.linspace(0, r, batch + 1).astype(np.int64)
    assert offsets.shape == (batch,) and np.all((offsets >= 0) & (offsets < r))
    assert np.all(offsets >= edges[:-1]) and np.all(offsets < np.maximum(edges[1:], edges[:-1] + 1))


def test_stratified_sampling_trains():
    r = train_gradient(PANEL, _spec({"sample_method": "stratified", "n_iterations": 3, "early_stopping": False}))
    assert r.n_iterations == 3 and np.isfinite(r.monitored)
