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

Start and timing (the reference's calc_fine_weight_output): delta rules start at the initial weights,
hold them for the first chunk and ramp block c in chunk c+1. Target-weight rules (min_variance,
index_market_cap) by default start at the guardrailed first target, W_0 = guardrail(r_0) (the
initial weights are ignored), and ramp block c in chunk c, with no hold. `start_at_first_target`
and `WeightSchedule.hold_first_chunk` select the two; `target_weights_start` in the run spec can
give target rules the delta rules' start and timing instead (see quant_core.sim.engines).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def guardrail(u: jax.Array, minimum_weight: float, ste: bool = False) -> jax.Array:
    """Clip weights to [min_w, 1-(n-1)min_w] and re-share the rest (one pass, sums to 1)."""
    n = u.shape[-1]
    max_w = 1.0 - (n - 1) * minimum_weight
    low = u < minimum_weight
    clipped = jnp.clip(u, minimum_weight, max_w)
    if ste:
        clipped = straight_through(u, clipped)
    n_low = jnp.sum(low, axis=-1, keepdims=True)
    free_sum = jnp.sum(jnp.where(low, 0.0, clipped), axis=-1, keepdims=True)
    scale = (1.0 - n_low * minimum_weight) / jnp.where(free_sum == 0, 1.0, free_sum)
    out = jnp.where(low, minimum_weight, clipped * scale)
    residue = 1.0 - jnp.sum(out, axis=-1, keepdims=True)
    largest = jax.nn.one_hot(jnp.argmax(out, axis=-1), n, dtype=out.dtype)
    return out + residue * largest


def straight_through(soft: jax.Array, hard: jax.Array) -> jax.Array:
    """Forward value `hard`, gradient of `soft`: lets gradients flow through a clip when asked."""
    return soft + jax.lax.stop_gradient(hard - soft)


def per_asset_bounds(u: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """The `bounded__` hook: clip to per-asset [low, high], then share the deficit (surplus) over
    the assets in proportion to their room to grow (shrink), clip again and renormalise.

    Applied after normalising and before the uniform guardrail, as the reference does; feasible
    bounds (sum low <= 1 <= sum high, low < high) are checked when the parameters are resolved."""
    w = jnp.clip(u, low, high)
    total = jnp.sum(w, axis=-1, keepdims=True)
    room_up = high - w
    room_down = w - low
    up = jnp.sum(room_up, axis=-1, keepdims=True)
    down = jnp.sum(room_down, axis=-1, keepdims=True)
    deficit = 1.0 - total
    adjust = jnp.where(
        deficit > 0,
        deficit * room_up / jnp.where(up > 0, up, 1.0),
        deficit * room_down / jnp.where(down > 0, down, 1.0),
    )
    w = jnp.clip(w + adjust, low, high)
    return w / jnp.sum(w, axis=-1, keepdims=True)


def chunk_weights(
    initial_weights: jax.Array,
    deltas: jax.Array,
    *,
    minimum_weight: float,
    maximum_change: float,
    interpolation_period: int,
    blend: jax.Array | None = None,
    bounds: tuple[jax.Array, jax.Array] | None = None,
    ste_max_change: bool = False,
    ste_min_max_weight: bool = False,
    start_at_first_target: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Weights at the start of each chunk W [C, n] and per-minute steps d [C, n].

    `deltas` are weight changes; with `blend` (the smoothing lambda of a target-weight rule such as
    min_variance) they are target weights and raw = blend W + (1 - blend) target. `bounds` are the
    per-asset (low, high) of the `bounded__` hook. The ste_* flags keep the forward values and pass
    gradients as if the guardrail clip / the maximum_change cap were absent.

    W[0] is `initial_weights`, or with `start_at_first_target` (target rules only) the first target
    put through the same blend, normalisation and guardrails with itself as the previous weights,
    as the reference seeds its scan (fine_weights.py:346-369); the scan then starts again at that
    same first target, so d[0] is only rounding."""

    def target(w, out):
        raw = w + out if blend is None else blend * w + (1.0 - blend) * out
        u = raw / jnp.sum(raw)
        if bounds is not None:
            u = per_asset_bounds(u, bounds[0], bounds[1])
        return guardrail(u, minimum_weight, ste=ste_min_max_weight)

    def step(w, out):
        d = (target(w, out) - w) / interpolation_period
        biggest = jnp.max(jnp.abs(d))
        capped = jnp.where(biggest > maximum_change, d * maximum_change / (biggest + 1e-10), d)
        d = straight_through(d, capped) if ste_max_change else capped
        return w + interpolation_period * d, (w, d)

    if start_at_first_target:
        if blend is None:
            raise ValueError("start_at_first_target needs a target-weight rule (blend)")
        start = target(deltas[0], deltas[0])
    else:
        start = jnp.asarray(initial_weights)
    _, (w_start, d) = jax.lax.scan(step, start, deltas)
    return w_start, d


def weight_at(
    minutes: jax.Array,
    initial_weights: jax.Array,
    w_start: jax.Array,
    d: jax.Array,
    *,
    chunk_period: int,
    interpolation_period: int,
    method: str = "linear",
    hold_first_chunk: bool = True,
) -> jax.Array:
    """Weights held at bout minute t: W_0 during the first chunk, then block b = t//cp - 1 moves
    from W_b towards E_b = W_b + wip d_b over `interpolation_period` minutes and holds E_b.
    Without `hold_first_chunk` (target rules, as the reference) block b = t//cp from minute 0.

    `linear` ramps by d_b per minute. `optimal` (Willetts & Harrington 2024, arXiv 2403.18737)
    follows the normalised sum of the linear and the geometric path W_b (E_b/W_b)^(m/wip), which
    hands arbitrageurs less than the linear ramp for the same start and end."""
    block = minutes // chunk_period - int(hold_first_chunk)
    offset = jnp.minimum(minutes % chunk_period, interpolation_period)
    idx = jnp.clip(block, 0, w_start.shape[0] - 1)
    start = w_start[idx]
    ramped = start + offset[..., None] * d[idx]
    if method == "optimal":
        end = start + interpolation_period * d[idx]
        frac = (offset / interpolation_period)[..., None]
        mixed = ramped + start * (end / start) ** frac
        ramped = jnp.where(frac < 1.0, mixed / jnp.sum(mixed, axis=-1, keepdims=True), end)
    return jnp.where((block < 0)[..., None], initial_weights, ramped)


class WeightSchedule(NamedTuple):
    """Piecewise weights over bout minutes: W_0 for the first chunk, then in chunk b+1 a move from
    w_start[b] by d[b] per minute for `interpolation_period` minutes (linear or `optimal`), then a hold.
    Without `hold_first_chunk` the move from w_start[b] happens in chunk b, from minute 0 (target rules
    as the reference runs them); `initial` is then w_start[0]. Either way `initial` is the weight at
    minute 0, from which the pool's initial reserves follow."""

    initial: jax.Array  # [n]
    w_start: jax.Array  # [C, n]
    d: jax.Array  # [C, n]
    chunk_period: int
    interpolation_period: int
    method: str = "linear"
    hold_first_chunk: bool = True

    @classmethod
    def constant(cls, weights: jax.Array, chunk_period: int = 1440) -> WeightSchedule:
        w = jnp.asarray(weights)
        return cls(w, w[None, :], jnp.zeros_like(w)[None, :], chunk_period, chunk_period)

    @property
    def is_linear(self) -> bool:
        return self.method == "linear"

    def at(self, minutes: jax.Array) -> jax.Array:
        return weight_at(minutes, self.initial, self.w_start, self.d, chunk_period=self.chunk_period,
                         interpolation_period=self.interpolation_period, method=self.method,
                         hold_first_chunk=self.hold_first_chunk)

    def per_minute(self, n_minutes: int) -> jax.Array:
        """Weights at minutes 0..n_minutes-1 [n_minutes, n], built chunk by chunk by broadcasting
        rather than gathered per minute: identical to `at(arange(n_minutes))`, and cheap enough for
        XLA to recompute inside every consumer (a fused per-minute gather was 25 ms of a 40 ms pass)."""
        cp = self.chunk_period
        hold = int(self.hold_first_chunk)
        n_blocks = min(self.w_start.shape[0], -(-n_minutes // cp) - hold)
        offset = jnp.minimum(jnp.arange(cp), self.interpolation_period).astype(self.d.dtype)
        start, d = self.w_start[:n_blocks], self.d[:n_blocks]
        ramped = start[:, None, :] + offset[None, :, None] * d[:, None, :]
        if self.method == "optimal":
            frac = (offset / self.interpolation_period)[None, :, None]
            end = start + self.interpolation_period * d
            mixed = ramped + start[:, None, :] * (end / start)[:, None, :] ** frac
            ramped = jnp.where(frac < 1.0, mixed / jnp.sum(mixed, axis=-1, keepdims=True), end[:, None, :])
        dense = ramped.reshape(-1, self.initial.shape[0])
        if hold:
            dense = jnp.concatenate([jnp.broadcast_to(self.initial, (cp, self.initial.shape[0])), dense], axis=0)
        if dense.shape[0] < n_minutes:  # more minutes than blocks (not from simulate): as `at` does
            dense = jnp.concatenate([dense, self.at(jnp.arange(dense.shape[0], n_minutes))])
        return dense[:n_minutes]

    def segment(self, minutes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """For chunk-local clock: the ramp start W_b [.., n], slope d_b [.., n] and offset in the chunk [..]."""
        block = minutes // self.chunk_period - int(self.hold_first_chunk)
        idx = jnp.clip(block, 0, self.w_start.shape[0] - 1)
        before = (block < 0)[..., None]
        w_b = jnp.where(before, self.initial, self.w_start[idx])
        d_b = jnp.where(before, 0.0, self.d[idx])
        return w_b, d_b, minutes % self.chunk_period
