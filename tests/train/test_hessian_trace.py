"""Training on the Hessian trace: the exact trace and Hutchinson's estimate against known traces, the penalised
objective and its gradient, the settings, and (slow: third derivatives through the simulator compile for
minutes) the penalty inside gradient descent and BFGS on a tiny pool."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel
from pydantic import ValidationError

from quant_core.runspec import load_run_spec
from quant_core.train.hessian_trace import hessian_trace, rademacher_probes, trace_penalised
from quant_core.train.method_settings import HessianTraceSettings, check_method_settings, hessian_trace_settings

RNG = np.random.default_rng(0)
M = RNG.normal(size=(5, 5))
A = M @ M.T + np.eye(5)  # symmetric: the Hessian of the quadratic below
B = RNG.normal(size=5)


def quadratic(x):
    return 0.5 * x @ A @ x + B @ x


def test_exact_trace_equals_the_quadratic_trace():
    x = jnp.asarray(RNG.normal(size=5))
    assert float(hessian_trace(quadratic, x)) == pytest.approx(np.trace(A), rel=1e-12)
    # a pytree of parameters (as the trainer's {name: array}): the trace over every entry
    tree = {"a": x[:2], "b": x[2:].reshape(3, 1)}

    def f(p):
        return quadratic(jnp.concatenate([p["a"], p["b"].reshape(-1)]))

    assert float(jax.jit(lambda p: hessian_trace(f, p))(tree)) == pytest.approx(np.trace(A), rel=1e-12)


def test_hutchinson_estimates_the_trace():
    x = jnp.zeros(5)
    diagonal = np.diag(np.arange(1.0, 6.0))
    probes = rademacher_probes(HessianTraceSettings(estimator="hutchinson", n_probes=3), 5, seed=0)
    assert set(np.unique(probes)) == {-1.0, 1.0} and probes.shape == (3, 5)
    # z'Dz = trace D for every +-1 vector z: exact on a diagonal Hessian
    got = hessian_trace(lambda v: 0.5 * v @ diagonal @ v, x, probes)
    assert float(got) == pytest.approx(15.0, rel=1e-12)
    many = rademacher_probes(HessianTraceSettings(estimator="hutchinson", n_probes=20000), 5, seed=1)
    # unbiased: the error shrinks like sqrt(2 sum_{i != j} A_ij^2 / K)
    sd = np.sqrt(2 * (np.sum(A**2) - np.sum(np.diag(A) ** 2)) / len(many))
    assert abs(float(hessian_trace(quadratic, x, many)) - np.trace(A)) < 4 * sd
    assert rademacher_probes(HessianTraceSettings(), 5, seed=0) is None  # exact: no probes


def test_penalised_loss_adds_the_weighted_trace_and_its_gradient():
    """loss(x) = sum x^4: trace H = 12 sum x^2, so the penalised loss's gradient is 4 x^3 + 24 w x."""
    w = 0.01

    def loss(x, scale):
        return scale * jnp.sum(x**4)

    penalised = trace_penalised(loss, lambda x: loss(x, 1.0), HessianTraceSettings(weight=w))
    x = jnp.asarray([0.5, -1.0, 2.0])
    (value, trace), grad = jax.value_and_grad(penalised, has_aux=True)(x, 1.0)
    assert float(value) == pytest.approx(float(jnp.sum(x**4)) + w * 12 * float(jnp.sum(x**2)), rel=1e-12)
    assert float(trace) == pytest.approx(-12 * float(jnp.sum(x**2)))  # the maximised objective's trace
    np.testing.assert_allclose(grad, 4 * x**3 + 24 * w * x, rtol=1e-12)


def test_hessian_settings_and_where_they_apply():
    s = HessianTraceSettings()
    assert (s.weight, s.estimator, s.n_probes) == (1e-4, "exact", 16)
    for bad, field in [({"weight": 0}, "weight"), ({"weight": float("nan")}, "weight"), ({"n_probes": 0}, "n_probes")]:
        with pytest.raises(ValidationError, match=rf"hessian_trace_settings\.{field} must be"):
            HessianTraceSettings(**bad)
    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"]})
    opt = spec.optimisation_settings
    assert hessian_trace_settings(opt) is None  # off unless train_on_hessian_trace
    on = spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"train_on_hessian_trace": True})})
    assert hessian_trace_settings(on.optimisation_settings) == HessianTraceSettings()
    check_method_settings(on)  # gradient descent: fine
    grid = on.model_copy(update={"optimisation_settings": on.optimisation_settings.model_copy(
        update={"method": "grid"})})
    with pytest.raises(ValueError, match="train_on_hessian_trace.*set train_on_hessian_trace: false"):
        check_method_settings(grid)


