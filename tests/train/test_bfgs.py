"""Method bfgs: converges on analytic objectives, improves a tiny pool's objective through the trainer, and its
settings are checked (defaults are the reference's; bad values name the key and the fix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel
from pydantic import ValidationError

from quant_core.runspec import load_run_spec
from quant_core.train.bfgs import minimise_bfgs
from quant_core.train.fixed_windows import evaluation_offsets
from quant_core.train.method_settings import BfgsSettings, check_method_settings
from quant_core.train.objective import PoolEvaluator
from quant_core.train.split import plan_split
from quant_core.train.trainer import train

PANEL = random_walk_panel(150, seed=3)


def batched(f):
    """[P, d] -> ([P], [P, d]) in one compiled call, as the trainer builds it."""
    vg = jax.jit(jax.vmap(jax.value_and_grad(f)))
    return lambda x: tuple(np.asarray(v) for v in vg(jnp.asarray(x)))


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
C = np.array([1.0, -2.0, 0.5])


def quadratic(x):
    d = x - C
    return 0.5 * d @ A @ d + 3.0


def with_method(spec, method: str, **updates):
    """The spec with `method` (and settings) set, without re-validating the method name."""
    opt = spec.optimisation_settings
    return spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"method": method, **updates})})


def pool_spec(**opt):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-20", "max_memory_days": 20, "bout_offset": 7 * 1440,
        "optimisation_settings": {"n_parameter_sets": 2, "val_fraction": 0.25, **opt}})


def test_bfgs_converges_on_rosenbrock_and_a_quadratic():
    run = minimise_bfgs(batched(rosenbrock), np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]]), maxiter=200, tol=1e-8)
    assert run.status.tolist() == [0, 0, 0]
    np.testing.assert_allclose(run.x, 1.0, atol=1e-6)
    values = np.array([h["value"] for h in run.history])
    assert np.all(np.diff(values, axis=0) <= 1e-12)  # every accepted step decreases f (Armijo)

    run = minimise_bfgs(batched(quadratic), np.zeros((2, 3)) + [[0.0], [5.0]], maxiter=100, tol=1e-10)
    np.testing.assert_allclose(run.x, np.broadcast_to(C, (2, 3)), atol=1e-9)
    np.testing.assert_allclose(run.f, 3.0, atol=1e-12)
    assert (run.iterations <= 15).all()  # quasi-Newton: a few steps on a quadratic, not hundreds

    capped = minimise_bfgs(batched(rosenbrock), np.array([[-1.2, 1.0]]), maxiter=3, tol=1e-12)
    assert capped.status.tolist() == [1] and capped.iterations.tolist() == [3]


def test_evaluation_windows_follow_the_reference():
    offsets = evaluation_offsets(14, 5, seed=0)
    assert offsets[0] == 0 and offsets[-1] == 14 and np.all(np.diff(offsets) > 0)  # evenly spaced ends included
    assert set(np.linspace(0, 14, 5).astype(int)) <= set(offsets.tolist()) and len(offsets) <= 10
    assert evaluation_offsets(14, 5, seed=0).tolist() == offsets.tolist()  # seeded
    assert evaluation_offsets(0, 5, seed=0).tolist() == [0]  # no bout_offset: the one window


def test_bfgs_improves_a_tiny_pool_through_the_trainer():
    spec = with_method(pool_spec(), "bfgs", bfgs_settings=BfgsSettings(maxiter=6, n_evaluation_points=2))
    r = train(PANEL, spec)
    assert r.method == "bfgs" and r.n_configurations == 2 and 1 <= r.n_evaluations <= 6
    start, end = np.array(r.details["initial_objective_per_set"]), np.array(r.details["objective_per_set"])
    assert np.all(end > start + 0.05), (start, end)  # every set's fixed-window objective improved
    objective = np.array([h["objective"] for h in r.history])  # per iteration, per set
    assert objective[0].tolist() == start.tolist() and objective[-1].tolist() == end.tolist()
    assert np.all(np.diff(objective, axis=0) >= -1e-12)
    assert set(r.params) == {"memory_days", "k_per_day"} and all(v > 0 for vs in r.params.values() for v in vs)
    # the selected set is the one with the best validation metric, and the evaluator agrees with the report
    monitored = r.details["monitored_per_set"]
    assert r.details["selected_on"] == "validation" and r.objective == max(monitored)
    assert r.candidates[0] == r.params and len(r.candidates) == 2
    split = plan_split(PANEL, spec)
    ev = PoolEvaluator(PANEL, spec, split.start, split.end, segments=split.segments)
    batch = {k: np.array([v, v]) for k, v in {**r.params, "memory_days_2": [10.0] * 3}.items()}
    assert ev.scores(batch)[0, 0, 1] == pytest.approx(r.objective, rel=1e-9)
    assert r.history[-1]["validation_daily_log_sharpe"][r.details["best_set"]] == pytest.approx(r.objective)


def test_bfgs_settings_defaults_and_errors():
    s = BfgsSettings()
    assert (s.maxiter, s.tol, s.n_evaluation_points, s.compute_dtype, s.memory_budget) == (100, 1e-6, 20, "float32",
                                                                                          None)
    for bad, field in [({"tol": float("nan")}, "tol"), ({"tol": 0}, "tol"), ({"maxiter": 0}, "maxiter"),
                       ({"n_evaluation_points": 0}, "n_evaluation_points"), ({"memory_budget": 0}, "memory_budget")]:
        with pytest.raises(ValidationError, match=rf"bfgs_settings\.{field} must be .*set it to e\.g\."):
            BfgsSettings(**bad)
    with pytest.raises(ValidationError, match="extra"):
        BfgsSettings(max_iter=5)


def test_bfgs_refuses_what_it_cannot_train():
    strategy = load_run_spec({"strategy": "liquidity_sweep", "startDateString": "2024-01-21",
                              "endDateString": "2024-03-21"})
    with pytest.raises(ValueError, match="'bfgs' follows the objective's gradient.*use cma_es"):
        check_method_settings(with_method(strategy, "bfgs"))
    noisy = with_method(pool_spec(), "bfgs").model_copy(update={"price_noise_sigma": 0.01})
    with pytest.raises(ValueError, match="price_noise_sigma.*set price_noise_sigma: 0"):
        check_method_settings(noisy)
    with pytest.raises(ValueError, match="price_noise_sigma"):
        train(PANEL, noisy)  # before any work
