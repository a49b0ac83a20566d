"""Return metrics: hand-computed cases (plain Python/NumPy from the written formulas), registry, jit/vmap/grad."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quant_core  # noqa: F401  (enables float64)
from quant_core import metrics
from quant_core.metrics import Benchmarks

# 12 daily values (steps_per_day = 1): gains, a drawdown, a recovery and a new dip.
V = [100.0, 102.0, 101.0, 105.0, 103.0, 99.0, 100.0, 104.0, 106.0, 104.0, 107.0, 108.0]
H = [100.0, 101.0, 103.0, 102.0, 104.0, 101.0, 100.0, 102.0, 105.0, 106.0, 104.0, 106.0]
U = [100.0, 100.5, 101.0, 100.0, 101.5, 100.5, 99.5, 101.0, 102.0, 103.0, 102.5, 103.5]
BENCH = Benchmarks(hodl=jnp.asarray(H), uniform_hodl=jnp.asarray(U))
NEEDS_BENCH = set(metrics.BENCHMARK_NEEDS)


# ------------------------------------------------------------------------- independent reference formulas


def arith(v):
    return [v[i + 1] / v[i] - 1.0 for i in range(len(v) - 1)]


def logs(v):
    return [math.log(v[i + 1] + 1e-12) - math.log(v[i] + 1e-12) for i in range(len(v) - 1)]


def pstd(x):
    m = sum(x) / len(x)
    return math.sqrt(sum((a - m) ** 2 for a in x) / len(x))


def mean(x):
    return sum(x) / len(x)


def drawdowns(v):
    out, peak = [], -math.inf
    for x in v:
        peak = max(peak, x)
        out.append(1.0 - x / peak)
    return out


def years(n_values, spd=1):
    return (n_values - 1) / (365.0 * spd)


def ann(growth, n_values, spd=1):
    return growth ** (1.0 / years(n_values, spd)) - 1.0


def pct5(x):
    """5th percentile, linear interpolation between order statistics (numpy's default)."""
    s = sorted(x)
    pos = 0.05 * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def ref_sharpe_like(r):
    return math.sqrt(365.0) * mean(r) / (pstd(r) + 1e-8)


r_v, r_h = arith(V), arith(H)
ANN_V = ann(V[-1] / V[0], len(V))

EXPECTED = {
    "sharpe": ref_sharpe_like(r_v),  # spd = 1: per-step == daily
    "daily_sharpe": ref_sharpe_like(r_v),
    "daily_log_sharpe": ref_sharpe_like(logs(V)),
    "sortino": math.sqrt(365.0) * mean(r_v) / (math.sqrt(mean([min(x, 0.0) ** 2 for x in r_v])) + 1e-8),
    "information_ratio": ref_sharpe_like([a - b for a, b in zip(logs(V), logs(H), strict=True)]),
    "returns": 108.0 / 100.0 - 1.0,
    "annualised_returns": ANN_V,
    "returns_over_hodl": (108.0 / 100.0) / (106.0 / 100.0) - 1.0,
    "annualised_returns_over_hodl": ann(108.0 / 106.0, len(V)),
    "returns_over_uniform_hodl": (108.0 / 100.0) / (103.5 / 100.0) - 1.0,
    "annualised_returns_over_uniform_hodl": ann(108.0 / 103.5, len(V)),
    "greatest_draw_down": -(1.0 - 99.0 / 105.0),
    # one full week V[0:8] (max dd 1 - 99/105); the trailing 4 values are a partial week and dropped
    "weekly_max_drawdown": -(1.0 - 99.0 / 105.0),
    "annualised_volatility": -math.sqrt(365.0) * pstd(r_v),
    # peak 105 on day 3; days 4, 5, 6, 7 (103, 99, 100, 104) are below it; day 8 (106) is a new peak;
    # day 9 (104) below 106 is one day; then 107 > 106
    "max_drawdown_duration": -4.0,
    "ulcer": -math.sqrt(mean([(100.0 * d) ** 2 for d in drawdowns(V)])),
    "calmar": ANN_V / ((1.0 - 99.0 / 105.0) + 1e-8),
    "sterling": ANN_V / (mean(drawdowns(V)) + 0.10),
    "daily_var_95%": pct5(r_v),
    "daily_raroc": ANN_V / (abs(pct5(r_v)) * math.sqrt(365.0) + 1e-8),
    "daily_rovar": mean(r_v) / (abs(pct5(r_v)) + 1e-8),
    "omega": sum(x for x in r_v if x > 0) / (sum(-x for x in r_v if x < 0) + 1e-8),
    "upside_capture": sum(a for a, b in zip(r_v, r_h, strict=True) if b > 0)
    / (sum(b for b in r_h if b > 0) + 1e-8),
    "downside_capture": -sum(a for a, b in zip(r_v, r_h, strict=True) if b < 0)
    / (sum(b for b in r_h if b < 0) - 1e-8),
}


def test_every_registered_metric_has_a_hand_computed_case():
    assert set(EXPECTED) == set(metrics.METRICS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed(name):
    got = float(metrics.get_metric(name)(jnp.asarray(V), 1, BENCH))
    assert got == pytest.approx(EXPECTED[name], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------- steps_per_day > 1


def test_intraday_sampling_and_per_step_sharpe():
    spd = 3
    # 5 full days + 2 steps of a partial day; daily samples are V[::3]
    path = [100.0, 100.5, 101.0, 102.0, 101.0, 100.0, 99.0, 99.5, 100.5, 101.0, 103.0, 102.0, 104.0, 104.5, 103.0,
            105.0, 105.5]
    x = jnp.asarray(path)
    daily = path[::spd]
    assert daily == [100.0, 102.0, 99.0, 101.0, 104.0, 105.0]
    assert float(metrics.daily_sharpe(x, spd)) == pytest.approx(ref_sharpe_like(arith(daily)), rel=1e-12)
    assert float(metrics.daily_log_sharpe(x, spd)) == pytest.approx(ref_sharpe_like(logs(daily)), rel=1e-12)
    per_step = arith(path)
    expect = math.sqrt(365.0 * spd) * mean(per_step) / (pstd(per_step) + 1e-8)
    assert float(metrics.sharpe(x, spd)) == pytest.approx(expect, rel=1e-12)
    assert float(metrics.annualised_returns(x, spd)) == pytest.approx(
        (105.5 / 100.0) ** (1.0 / years(len(path), spd)) - 1.0, rel=1e-12)
    # max drawdown duration counts days (daily samples): 99 and 101 are below the peak 102 -> 2 days
    assert float(metrics.max_drawdown_duration(x, spd)) == -2.0
    # greatest_draw_down uses the full path: peak 102 then trough 99
    assert float(metrics.greatest_draw_down(x, spd)) == pytest.approx(-(1 - 99.0 / 102.0), rel=1e-12)


def test_weekly_max_drawdown_mean_over_weeks():
    # 15 daily values = 2 full weeks sharing day 7: week 0 = v[0:8], week 1 = v[7:15]
    v = [100.0, 98.0, 101.0, 97.0, 99.0, 103.0, 102.0, 104.0, 100.0, 106.0, 105.0, 101.0, 107.0, 108.0, 109.0]
    week0 = max(drawdowns(v[0:8]))  # peak 101 -> 97
    week1 = max(drawdowns(v[7:15]))  # peak 106 -> 101
    assert week0 == pytest.approx(1 - 97 / 101) and week1 == pytest.approx(1 - 101 / 106)
    got = float(metrics.weekly_max_drawdown(jnp.asarray(v), 1))
    assert got == pytest.approx(-(week0 + week1) / 2, rel=1e-12)
    # shorter than a week: one block over the whole path
    assert float(metrics.weekly_max_drawdown(jnp.asarray(v[:5]), 1)) == pytest.approx(-(1 - 97 / 101), rel=1e-12)


def test_zero_drawdown_edge_cases():
    up = jnp.asarray([100.0, 101.0, 102.0, 104.0, 105.0, 107.0, 108.0, 110.0, 111.0])
    assert float(metrics.greatest_draw_down(up, 1)) == 0.0
    assert float(metrics.ulcer(up, 1)) == 0.0
    assert float(metrics.max_drawdown_duration(up, 1)) == 0.0
    assert np.isfinite(float(metrics.sortino(up, 1)))
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(lambda v: metrics.ulcer(v, 1)))(up))))
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(lambda v: metrics.sortino(v, 1)))(up))))


