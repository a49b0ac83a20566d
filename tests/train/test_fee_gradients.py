"""Gradients through the fee scan are right over a batch of windows and of parameter sets (vmapped): they were
0.3-20 % off while the scan indexed closed-over arrays (see the g3m_fees rows_as_xs comment)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_walk_panel

from quant_core.runspec import load_run_spec
from quant_core.train.gradient import WindowLoss
from quant_core.train.params import parameter_layout
from quant_core.train.split import plan_split

PANEL = random_walk_panel(1440 * 12, step_minutes=1, seed=2, sigma=0.0008)


def _loss(fees: float) -> tuple[WindowLoss, dict, jax.Array, jax.Array]:
    spec = load_run_spec({"rule": "momentum", "tokens": ["AAA", "BBB", "CCC"], "startDateString": "2024-01-05",
                          "endDateString": "2024-01-11", "max_memory_days": 3, "bout_offset": 2 * 1440,
                          "fees": fees, "optimisation_settings": {"batch_size": 3, "val_fraction": 0.0}})
    split, layout = plan_split(PANEL, spec), parameter_layout(spec)
    loss = WindowLoss(PANEL, spec, split, layout, closed_form=False)
    u = {k: jnp.asarray(v) for k, v in layout.to_unconstrained(layout.initial).items()}
    starts, phases = loss.sample(jax.random.PRNGKey(3))
    return loss, u, loss.windows(jnp.asarray(loss.sources), starts, None), phases


def _central_difference(f, u: dict, name: str, i: int, h: float = 1e-6) -> float:
    step = jnp.zeros_like(u[name]).at[i].set(h)
    return (float(f({**u, name: u[name] + step})) - float(f({**u, name: u[name] - step}))) / (2 * h)


def test_fee_path_gradient_over_a_batch_of_windows_equals_central_differences():
    loss, u, rows, phases = _loss(0.003)
    value = jax.jit(lambda v: loss(v, rows, phases))
    grad = jax.jit(jax.grad(lambda v: loss(v, rows, phases)))(u)
    for i in range(3):
        fd = _central_difference(value, u, "k_per_day", i)
        assert float(grad["k_per_day"][i]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_gradients_of_several_sets_equal_each_sets_own():
    for fees in (0.003, 0.0):
        loss, u, rows, phases = _loss(fees)
        sets = {k: jnp.stack([v, 1.1 * v, 0.9 * v]) for k, v in u.items()}
        both = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None)))
        values, grads = both(sets, rows, phases)
        one = jax.jit(jax.value_and_grad(loss))
        for s in range(3):
            v, g = one({k: x[s] for k, x in sets.items()}, rows, phases)
            assert float(values[s]) == pytest.approx(float(v), rel=1e-12)
            np.testing.assert_allclose(grads["k_per_day"][s], g["k_per_day"], rtol=1e-9, atol=1e-12)
