"""Method cma_es: the tutorial's constants, convergence on analytic objectives, seeded reproducibility, one
batched evaluation per generation, and training a tiny pool and a CEX strategy through the trainer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel
from pydantic import ValidationError

import quant_core.train.cma_search as cma_search
from quant_core.data.market_candles import MarketCandles
from quant_core.data.synthetic import synthetic_candles
from quant_core.runspec import load_run_spec
from quant_core.strategies.liquidity_sweep import LIQUIDITY_SWEEP
from quant_core.train.cma_es import constants, minimise_cma_es
from quant_core.train.cma_search import Box
from quant_core.train.method_settings import CmaEsSettings
from quant_core.train.problem import SearchAxis
from quant_core.train.trainer import train

PANEL = random_walk_panel(150, seed=3)


def batched(f):
    ev = jax.jit(jax.vmap(f))
    return lambda x: np.asarray(ev(jnp.asarray(x)))


def sphere(x):
    return jnp.sum((x - 0.5) ** 2)


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def with_method(spec, method: str, **updates):
    opt = spec.optimisation_settings
    return spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"method": method, **updates})})


class Counting:
    """An evaluator that records the batch of every call."""

    def __init__(self, f):
        self.f, self.shapes = f, []

    def __call__(self, x):
        self.shapes.append(np.shape(x))
        return self.f(x)


def test_constants_follow_the_tutorial():
    k = constants(6)
    assert k.lam == 4 + math.floor(3 * math.log(6)) == 9 and k.mu == 4
    w = np.array(k.weights)
    assert w.sum() == pytest.approx(1) and np.all(np.diff(w) < 0)
    assert k.mu_eff == pytest.approx(1 / np.sum(w**2))
    assert k.c_1 + k.c_mu <= 1 and 0 < k.c_sigma < 1 and k.d_sigma > 1
    assert k.chi_n == pytest.approx(np.sqrt(6) * (1 - 1 / 24 + 1 / (21 * 36)))
    assert constants(6, 20).lam == 20 and constants(6, 20).mu == 10


def test_cma_es_converges_on_a_sphere_and_rosenbrock():
    run = minimise_cma_es(batched(sphere), np.full((2, 5), 3.0), sigma0=1.0, n_generations=400, tol=1e-10, seed=0)
    assert run.stopped.all() and run.best_f.max() < 1e-16
    np.testing.assert_allclose(run.best_x, 0.5, atol=1e-8)
    run = minimise_cma_es(batched(rosenbrock), np.zeros((2, 4)), sigma0=0.5, n_generations=1500, tol=1e-12, seed=1)
    np.testing.assert_allclose(run.best_x, 1.0, atol=1e-6)
    best = np.array([h["best_so_far"] for h in run.history])
    assert np.all(np.diff(best, axis=0) <= 0)  # the elitist record never gets worse


def test_cma_es_is_seeded_and_scores_each_generation_in_one_call():
    x0 = np.array([[2.0, -1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    a_eval = Counting(batched(sphere))
    a = minimise_cma_es(a_eval, x0, sigma0=0.3, n_generations=12, tol=0.0, seed=7, lam=6)
    b = minimise_cma_es(batched(sphere), x0, sigma0=0.3, n_generations=12, tol=0.0, seed=7, lam=6)
    c = minimise_cma_es(batched(sphere), x0, sigma0=0.3, n_generations=12, tol=0.0, seed=8, lam=6)
    assert a.history == b.history and np.array_equal(a.best_x, b.best_x)
    assert not np.array_equal(a.best_x, c.best_x)
    assert a_eval.shapes == [(3 * 6, 3)] * 12  # every restart's population, one call per generation
    assert a.n_evaluations == 3 * 6 * 12 and a.generations.tolist() == [12, 12, 12]
    # a start with a known value is never beaten by a worse record
    seeded = minimise_cma_es(batched(sphere), np.full((1, 3), 0.5), sigma0=2.0, n_generations=3, tol=0.0, seed=0,
                             f0=np.zeros(1))
    assert seeded.best_f.tolist() == [0.0] and seeded.best_x.tolist() == [[0.5, 0.5, 0.5]]


def test_box_coordinates_map_onto_the_search_axes():
    axes = [SearchAxis("a", None, None, 1.0, 100.0, log_scale=True), SearchAxis("b", None, None, 5, 20, kind="int"),
            SearchAxis("c", None, np.array([0.0, 20.0, 50.0]), kind="choice")]
    box = Box(axes)
    pts = box.decode(np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 0.99], [-0.5, 1.5, 1.5]]))
    np.testing.assert_allclose(pts[:3], [[1.0, 5.0, 0.0], [10.0, 12.0, 20.0], [100.0, 20.0, 50.0]])
    np.testing.assert_allclose(pts[3], [10.0, 12.0, 20.0])  # reflected back into [0, 1]
    x = box.encode({"a": np.array([10.0]), "b": np.array([20.0]), "c": np.array([50.0])})
    np.testing.assert_allclose(box.decode(x[None])[0], [10.0, 20.0, 50.0])


@pytest.fixture
def spy(monkeypatch):
    """Records the batch shape of every population evaluation the trainer makes."""
    shapes: list = []
    original = cma_search.minimise_cma_es

    def wrapped(evaluate, x0, **kw):
        def counted(x):
            shapes.append(np.shape(x))
            return evaluate(x)

        return original(counted, x0, **kw)

    monkeypatch.setattr(cma_search, "minimise_cma_es", wrapped)
    return shapes


def test_cma_es_improves_a_tiny_pool_through_the_trainer(spy):
    spec = load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-20", "max_memory_days": 20, "bout_offset": 7 * 1440,
        "optimisation_settings": {"n_parameter_sets": 2, "val_fraction": 0.0}})
    spec = with_method(spec, "cma_es", cma_es_settings=CmaEsSettings(n_generations=5, n_evaluation_points=2))
    r = train(PANEL, spec)
    lam = r.details["population_size"]
    assert lam == 4 + math.floor(3 * math.log(6))  # 6 unconstrained parameters: 3 memories, 3 k's
    assert spy == [(2 * lam, 6)] * 5  # one call per generation with both restarts' populations
    assert r.n_evaluations == r.n_configurations == 2 * lam * 5
    start, end = np.array(r.details["initial_objective_per_set"]), np.array(r.details["objective_per_set"])
    assert np.all(end >= start) and np.max(end - start) > 0.1, (start, end)
    assert r.history[0]["objective"] == start.tolist() and r.history[-1]["objective"] == end.tolist()
    assert [h["iteration"] for h in r.history] == list(range(6))
    assert r.details["selected_on"] == "train" and r.objective == max(r.details["monitored_per_set"])
    assert set(r.params) == {"memory_days", "k_per_day"} and r.candidates[0] == r.params


def test_cma_es_trains_a_cex_strategy_reproducibly(spy):
    candles = MarketCandles(synthetic_candles(timeframe="1h", start="2024-01-01", end="2024-03-15", seed=1), "1h")
    spec = load_run_spec({
        "strategy": "liquidity_sweep", "startDateString": "2024-01-21", "endDateString": "2024-03-11",
        "max_memory_days": 20, "strategy_settings": {"min_trades": 0},
        "optimisation_settings": {"method": "random", "n_parameter_sets": 2, "val_fraction": 0.2,
                                  "search_settings": {"parameter_space": {"lookback": {"low": 12, "high": 15}}}}})
    spec = with_method(spec, "cma_es", cma_es_settings=CmaEsSettings(n_generations=4, population_size=6))
    a = train(candles, spec, seed=3)
    b = train(candles, spec, seed=3)
    assert a.params == b.params and a.history == b.history and a.objective == b.objective
    assert spy[:4] == [(12, len(LIQUIDITY_SWEEP.params))] * 4  # one batched evaluator call per generation
    assert 12 <= a.params["lookback"] <= 15 and a.params["lookback"] == round(a.params["lookback"])
    for p in LIQUIDITY_SWEEP.params:
        if p.kind == "choice":
            assert a.params[p.name] in p.choices
        if p.kind == "int":
            assert a.params[p.name] == round(a.params[p.name])
    LIQUIDITY_SWEEP.resolve(a.params)  # within the schema
    start, end = np.array(a.details["initial_objective_per_set"]), np.array(a.details["objective_per_set"])
    assert np.all(end >= start)
    assert a.details["selected_on"] == "validation" and a.n_evaluations == 2 * 6 * 4


def test_cma_es_settings_defaults_and_errors():
    s = CmaEsSettings()
    assert (s.population_size, s.memory_budget, s.n_generations, s.sigma0, s.tol, s.n_evaluation_points,
            s.compute_dtype) == (None, None, 300, 0.5, 1e-8, 20, "float32")
    for bad, field in [({"sigma0": 0}, "sigma0"), ({"sigma0": float("inf")}, "sigma0"), ({"tol": -1}, "tol"),
                       ({"population_size": 1}, "population_size"), ({"n_generations": 0}, "n_generations")]:
        with pytest.raises(ValidationError, match=rf"cma_es_settings\.{field} must be .*set it to e\.g\."):
            CmaEsSettings(**bad)
    assert CmaEsSettings(tol=0).tol == 0  # 0: run every generation