# ------------------------------------------------------------------------- registry


def test_unknown_metric_lists_valid_names():
    with pytest.raises(KeyError) as e:
        metrics.get_metric("no_such_metric_at_all")
    msg = str(e.value)
    for name in metrics.METRICS:
        assert repr(name) in msg


def test_did_you_mean():
    with pytest.raises(KeyError, match="did you mean 'sortino'"):
        metrics.get_metric("sortno")
    with pytest.raises(KeyError, match="did you mean 'daily_log_sharpe'"):
        metrics.get_metric("daily_log_sharp")


def test_old_two_argument_call_still_works():
    for name, fn in metrics.METRICS.items():
        if name not in NEEDS_BENCH:
            assert np.isfinite(float(fn(jnp.asarray(V), 1)))


@pytest.mark.parametrize("name", sorted(NEEDS_BENCH))
def test_benchmark_metrics_raise_without_benchmarks(name):
    fn = metrics.get_metric(name)
    field = metrics.BENCHMARK_NEEDS[name]
    with pytest.raises(ValueError, match=f"{name}.*benchmarks=Benchmarks\\({field}="):
        fn(jnp.asarray(V), 1)
    with pytest.raises(ValueError, match=field):
        fn(jnp.asarray(V), 1, Benchmarks())
    with pytest.raises(ValueError, match="shape"):
        fn(jnp.asarray(V), 1, Benchmarks(hodl=jnp.asarray(H[:-1]), uniform_hodl=jnp.asarray(U[:-1])))


