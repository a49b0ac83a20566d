"""Minute-grid results summarised per data step, as a pass over coarser data reports them.

A pass over daily (or hourly) rows simulates every minute in between but keeps, per data step, only the reserves
at the step's first minute and what the pool earned within it. One function, so that every minute engine and the
fee loop (which keeps only those rows itself, g3m_fee_loop.cc) agree on what a step's row holds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def data_steps(reserves: jax.Array, *flows: jax.Array, keep: int) -> tuple[jax.Array, ...]:
    """(reserves [T, n], flows [T] ...) on the minute grid -> reserves at minutes 0, keep, 2 keep, ... and each
    flow's minute 0 then its sum over each step's minutes (j - 1) keep + 1 .. j keep. (T - 1) % keep == 0."""
    if keep == 1:
        return (reserves, *flows)
    if (reserves.shape[0] - 1) % keep:
        raise ValueError(f"a step of {keep} minutes must divide the minutes after the first ({reserves.shape[0] - 1})")
    sums = (jnp.concatenate([x[:1], jnp.sum(x[1:].reshape(-1, keep), axis=1)]) for x in flows)
    return (reserves[::keep], *sums)
