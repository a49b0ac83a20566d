"""The pools and hooks added for parity with the reference, reached through `simulate` from a run spec: each equals
its engine called directly (reCLAMM), the reference's definition (lvr__/rvr__ on CoW and Gyroscope hold the pool's
weights: CoW's fixed ones, the E-CLP's value shares on its zero-fee path), or a case with a known answer
(momentum_fee__ with zero scaling is a constant fee; protocol_fee_split only where the reference applies it)."""

import warnings

import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.sim.amm.reclamm import reclamm_reserves
from quant_core.sim.simulate import simulate
from quant_core.spec import RunSpecError

PAIR = random_walk_panel(3 * 1440 + 1, tokens=("ETH", "USDC"), step_minutes=1, sigma=0.0015, seed=5)
TRIO = random_walk_panel(3 * 1440 + 1, step_minutes=1, sigma=0.0015, seed=6)
WINDOW = {"startDateString": "2024-01-02 00:00:00", "endDateString": "2024-01-03 00:00:00", "max_memory_days": 1,
          "chunk_period": 60, "weight_interpolation_period": 60}


def _run(panel, rule, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = load_run_spec({"rule": rule, "tokens": list(panel.tokens), **WINDOW, **kw})
    return simulate(panel, spec)


def test_reclamm_through_simulate_is_its_engine():
    res = _run(PAIR, "reclamm", fees=0.0025, parameters={"price_ratio": 1.2, "centeredness_margin": 0.4})
    start = int(np.searchsorted(PAIR.timestamps, res.timestamps[0]))
    prices = PAIR.prices[start : start + len(res.values)]
    direct = reclamm_reserves(prices, 1_000_000.0, price_ratio=1.2, centeredness_margin=0.4, fees=0.0025)
    # one compiled function vs another: fused arithmetic rounds a few steps differently (~1e-12 relative)
    np.testing.assert_allclose(res.reserves, np.asarray(direct.reserves), rtol=1e-10)
    np.testing.assert_allclose(res.weights, res.reserves * prices / res.values[:, None], rtol=1e-12)
    assert res.fee_revenue.sum() > 0


@pytest.mark.parametrize("hook", ["lvr", "rvr"])
def test_rebalancing_hooks_on_cow_and_gyroscope_hold_the_pools_weights(hook):
    aux_free = hook == "lvr"
    gyro = {"parameters": {"alpha": 0.5, "beta": 2.0}}
    if aux_free:
        cow = _run(PAIR, "lvr__cow", fees=0.003, initial_weights=[0.3, 0.7])
        np.testing.assert_allclose(cow.weights, np.broadcast_to([0.3, 0.7], cow.weights.shape), rtol=1e-12)
        assert cow.engine == "lvr"
        held = _run(PAIR, "lvr__gyroscope", fees=0.003, **gyro)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = load_run_spec({"rule": "rvr__gyroscope", "tokens": ["ETH", "USDC"], **WINDOW, "fees": 0.003, **gyro})
        held = simulate(PAIR, spec, aux={"spread": np.full((1440, 2), 1e-3)})
    zero_fee = _run(PAIR, "gyroscope", **gyro)  # the E-CLP's own path, whose value shares the hooks hold
    np.testing.assert_allclose(held.weights, zero_fee.weights, rtol=1e-9)
    assert held.values[-1] != zero_fee.values[-1]


def test_momentum_fee_with_zero_scaling_is_a_constant_fee_of_half_its_maximum():
    params = {"memory_days": 0.5, "k_per_day": 20}
    hooked = _run(TRIO, "momentum_fee__momentum",
                  parameters={**params, "momentum_fee_max": 0.006, "momentum_fee_scaling": 0.0})
    plain = _run(TRIO, "momentum", fees=0.003, parameters=params)
    np.testing.assert_allclose(hooked.values, plain.values, rtol=1e-12)
    moving = _run(TRIO, "momentum_fee__momentum",
                  parameters={**params, "momentum_fee_max": 0.006, "momentum_fee_scaling": 300.0})
    assert not np.allclose(moving.values, plain.values, rtol=1e-9)


def test_protocol_fee_split_takes_its_share_where_the_reference_applies_it():
    params = {"memory_days": 0.5, "k_per_day": 20}
    base = _run(TRIO, "momentum", fees=0.003, parameters=params)
    split = _run(TRIO, "momentum", fees=0.003, protocol_fee_split=0.5, parameters=params)
    assert split.values[-1] < base.values[-1] and split.fee_revenue.sum() < base.fee_revenue.sum()
    # balancer: the reference does not apply it, and a notice says so
    with pytest.warns(UserWarning, match="protocol_fee_split"):
        load_run_spec({"rule": "balancer", "tokens": list(TRIO.tokens), **WINDOW, "fees": 0.003,
                       "protocol_fee_split": 0.5})
    np.testing.assert_array_equal(_run(TRIO, "balancer", fees=0.003, protocol_fee_split=0.5).values,
                                  _run(TRIO, "balancer", fees=0.003).values)


@pytest.mark.parametrize("rule,needle", [("lvr__reclamm", "lvr__ tracks a pool's weights"),
                                         ("momentum_fee__cow", "momentum_fee__ sets the swap fee of a G3M"),
                                         ("momentum_fee__rvr__momentum", "momentum_fee__ sets the swap fee")])
def test_hooks_refuse_pools_they_cannot_act_on(rule, needle):
    tokens = ["ETH", "USDC"] if "cow" in rule or "reclamm" in rule else ["AAA", "BBB", "CCC"]
    with pytest.raises(RunSpecError, match=needle):
        load_run_spec({"rule": rule, "tokens": tokens, **WINDOW})
