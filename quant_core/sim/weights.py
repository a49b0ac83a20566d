"""From raw rule output to the weights the pool actually holds, chunk by chunk.

Per chunk c (order matters and follows the reference simulator):
 1. raw = W_c + delta_c, normalised to sum 1;
 2. guardrail: clip to [min_w, 1-(n-1) min_w]; the assets that were below min_w *before*
    clipping keep min_w, the others share the rest in proportion (one pass); the rounding
    residue goes to the largest weight;
 3. per-minute step d_c = (target - W_c) / wip, scaled down as a whole vector when
    max|d_c| > maximum_change (direction kept);
 4. W_{c+1} = W_c + wip d_c: the carry is the position reached, not the target.
The weights then ramp linearly from W_c by d_c per minute for wip minutes (see `weight_at`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def guardrail(u: jax.Array, minimum_weight: float) -> jax.Array:
    """Clip weights to [min_w, 1-(n-1)min_w] and re-share the rest (one pass, sums to 1)."""
    n = u.shape[-1]
    max_w = 1.0 - (n - 1) * minimum_weight
    low = u < minimum_weight
    clipped = jnp.clip(u, minimum_weight, max_w)
    n_low = jnp.sum(low, axis=-1, keepdims=True)
    free_sum = jnp.sum(jnp.where(low, 0.0, clipped), axis=-1, keepdims=True)
    scale = (1.0 - n_low * minimum_weight) / jnp.where(free_sum == 0, 1.0, free_sum)
    out = jnp.where(low, minimum_weight, clipped * scale)
    residue = 1.0 - jnp.sum(out, axis=-1, keepdims=True)
    largest = jax.nn.one_hot(jnp.argmax(out, axis=-1), n, dtype=out.dtype)
    return out + residue * largest


def chunk_weights(
    initial_weights: jax.Array,
    deltas: jax.Array,
    *,
    minimum_weight: float,
    maximum_change: float,
    interpolation_period: int,
) -> tuple[jax.Array, jax.Array]:
    """Weights at the start of each chunk W [C, n] (W[0] = initial) and per-minute steps d [C, n]."""

    def step(w, delta):
        raw = w + delta
        target = guardrail(raw / jnp.sum(raw), minimum_weight)
        d = (target - w) / interpolation_period
        biggest = jnp.max(jnp.abs(d))
        d = jnp.where(biggest > maximum_change, d * maximum_change / (biggest + 1e-10), d)
        return w + interpolation_period * d, (w, d)

    _, (w_start, d) = jax.lax.scan(step, jnp.asarray(initial_weights), deltas)
    return w_start, d


def weight_at(
    minutes: jax.Array,
    initial_weights: jax.Array,
    w_start: jax.Array,
    d: jax.Array,
    *,
    chunk_period: int,
    interpolation_period: int,
) -> jax.Array:
    """Weights held at bout minute t: W_0 during the first chunk, then block b = t//cp - 1 ramps
    from W_b by d_b per minute for `interpolation_period` minutes and holds."""
    block = minutes // chunk_period - 1
    offset = jnp.minimum(minutes % chunk_period, interpolation_period)
    idx = jnp.clip(block, 0, w_start.shape[0] - 1)
    ramped = w_start[idx] + offset[..., None] * d[idx]
    return jnp.where((block < 0)[..., None], initial_weights, ramped)


class WeightSchedule(NamedTuple):
    """Piecewise-linear weights over bout minutes: W_0 for the first chunk, then in chunk b+1 a
    ramp from w_start[b] by d[b] per minute for `interpolation_period` minutes, then a hold."""

    initial: jax.Array  # [n]
    w_start: jax.Array  # [C, n]
    d: jax.Array  # [C, n]
    chunk_period: int
    interpolation_period: int

    @classmethod
    def constant(cls, weights: jax.Array, chunk_period: int = 1440) -> WeightSchedule:
        w = jnp.asarray(weights)
        return cls(w, w[None, :], jnp.zeros_like(w)[None, :], chunk_period, chunk_period)

    def at(self, minutes: jax.Array) -> jax.Array:
        return weight_at(minutes, self.initial, self.w_start, self.d,
                         chunk_period=self.chunk_period, interpolation_period=self.interpolation_period)

    def segment(self, minutes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """For chunk-local clock: the ramp start W_b [.., n], slope d_b [.., n] and offset in the chunk [..]."""
        block = minutes // self.chunk_period - 1
        idx = jnp.clip(block, 0, self.w_start.shape[0] - 1)
        before = (block < 0)[..., None]
        w_b = jnp.where(before, self.initial, self.w_start[idx])
        d_b = jnp.where(before, 0.0, self.d[idx])
        return w_b, d_b, minutes % self.chunk_period
