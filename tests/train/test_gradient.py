"""Gradient descent: each optimiser setting does what run-spec.md / the module docstring say."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.simulate import simulate
from quant_core.train.gradient import WindowLoss, learning_rate, optimiser, train_gradient
from quant_core.train.params import ensemble_offsets, initial_sets, parameter_layout
from quant_core.train.split import plan_split

PANEL = random_walk_panel(200, seed=3)


def _spec(opt=None, **kw):
    return load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-31",
        "endDateString": "2024-05-30", "max_memory_days": 20, "bout_offset": 14 * 1440,
        "optimisation_settings": {"n_iterations": 6, "n_parameter_sets": 2, "batch_size": 4, **(opt or {})}, **kw})


def test_split_follows_bout_offset_and_val_fraction():
    split = plan_split(PANEL, _spec())
    assert split.n_steps == 120 and split.val_steps == int(120 * 0.2) == 24
    assert split.train_steps == 96 and split.offset_range == 14 and split.window_steps == 96 - 14
    assert split.segments == ((0, 96), (96, 120))
    probs = split.offset_probabilities("exponential")
    assert probs[-1] / probs[0] == pytest.approx(np.exp(5 * 13 / 14)) and probs.sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="lower bout_offset"):
        plan_split(PANEL, _spec(bout_offset=95 * 1440))
    with pytest.raises(ValueError, match="val_fraction"):
        plan_split(PANEL, _spec({"val_fraction": 0.01}))


def test_window_loss_scores_the_pool_the_simulator_runs():
    """A window at offset o runs the pool from the chunk boundary at or before o and scores from o."""
    panel = random_walk_panel(24 * 160, step_minutes=60, seed=0, sigma=0.006)
    spec = _spec({"val_fraction": 0.0}, bout_offset=5 * 1440, parameters={"memory_days": 6, "k_per_day": 30})
    split = plan_split(panel, spec)
    layout = parameter_layout(spec)
    loss = WindowLoss(panel, spec, split, layout)
    u = {k: jnp.asarray(v) for k, v in layout.to_unconstrained(layout.initial).items()}
    offset = 24 * 2 + 7  # two days and seven hours into the training part
    starts = jnp.asarray([offset // 24 * 24])
    rows = loss.windows(jnp.asarray(loss.sources[:1]), starts, None)
    got = -float(loss(u, rows, jnp.asarray([offset % 24])))
    aligned = spec.start + np.timedelta64(offset // 24, "D").item()
    sim = simulate(panel, spec, start=aligned, end=aligned + np.timedelta64((offset % 24) + split.window_steps,
                                                                             "h").item())
    from quant_core.metrics import daily_log_sharpe
    want = float(daily_log_sharpe(sim.values[offset % 24 :], 24))
    assert got == pytest.approx(want, rel=1e-10)


def test_clipping_bounds_the_update_norm():
    lr, clip = 0.05, 1e-3
    clipped = train_gradient(PANEL, _spec({"optimiser": "sgd", "base_lr": lr, "clip_norm": clip, "weight_decay": 0}))
    free = train_gradient(PANEL, _spec({"optimiser": "sgd", "base_lr": lr, "use_gradient_clipping": False,
                                        "weight_decay": 0}))
    steps = [h for h in clipped.history if "update_norm" in h]
    assert all(max(h["grad_norm"]) > clip for h in steps)  # clipping was active
    assert all(u <= lr * clip * (1 + 1e-9) for h in steps for u in h["update_norm"])
    first = [h for h in free.history if "update_norm" in h][0]
    np.testing.assert_allclose(first["update_norm"], np.asarray(first["grad_norm"]) * lr, rtol=1e-9)


def test_optimiser_chain_weight_decay_and_schedule():
    opt = _spec({"optimiser": "sgd", "base_lr": 0.5, "weight_decay": 0.1, "use_gradient_clipping": False})
    tx = optimiser(opt.optimisation_settings)
    params = {"x": jnp.asarray([2.0, -4.0])}
    updates, _ = tx.update({"x": jnp.zeros(2)}, tx.init(params), params)
    np.testing.assert_allclose(updates["x"], -0.5 * 0.1 * np.array([2.0, -4.0]))  # decay pulls towards 0
    cos = _spec({"lr_schedule_type": "warmup_cosine", "warmup_steps": 10, "base_lr": 0.2, "min_lr": 1e-4,
                 "n_iterations": 100}).optimisation_settings
    assert learning_rate(cos, 0) == pytest.approx(1e-4)
    assert learning_rate(cos, 10) == pytest.approx(0.2)
    assert learning_rate(cos, 55) < 0.2 and learning_rate(cos, 100) == pytest.approx(1e-4)


def _frozen(opt):
    """An update too small to change float64 parameters: the monitored metric never improves."""
    return _spec({"optimiser": "sgd", "base_lr": 1e-30, "n_parameter_sets": 1, **opt})


def test_plateau_decay_lowers_the_learning_rate():
    r = train_gradient(PANEL, _frozen({"use_plateau_decay": True, "decay_lr_plateau": 2, "decay_lr_ratio": 0.5,
                                       "early_stopping": False}))
    lrs = [h["lr"][0] / 1e-30 for h in r.history[1:]]
    # the rate each iteration used: halved after every 2 iterations without improvement
    assert lrs == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_early_stopping_stops():
    r = train_gradient(PANEL, _frozen({"early_stopping_patience": 3, "n_iterations": 50}))
    assert r.stopped_early and r.n_iterations == 3 and len(r.history) == 4
    assert r.best_iteration == 0  # nothing beat the starting point


def test_vmapped_parameter_sets_equal_separate_runs():
    spec = _spec({"n_parameter_sets": 3, "noise_scale": 0.3})
    together = train_gradient(PANEL, spec)
    layout = parameter_layout(spec)
    starts = layout.to_user({k: jnp.asarray(v) for k, v in initial_sets(layout, spec).items()})
    for s in range(3):
        alone_spec = _spec({"n_parameter_sets": 1}, parameters={k: np.asarray(v[s]).tolist()
                                                                for k, v in starts.items()})
        alone = train_gradient(PANEL, alone_spec)
        for h_all, h_one in zip(together.history, alone.history, strict=True):
            assert h_one["train_daily_log_sharpe"][0] == pytest.approx(h_all["train_daily_log_sharpe"][s], rel=1e-8)
            assert h_one["validation_daily_log_sharpe"][0] == pytest.approx(
                h_all["validation_daily_log_sharpe"][s], rel=1e-8)


def test_best_set_is_selected_on_validation_and_reported_in_user_units():
    r = train_gradient(PANEL, _spec({"n_parameter_sets": 3, "noise_scale": 0.5, "n_iterations": 8}))
    val = np.array([h["validation_daily_log_sharpe"] for h in r.history])  # [iterations+1, sets]
    assert r.monitored == pytest.approx(val.max())
    it, s = np.unravel_index(np.argmax(val), val.shape)
    assert (r.best_iteration, r.best_set) == (it, s)
    assert set(r.params) >= {"memory_days", "k_per_day"} and all(v > 0 for v in r.params["memory_days"])
    # the reported parameters reproduce the monitored validation score
    spec = _spec()
    split = plan_split(PANEL, spec)
    from quant_core.train.objective import PoolEvaluator
    ev = PoolEvaluator(PANEL, spec, segments=split.segments)
    got = ev.scores({k: np.asarray([v]) for k, v in r.params.items()})[0, 0, 1]
    assert got == pytest.approx(r.monitored, rel=1e-9)


def test_augmentations_change_the_batch_objective_deterministically():
    def first_objective(**kw):
        return train_gradient(PANEL, _spec({"n_iterations": 1}, **kw)).history[1]["objective"]

    plain = first_objective()
    assert first_objective() == plain  # seeded
    assert first_objective(price_noise_sigma=0.01) != pytest.approx(plain)
    assert first_objective(include_flipped_training_data=True) != pytest.approx(plain)
    penalised = first_objective(turnover_penalty=10.0)
    assert all(p < q for p, q in zip(penalised, plain, strict=True))  # turnover is positive


@pytest.mark.parametrize("method", ["optuna", "grid", "random"])
def test_a_turnover_penalty_is_refused_where_the_scores_do_not_take_it(method):
    """turnover_penalty is honoured by gradient_descent, bfgs and cma_es on pools; a search's scores would
    silently ignore it, so the spec is refused naming the key."""
    from quant_core.runspec import load_run_spec
    from quant_core.spec import RunSpecError

    base = {"rule": "momentum", "tokens": ["BTC", "ETH"], "startDateString": "2024-01-01",
            "endDateString": "2024-03-01", "turnover_penalty": 0.1}
    with pytest.raises(RunSpecError, match=f"turnover_penalty .* method '{method}'.* set turnover_penalty: 0"):
        load_run_spec({**base, "optimisation_settings": {"method": method}})
    assert load_run_spec({**base, "optimisation_settings": {"method": "cma_es"}}).turnover_penalty == 0.1


def test_swa_and_checkpoints_are_recorded():
    r = train_gradient(PANEL, _spec({"n_iterations": 8, "use_swa": True, "swa_start_frac": 0.5, "swa_freq": 2,
                                     "track_checkpoints": True, "checkpoint_interval": 4}))
    assert r.history[-1].get("swa") and r.history[-1]["swa_members"] == 3  # iterations 4, 6, 8
    assert [c["iteration"] for c in r.checkpoints] == [4, 8]
    assert len(r.checkpoints[0]["params"]) == 2 and "memory_days" in r.checkpoints[0]["params"][0]


def test_ensemble_initialisation_and_training():
    z = ensemble_offsets("lhs", 8, 3, seed=1)
    assert z.shape == (8, 3) and np.all(np.abs(z) <= 1)
    for d in range(3):  # one point per stratum in every dimension
        assert sorted(np.floor((z[:, d] + 1) / 2 * 8).astype(int)) == list(range(8))
    g = ensemble_offsets("grid", 4, 2, seed=0)
    assert {tuple(r) for r in g} == {(-1, -1), (-1, 1), (1, -1), (1, 1)}
    assert np.all(np.abs(ensemble_offsets("sobol", 8, 2, seed=0)) <= 1)
    spec = _spec({"n_ensemble_members": 3, "ensemble_init_method": "sobol", "n_iterations": 3},
                 rule="ensemble__momentum")
    sets = initial_sets(parameter_layout(spec), spec)
    assert sets["memory_days"].shape == (2, 3, 3) and len({tuple(m) for m in sets["memory_days"][0]}) == 3
    r = train_gradient(PANEL, spec)
    assert np.asarray(r.params["memory_days"]).shape == (3, 3)


def test_refuses_what_it_cannot_train():
    cow = load_run_spec({"rule": "cow", "tokens": ["AAA", "CCC"], "startDateString": "2024-01-31",
                         "endDateString": "2024-05-30"})
    with pytest.raises(ValueError, match="optuna, grid or random"):
        train_gradient(PANEL, cow)
    with pytest.raises(ValueError, match="market_cap"):
        train_gradient(PANEL, _spec(rule="index_market_cap"))
    with pytest.raises(ValueError, match="ensemble__"):
        _spec({"n_ensemble_members": 2})


@pytest.mark.slow
def test_training_on_a_planted_trend_beats_the_start_out_of_sample():
    """AAA trends up, BBB down: a momentum pool that trades harder should beat its timid start on
    data it never saw."""
    rng = np.random.default_rng(7)
    n = 600
    drift = np.array([0.004, -0.004, 0.0])
    logp = np.cumsum(rng.normal(0, 0.02, (n, 3)) + drift, axis=0)
    ts = np.datetime64("2023-01-01", "ms") + np.arange(n) * np.timedelta64(1, "D")
    panel = PricePanel(ts, ("AAA", "BBB", "CCC"), np.exp(logp) * 50, 1440, {})
    spec = load_run_spec({
        "rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2023-03-01",
        "endDateString": "2024-03-01", "endTestDateString": "2024-08-01", "max_memory_days": 30,
        "parameters": {"memory_days": 5, "k_per_day": 0.5},
        "optimisation_settings": {"n_iterations": 60, "base_lr": 0.1, "n_parameter_sets": 2}})
    r = train_gradient(panel, spec)
    before = simulate(panel, spec, start=spec.end, end=spec.end_test).summary()["daily_log_sharpe"]
    after = simulate(panel, spec, r.params, start=spec.end, end=spec.end_test).summary()["daily_log_sharpe"]
    assert after > before + 0.3
    assert r.best_iteration > 0  # selected a trained point, not the start


def test_closed_form_daily_loss_equals_the_minute_path_value_and_gradient():
    import jax

    panel = random_walk_panel(1440 * 40, step_minutes=1, seed=2, sigma=0.0008)
    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-11",
                          "endDateString": "2024-02-09", "max_memory_days": 8, "bout_offset": 3 * 1440,
                          "optimisation_settings": {"batch_size": 3, "val_fraction": 0.0}})
    split = plan_split(panel, spec)
    layout = parameter_layout(spec)
    fast = WindowLoss(panel, spec, split, layout)
    slow = WindowLoss(panel, spec, split, layout, closed_form=False)
    assert fast.closed_form and not slow.closed_form
    u = {k: jnp.asarray(v) for k, v in layout.to_unconstrained(layout.initial).items()}
    starts, phases = fast.sample(jax.random.PRNGKey(3))
    rows = fast.windows(jnp.asarray(fast.sources), starts, None)
    v_fast, g_fast = jax.value_and_grad(fast)(u, rows, phases)
    v_slow, g_slow = jax.value_and_grad(slow)(u, rows, phases)
    assert float(v_fast) == pytest.approx(float(v_slow), rel=1e-10)
    for k in g_fast:
        np.testing.assert_allclose(g_fast[k], g_slow[k], rtol=1e-7, atol=1e-12)
