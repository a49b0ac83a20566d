"""Gather, scatter and sum over a short static axis, written so XLA fuses them, plus a kernel-sequence fence
and a branch predicate that stays unbatched under vmap.

The fee engine's scan step is a few dozen tiny kernels and on XLA:CPU launching a kernel costs more
than its arithmetic (see the "Speed" section of g3m_fees); these helpers express indexing and
reductions over the few tokens as selects and adds of slices, which fuse, and `_block` runs a stage
as its own kernel sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _block(pred: jax.Array, fn: Callable[..., Any], *args: jax.Array) -> Any:
    """fn(*args) as the branch of a `lax.cond` on `pred` (always true): a kernel sequence of its own."""
    out_shape = jax.eval_shape(fn, *args)
    return jax.lax.cond(pred, fn, lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape), *args)


@jax.custom_batching.custom_vmap
def _any_in_batch(pred: jax.Array) -> jax.Array:
    """pred itself; under vmap, whether it holds for any member of the batch, unbatched, so that a `lax.cond`
    on it still skips its branch (a batched predicate turns the cond into a select of both branches)."""
    return pred


@_any_in_batch.def_vmap
def _any_in_batch_rule(axis_size: int, in_batched: list[bool], pred: jax.Array) -> tuple[jax.Array, bool]:
    return (jnp.any(pred) if in_batched[0] else pred), False


def _mask(size: int, positions: Iterable[int]) -> jax.Array:
    """Boolean [size] vector, True at the given static positions (built from an iota, so it fuses)."""
    iota = jax.lax.iota(np.int32, size)
    out = iota < 0
    for m in positions:
        out = out | (iota == int(m))
    return out


def _take(x: jax.Array, idx: np.ndarray) -> jax.Array:
    """x[..., idx] for a static index array, as selects between broadcast slices (fuses; a gather,
    or a concatenation feeding several users, would be a kernel of its own)."""
    idx = np.asarray(idx)
    out = jnp.broadcast_to(x[..., idx[0]:idx[0] + 1], x.shape[:-1] + (len(idx),))
    for k in sorted(set(idx.tolist()) - {int(idx[0])}):
        out = jnp.where(_mask(len(idx), np.flatnonzero(idx == k)), x[..., k:k + 1], out)
    return out


def _scatter_add(n: int, values: jax.Array, idx: np.ndarray) -> jax.Array:
    """out[..., k] = sum of values[..., m] over m with idx[m] == k (static idx), without a scatter."""
    out = jnp.zeros(values.shape[:-1] + (n,), values.dtype)
    for m, k in enumerate(np.asarray(idx).tolist()):
        out = out + jnp.where(_mask(n, [k]), values[..., m:m + 1], 0.0)
    return out


def _total(x: jax.Array) -> jax.Array:
    """Sum over the last (short, static) axis as a chain of adds, which fuses with its inputs."""
    acc = x[..., 0]
    for i in range(1, x.shape[-1]):
        acc = acc + x[..., i]
    return acc