# ------------------------------------------------------------------------- jit / vmap / grad


def _batch(rng, n=4, t=22):
    steps = rng.normal(0.001, 0.01, size=(n, t - 1))
    return jnp.asarray(100.0 * np.exp(np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)))


def _all_metrics(v, b, spd=2):
    return {n: fn(v, spd, b) for n, fn in metrics.METRICS.items()}


def test_vmap_equals_loop_and_jit():
    """Every metric: jit(vmap) over a batch of paths equals a loop of jitted single-path calls."""
    rng = np.random.default_rng(0)
    vals, hodl, uni = _batch(rng), _batch(rng), _batch(rng)
    batched = jax.jit(jax.vmap(_all_metrics))(vals, Benchmarks(hodl=hodl, uniform_hodl=uni))
    single = jax.jit(_all_metrics)
    loop = [single(vals[i], Benchmarks(hodl=hodl[i], uniform_hodl=uni[i])) for i in range(vals.shape[0])]
    assert set(batched) == set(metrics.METRICS)
    for name in metrics.METRICS:
        expect = [float(row[name]) for row in loop]
        assert np.all(np.isfinite(expect)), name
        np.testing.assert_allclose(np.asarray(batched[name]), expect, rtol=1e-10, atol=1e-12, err_msg=name)
    eager = metrics.summary(vals[0], 2, Benchmarks(hodl=hodl[0], uniform_hodl=uni[0]))
    for name, value in eager.items():  # summary reports natural signs (risk measures positive)
        assert value == pytest.approx(metrics.natural_value(name, float(loop[0][name])), rel=1e-10, abs=1e-12), name


def test_objective_style_vmap_without_benchmarks():
    """objective.py calls metric_fn(v, steps_per_day) inside jit(vmap(...)), without benchmarks."""
    vals = _batch(np.random.default_rng(1))
    names = [n for n in metrics.METRICS if n not in NEEDS_BENCH]
    out = jax.jit(jax.vmap(lambda v: {n: metrics.METRICS[n](v, 1) for n in names}))(vals)
    assert all(out[n].shape == (vals.shape[0],) for n in names)


