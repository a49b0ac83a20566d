"""Forward-pass properties: sub-stepping, no look-ahead, static pools in closed form."""

import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.simulate import simulate


def _spec(**kw):
    base = {"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-11",
            "endDateString": "2024-01-25", "max_memory_days": 10, "parameters": {"memory_days": 3, "k_per_day": 30}}
    return load_run_spec({**base, **kw})


def _minute_panel(daily: PricePanel) -> PricePanel:
    """The daily panel interpolated log-linearly to minutes (what the daily pass steps through)."""
    lp = np.log(daily.prices)
    frac = np.arange(1440) / 1440
    minutes = (lp[:-1, None, :] + frac[None, :, None] * (lp[1:] - lp[:-1])[:, None, :]).reshape(-1, lp.shape[1])
    minutes = np.concatenate([minutes, lp[-1:]], axis=0)
    ts = daily.timestamps[0] + np.arange(minutes.shape[0]) * np.timedelta64(1, "m")
    return PricePanel(timestamps=ts, tokens=daily.tokens, prices=np.exp(minutes), step_minutes=1, metadata={})


@pytest.mark.slow
@pytest.mark.parametrize("rule,wip", [("momentum", 1440), ("momentum", 360), ("min_variance", 720)])
def test_daily_substeps_equal_minute_data(rule, wip):
    """Stepping daily data through minutes == simulating the interpolated minute data itself (min_variance:
    a target rule, started at its first target with no first-chunk hold)."""
    daily = random_walk_panel(30)
    params = {"memory_days": 3, "memory_days_2": 2} if rule == "min_variance" else {"memory_days": 3, "k_per_day": 30}
    spec = _spec(rule=rule, weight_interpolation_period=wip, parameters=params)
    d = simulate(daily, spec)
    m = simulate(_minute_panel(daily), spec)
    np.testing.assert_allclose(m.values[::1440], d.values, rtol=1e-10)
    np.testing.assert_allclose(m.weights[::1440], d.weights, atol=1e-12)


def test_no_look_ahead():
    panel = random_walk_panel(40)
    spec = _spec(endDateString="2024-02-09")
    base = simulate(panel, spec)
    cut = 20  # perturb every price after row `cut` of the panel
    prices = panel.prices.copy()
    prices[cut + 1 :] *= np.exp(np.random.default_rng(5).normal(0, 0.2, prices[cut + 1 :].shape))
    moved = simulate(PricePanel(panel.timestamps, panel.tokens, prices, panel.step_minutes, {}), spec)
    k = cut - 10 + 1  # outputs start at row 10; rows <= cut are unchanged
    np.testing.assert_array_equal(base.values[:k], moved.values[:k])
    np.testing.assert_array_equal(base.weights[:k], moved.weights[:k])
    assert not np.allclose(base.values[k:], moved.values[k:])


def test_balancer_is_path_independent_closed_form():
    panel = random_walk_panel(60, seed=3)
    spec = _spec(rule="balancer", parameters=None, initial_weights=[0.2, 0.3, 0.5], endDateString="2024-02-29")
    res = simulate(panel, spec)
    p = panel.prices[10:59]
    expected = 1e6 * np.prod((p / p[0]) ** np.array([0.2, 0.3, 0.5]), axis=1)
    np.testing.assert_allclose(res.values, expected, rtol=1e-11)


def test_weights_sum_to_one_and_respect_bounds():
    res = simulate(random_walk_panel(80, seed=7), _spec(endDateString="2024-03-20",
                                                        parameters={"memory_days": 2, "k_per_day": 500}))
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    assert res.weights.min() >= 0.1 / 3 - 1e-12
    assert np.abs(np.diff(res.weights, axis=0)).max() <= 3e-4 * 1440 + 1e-9


def test_trend_following_overweights_the_riser():
    ts = np.datetime64("2024-01-01", "ms") + np.arange(60) * np.timedelta64(1, "D")
    prices = np.stack([np.exp(0.02 * np.arange(60)), np.ones(60), np.exp(-0.02 * np.arange(60))], axis=1)
    res = simulate(PricePanel(ts, ("AAA", "BBB", "CCC"), prices, 1440, {}), _spec(endDateString="2024-02-29"))
    assert res.weights[-1, 0] > 0.5 > res.weights[-1, 2]


def test_window_outside_the_data_names_the_keys():
    from quant_core.sim.window import SimulationInputError

    with pytest.raises(SimulationInputError, match=r"startDateString \(2023-06-01 00:00\) must fall on the price"):
        simulate(random_walk_panel(20), _spec(startDateString="2023-06-01", endDateString="2023-07-01"))
    with pytest.raises(SimulationInputError, match=r"endDateString \(2024-03-01 00:00\) must fall on the price"):
        simulate(random_walk_panel(20), _spec(endDateString="2024-03-01"))
    # a test window past the data names endTestDateString (it used to name startDateString/endDateString)
    spec = _spec(endDateString="2024-01-15", endTestDateString="2024-03-01")
    with pytest.raises(SimulationInputError, match=r"endTestDateString \(2024-03-01 00:00\) must fall on the price"):
        simulate(random_walk_panel(20), spec, start=spec.start, end=spec.end_test)
    with pytest.raises(SimulationInputError, match="multiple of the data step"):
        simulate(random_walk_panel(20), _spec(chunk_period=60, weight_interpolation_period=60))


def test_end_may_be_one_step_past_the_last_row():
    res = simulate(random_walk_panel(20), _spec(endDateString="2024-01-21"))
    assert len(res.values) == 10