PANEL = random_walk_panel(150, seed=3)


def _pool(**opt):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-20", "max_memory_days": 20, "bout_offset": 7 * 1440,
        "optimisation_settings": {"n_parameter_sets": 2, "batch_size": 2, "val_fraction": 0.0, **opt}})


@pytest.mark.slow
def test_gradient_descent_on_the_trace_penalised_pool_objective():
    """The trace each step records is the exact trace of the first window's objective Hessian, and the trained
    parameters differ from those trained without the penalty."""
    from jax.flatten_util import ravel_pytree

    from quant_core.train.gradient import WindowLoss, train_gradient
    from quant_core.train.params import parameter_layout
    from quant_core.train.split import plan_split

    spec = _pool(n_iterations=2, early_stopping=False)
    settings = HessianTraceSettings(weight=1e-2)
    g = train_gradient(PANEL, spec, hessian=settings)
    assert all(len(h["hessian_trace"]) == 2 for h in g.history[1:])
    # the first step's trace is taken at the starting point of each set: recompute set 0's exactly
    layout = parameter_layout(spec)
    loss = WindowLoss(PANEL, spec, plan_split(PANEL, spec), layout)
    u0 = {k: jnp.asarray(v) for k, v in layout.to_unconstrained(layout.initial).items()}
    rows = jnp.asarray(loss.sources[0, : loss.rows_per_window])[None]
    flat, unravel = ravel_pytree(u0)
    want = -np.trace(np.asarray(jax.hessian(lambda x: loss(unravel(x), rows, jnp.zeros(1, jnp.int32)))(flat)))
    assert g.history[1]["hessian_trace"][0] == pytest.approx(want, rel=1e-8)
    plain = train_gradient(PANEL, spec, hessian=False)
    assert "hessian_trace" not in plain.history[1] and plain.params != g.params


@pytest.mark.slow
def test_bfgs_and_cma_es_maximise_objective_plus_weighted_trace():
    """With train_on_hessian_trace the value bfgs and cma_es report at the start is the plain fixed-window
    objective plus weight x the objective's trace (bfgs: the trace is recorded too)."""
    from quant_core.train.fixed_windows import FixedWindowObjective
    from quant_core.train.method_settings import BfgsSettings, CmaEsSettings
    from quant_core.train.params import initial_sets, parameter_layout
    from quant_core.train.split import plan_split
    from quant_core.train.trainer import train

    weight = 1e-2
    base = _pool(train_on_hessian_trace=True)
    opt = base.optimisation_settings.model_copy(update={
        "method": "bfgs", "hessian_trace_settings": HessianTraceSettings(weight=weight),
        "bfgs_settings": BfgsSettings(maxiter=1, n_evaluation_points=1),
        "cma_es_settings": CmaEsSettings(n_generations=2, n_evaluation_points=1)})
    spec = base.model_copy(update={"optimisation_settings": opt})
    layout = parameter_layout(spec)
    plain = FixedWindowObjective(PANEL, spec, plan_split(PANEL, spec), layout, 1)
    with plain.device():
        objective = -np.asarray(plain.population(plain.flatten(initial_sets(layout, spec))))
    r = train(PANEL, spec)
    first = r.history[0]
    np.testing.assert_allclose(first["objective"], objective + weight * np.asarray(first["hessian_trace"]),
                               rtol=1e-10)
    assert r.details["hessian_trace"] and np.all(np.asarray(first["hessian_trace"]) != 0)
    cma = train(PANEL, spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"method": "cma_es"})}))
    assert cma.details["hessian_trace"]
    np.testing.assert_allclose(cma.history[0]["objective"], first["objective"], rtol=1e-10)