SMOOTH = ["sharpe", "daily_sharpe", "daily_log_sharpe", "returns", "annualised_returns", "sortino", "ulcer",
          "information_ratio", "returns_over_hodl", "calmar", "sterling"]


def test_grad_finite():
    """One compiled function holding the gradients of all the smooth metrics."""
    grads = jax.jit(lambda v: {n: jax.grad(lambda x, n=n: metrics.METRICS[n](x, 1, BENCH))(v) for n in SMOOTH})(
        jnp.asarray(V))
    assert set(grads) == set(SMOOTH)
    for name, g in grads.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.any(g != 0.0), name


def test_grad_matches_finite_difference_for_sharpe():
    x = jnp.asarray(V)
    f = jax.jit(lambda v: metrics.daily_sharpe(v, 1))
    g = np.asarray(jax.jit(jax.grad(f))(x))
    eps = 1e-6
    for i in (0, 5, 11):
        d = np.zeros(len(V))
        d[i] = eps
        fd = (float(f(x + d)) - float(f(x - d))) / (2 * eps)
        assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-8)


# ------------------------------------------------------------------------- summary


def test_summary_without_benchmarks_skips_benchmark_metrics():
    s = metrics.summary(V, 1)
    assert set(s) == set(metrics.METRICS) - NEEDS_BENCH
    assert all(isinstance(x, float) for x in s.values())
    assert s["daily_log_sharpe"] == pytest.approx(EXPECTED["daily_log_sharpe"], rel=1e-9)


def test_summary_with_partial_and_full_benchmarks():
    only_hodl = metrics.summary(V, 1, Benchmarks(hodl=np.asarray(H)))
    assert "returns_over_hodl" in only_hodl and "upside_capture" in only_hodl
    assert "returns_over_uniform_hodl" not in only_hodl
    full = metrics.summary(np.asarray(V), 1, BENCH)
    assert set(full) == set(metrics.METRICS)
    for name, value in full.items():  # natural signs: the risk measures EXPECTED as training sees them, flipped
        assert value == pytest.approx(metrics.natural_value(name, EXPECTED[name]), rel=1e-9, abs=1e-12)


def test_objective_scores_benchmark_relative_metrics_and_sim_summary_includes_them():
    """return_val may be a HODL-relative metric: the objective builds the benchmarks from the window's
    prices, and equals the metric of the simulated path; SimResult.summary() reports them too."""
    import numpy as np
    from helpers import random_walk_panel

    from quant_core.runspec import load_run_spec
    from quant_core.sim.resolve import resolve_params
    from quant_core.sim.simulate import simulate
    from quant_core.train.objective import PoolObjective

    panel = random_walk_panel(60, seed=4)
    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-21",
                          "endDateString": "2024-02-25", "max_memory_days": 20, "return_val": "returns_over_hodl"})
    params = resolve_params(spec)
    score = PoolObjective(panel, spec)({k: v[None] for k, v in params.items()})[0]
    res = simulate(panel, spec, params)
    hodl = simulate(panel, spec.model_copy(update={"rule": "hodl", "parameters": None}))
    assert score == pytest.approx(res.values[-1] / hodl.values[-1] - 1.0, rel=1e-9)
    summary = res.summary()
    assert summary["returns_over_hodl"] == pytest.approx(score, rel=1e-12)
    assert {"returns_over_uniform_hodl", "information_ratio", "upside_capture"} <= set(summary)
    assert all(np.isfinite(v) for v in summary.values())


def test_daily_sampled_metrics_read_only_the_day_boundaries():
    """The promise training's closed-form daily path relies on: fn(V, spd) == fn(V[::spd], 1)."""
    from quant_core.metrics import DAILY_SAMPLED, METRICS

    rng = np.random.default_rng(4)
    spd = 24
    values = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 24 * 40 + 7)))
    for name in DAILY_SAMPLED:
        full = float(METRICS[name](jnp.asarray(values), spd))
        assert float(METRICS[name](jnp.asarray(values[::spd]), 1)) == pytest.approx(full, rel=1e-12, abs=1e-15), name
