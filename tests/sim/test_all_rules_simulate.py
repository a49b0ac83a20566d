"""Every registered pool through `simulate`: weights valid, both weight paths equal, vmap equal to
separate runs, no look-ahead, the two-token engines and the fee path wired in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.registry import available_rules, get_rule
from quant_core.sim.resolve import initial_weights, resolve_params
from quant_core.sim.settings import static_settings
from quant_core.sim.simulate import compiled_forward, simulate
from quant_core.sim.window import SimulationInputError, plan_window, sorted_panel_rows

TOKENS = ["AAA", "BBB", "CCC"]
DYNAMIC = [r for r in available_rules() if get_rule(r).kind == "dynamic"]


def _spec(rule, **kw):
    base = {"rule": rule, "tokens": TOKENS, "startDateString": "2024-01-21", "endDateString": "2024-03-01",
            "max_memory_days": 20, "initial_k_per_day": 60, "initial_memory_length": 4,
            "initial_memory_length_delta": 3}
    return load_run_spec({**base, **kw})


@pytest.fixture(scope="module")
def panel():
    return random_walk_panel(70, seed=11)


def _aux(rule, panel):
    """Rule inputs: market caps drift from a fixed supply times price (so they move with prices)."""
    need = get_rule(rule).required_aux
    if not need:
        return None
    supply = np.array([3e6, 1e7, 5e5])
    return {"market_cap": panel.prices * supply}


@pytest.mark.parametrize("rule", DYNAMIC)
def test_weights_valid_and_scan_equals_vectorized(rule, panel):
    spec = _spec(rule, weight_calculation_method="scan")
    res = simulate(panel, spec, aux=_aux(rule, panel))
    min_w = spec.effective_minimum_weight
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    assert res.weights.min() >= min_w - 1e-12 and res.weights.max() <= 1 - 2 * min_w + 1e-12
    assert np.all(np.isfinite(res.values)) and np.all(res.values > 0)
    # (any token: a target rule starts at its guardrailed first target, where one token may stay floored)
    assert np.ptp(res.weights, axis=0).max() > 1e-6, "the rule never moved the weights"
    if get_rule(rule).supports_vectorized:
        vec = simulate(panel, _spec(rule, weight_calculation_method="vectorized"), aux=_aux(rule, panel))
        np.testing.assert_allclose(vec.weights, res.weights, rtol=0, atol=1e-10)
        np.testing.assert_allclose(vec.values, res.values, rtol=1e-10)


@pytest.mark.parametrize("rule", DYNAMIC)
def test_no_look_ahead(rule, panel):
    spec = _spec(rule)
    base = simulate(panel, spec, aux=_aux(rule, panel))
    cut = 40
    prices = panel.prices.copy()
    prices[cut + 1 :] *= np.exp(np.random.default_rng(5).normal(0, 0.2, prices[cut + 1 :].shape))
    moved_panel = PricePanel(panel.timestamps, panel.tokens, prices, panel.step_minutes, {})
    moved = simulate(moved_panel, spec, aux=_aux(rule, moved_panel))
    k = cut - 20 + 1  # outputs start at row 20
    np.testing.assert_array_equal(base.weights[:k], moved.weights[:k])
    np.testing.assert_array_equal(base.values[:k], moved.values[:k])


@pytest.mark.parametrize("rule", [r for r in DYNAMIC if not get_rule(r).required_aux])
def test_vmapped_parameter_sets_equal_separate_runs(rule, panel):
    spec = _spec(rule)
    window = plan_window(panel, spec)
    st = static_settings(spec, window)
    rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
    base = resolve_params(spec)
    rng = np.random.default_rng(3)
    sets = [{k: v * rng.uniform(0.7, 1.3, v.shape) for k, v in base.items()} for _ in range(3)]
    w0, v0 = jnp.asarray(initial_weights(spec)), jnp.float64(spec.initial_pool_value)
    batched = compiled_forward(st, batched=True)(
        rows, {k: jnp.stack([s[k] for s in sets]) for k in base}, w0, v0, {})
    for i, s in enumerate(sets):
        single = compiled_forward(st)(rows, {k: jnp.asarray(v) for k, v in s.items()}, w0, v0, {})
        np.testing.assert_allclose(batched[0][i], single[0], rtol=1e-12)
        np.testing.assert_allclose(batched[1][i], single[1], atol=1e-13)


def test_index_market_cap_needs_its_market_caps(panel):
    rules = [r for r in DYNAMIC if "market_cap" in get_rule(r).required_aux]
    if not rules:
        pytest.fail("index_market_cap is not registered")
    with pytest.raises(SimulationInputError, match="market_cap"):
        simulate(panel, _spec(rules[0]))
    with pytest.raises(SimulationInputError, match="shape"):
        simulate(panel, _spec(rules[0]), aux={"market_cap": np.ones((3, 3))})


def _two_token_panel(n=60, seed=2):
    rng = np.random.default_rng(seed)
    eth = 2000 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    usdc = 1 + rng.normal(0, 1e-4, n)
    ts = np.datetime64("2024-01-01", "ms") + np.arange(n) * np.timedelta64(1, "D")
    return PricePanel(ts, ("ETH", "USDC"), np.stack([eth, usdc], axis=1), 1440, {})


def test_cow_pool_runs_on_the_minute_grid_and_earns_fees():
    panel = _two_token_panel()
    spec = load_run_spec({"rule": "cow", "tokens": ["ETH", "USDC"], "startDateString": "2024-01-05",
                          "endDateString": "2024-01-25", "fees": 0.003, "initial_weights": [0.5, 0.5]})
    res = simulate(panel, spec)
    assert res.substepped and res.engine == "cow"
    hodl = simulate(panel, spec.model_copy(update={"rule": "hodl"}))
    balancer = simulate(panel, spec.model_copy(update={"rule": "balancer", "fees": 0.0}))
    # an FM-AMM with perfect auction competition keeps the arbitrage surplus: it beats the 50/50 G3M
    assert res.values[-1] > balancer.values[-1]
    assert np.all(np.isfinite(res.values)) and hodl.values[-1] > 0


def test_gyroscope_pool_keeps_its_price_range():
    panel = _two_token_panel(seed=4)
    spec = load_run_spec({"rule": "gyroscope", "tokens": ["ETH", "USDC"], "startDateString": "2024-01-05",
                          "endDateString": "2024-01-25",
                          "parameters": {"alpha": 1500.0, "beta": 3000.0, "lam": 5.0, "phi": 0.785}})
    res = simulate(panel, spec)
    assert res.engine == "gyroscope"
    assert np.all(res.reserves >= -1e-9) and np.all(np.isfinite(res.values))
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)


def test_two_token_engines_refuse_three_tokens():
    with pytest.raises(Exception, match="2-token pool"):
        _spec("cow")


@pytest.mark.slow
def test_fee_path_daily_substeps_equal_minute_data():
    """With fees the daily pass steps the minute scan through interpolated prices: the same numbers as
    giving it those minutes as data."""
    daily = random_walk_panel(26, seed=8)
    lp = np.log(daily.prices)
    frac = np.arange(1440) / 1440
    minutes = (lp[:-1, None, :] + frac[None, :, None] * (lp[1:] - lp[:-1])[:, None, :]).reshape(-1, 3)
    minutes = np.concatenate([minutes, lp[-1:]])
    ts = daily.timestamps[0] + np.arange(minutes.shape[0]) * np.timedelta64(1, "m")
    minute_panel = PricePanel(ts, daily.tokens, np.exp(minutes), 1, {})
    spec = _spec("momentum", startDateString="2024-01-11", endDateString="2024-01-25", max_memory_days=10,
                 fees=0.003)
    d = simulate(daily, spec)
    m = simulate(minute_panel, spec)
    assert d.substepped
    np.testing.assert_allclose(m.values[::1440], d.values, rtol=1e-10)
    zero = simulate(daily, spec.model_copy(update={"fees": 0.0}))
    assert d.fee_revenue.sum() > 0 and np.all(d.fee_revenue >= 0)
    assert not np.allclose(d.values, zero.values)


def test_straight_through_gradients_are_finite_through_simulate_settings(panel):
    spec = _spec("momentum", ste_max_change=True, ste_min_max_weight=True)
    window = plan_window(panel, spec)
    st = static_settings(spec, window)
    rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
    params = {k: jnp.asarray(v) for k, v in resolve_params(spec).items()}
    w0 = jnp.asarray(initial_weights(spec))

    def final_log_value(k):
        return jnp.log(compiled_forward(st)(rows, {**params, "k_per_day": k}, w0, 1e6, {})[0][-1])

    g = jax.grad(final_log_value)(params["k_per_day"])
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)


def test_hodling_index_trades_only_inside_the_interpolation_window():
    """wip = 360 of a 1440-minute chunk, data every 6 hours: the hodling pool trades in minutes 0..359
    of each chunk and holds its reserves after that, so at 06:00, 12:00 and 18:00 it holds the same
    tokens, and at 00:00 (trading again) it equals the always-arbitraged index pool."""
    panel = random_walk_panel(70 * 4, seed=11, step_minutes=360)
    aux = _aux("index_market_cap", panel)
    kw = {"weight_interpolation_period": 360, "initial_memory_length": 2, "initial_weights": [0.6, 0.3, 0.1]}
    index = simulate(panel, _spec("index_market_cap", **kw), aux=aux)
    hodling = simulate(panel, _spec("hodling_index_market_cap", **kw), aux=aux)
    r = hodling.reserves.reshape(-1, 4, 3)
    np.testing.assert_array_equal(r[:, 1], r[:, 2])
    np.testing.assert_array_equal(r[:, 1], r[:, 3])
    np.testing.assert_allclose(hodling.values[::4], index.values[::4], rtol=1e-10)
    assert not np.allclose(hodling.values[3::4], index.values[3::4], rtol=1e-6)
    # with wip = chunk_period it always trades: the ordinary pool
    full = simulate(panel, _spec("hodling_index_market_cap", **{**kw, "weight_interpolation_period": 1440}), aux=aux)
    plain = simulate(panel, _spec("index_market_cap", **{**kw, "weight_interpolation_period": 1440}), aux=aux)
    np.testing.assert_allclose(full.values, plain.values, rtol=1e-10)


def test_trad_hodling_index_pays_fees_spread_and_streaming_fee(panel):
    aux = _aux("index_market_cap", panel)
    kw = {"initial_memory_length": 2, "initial_weights": [0.6, 0.3, 0.1]}
    free = simulate(panel, _spec("trad_hodling_index_market_cap", annual_streaming_fee=0.0, **kw), aux=aux)
    lvr = simulate(panel, _spec("lvr__index_market_cap", **kw), aux=aux)
    # no costs and trading in every minute of every chunk: the CEX portfolio is the rebalancing benchmark
    np.testing.assert_allclose(free.values, lvr.values, rtol=1e-10)
    streaming = simulate(panel, _spec("trad_hodling_index_market_cap", **kw), aux=aux)
    assert streaming.values[-1] < free.values[-1]
    minutes = (streaming.values.shape[0] - 1) * 1440 + 1
    spread = {**aux, "spread": np.full((minutes, 3), 0.002)}
    costly = simulate(panel, _spec("trad_hodling_index_market_cap", fees=0.001, **kw), aux=spread)
    assert costly.values[-1] < streaming.values[-1]


def test_hodling_index_with_fees_is_closed_outside_the_window():
    panel = random_walk_panel(70 * 4, seed=11, step_minutes=360)
    aux = _aux("index_market_cap", panel)
    kw = {"weight_interpolation_period": 360, "initial_memory_length": 2, "initial_weights": [0.6, 0.3, 0.1],
          "fees": 0.003, "endDateString": "2024-02-01"}
    hodling = simulate(panel, _spec("hodling_index_market_cap", **kw), aux=aux)
    r = hodling.reserves.reshape(-1, 4, 3)
    np.testing.assert_array_equal(r[:, 1], r[:, 3])  # 06:00..18:00: closed, reserves held
    assert np.all(hodling.fee_revenue.reshape(-1, 4)[:, 2:] == 0.0) and hodling.fee_revenue.sum() > 0
