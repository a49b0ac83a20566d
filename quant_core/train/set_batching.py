"""Derivatives over a population of parameter sets: vmapped, or one set after another where vmap is wrong.

Why: XLA:CPU (jaxlib 0.10.2) miscompiles the reverse pass of the fee engine's scan (quant_core.sim.amm.g3m_fees)
when it is batched: `jax.vmap(jax.grad(f))` over two or more parameter sets returns gradients 0.3-20 % off the
single-set `jax.grad(f)` and central differences, deterministically, while the forward pass, forward-mode
derivatives and a batch of one are right. The same program is right op by op (`jax.disable_jit()`) and with
`--xla_backend_optimization_level=0`, so it is the compiler's, not ours; changing unrelated passes changes the
wrong value. Until it is fixed there, derivatives through the fee scan run `jax.lax.map` over the sets (one
compiled single-set program in a loop; tests/train/test_set_batching.py checks the two agree), everything else
keeps vmap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def over_sets(fn: Callable[..., Any], sequential: bool) -> Callable[..., Any]:
    """fn(u, *shared) for every parameter set along the leading axis of the pytree u, shared arguments
    broadcast: jax.vmap, or jax.lax.map when `sequential`."""
    if sequential:
        return lambda u, *shared: jax.lax.map(lambda one: fn(one, *shared), u)
    return lambda u, *shared: jax.vmap(fn, in_axes=(0,) + (None,) * len(shared))(u, *shared)
