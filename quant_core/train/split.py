"""How a training period is split and sampled: validation hold-out and bout_offset windows.

In data steps (minutes for minute data), following seed 001's "bout_offset (Temporal Sampling
Range)": the period [start, end) holds B steps; the last val_len = int(B * val_fraction) are held
out for validation, leaving eff = B - val_len. Every gradient window has the same length
W = eff - R, R = bout_offset (converted to data steps), and starts at an offset drawn from [0, R)
(uniformly, or with sample_method "exponential" with probability proportional to exp(5 o / R),
favouring recent starts), without replacement while R >= the batch size. sample_method "stratified"
cuts [0, R) into batch-size equal segments (integer edges) and draws one offset uniformly in each, so
every batch covers the whole range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.sim.window import plan_window
from quant_core.spec import RunSpec


@dataclass(frozen=True)
class TrainSplit:
    n_steps: int  # B: data steps in [start, end)
    train_steps: int  # eff: the part training windows are drawn from
    offset_range: int  # R: window start offsets are drawn from [0, R)
    window_steps: int  # W = eff - R: every window's length
    step_minutes: int
    start: datetime
    end: datetime

    @property
    def val_steps(self) -> int:
        return self.n_steps - self.train_steps

    @property
    def train_end(self) -> datetime:
        """The first instant of the validation part (the end of the training part)."""
        return self.start + timedelta(minutes=self.train_steps * self.step_minutes)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """Train (and validation) parts of one continuous pass over [start, end)."""
        return self.scored_segments()

    def scored_segments(self, n_sub_periods: int = 0) -> tuple[tuple[int, int], ...]:
        """[train part, (n_sub_periods equal sub-periods of it), (validation part)] of one pass over
        [start, end), in data steps: what a search scores."""
        segs = [(0, self.train_steps)]
        if n_sub_periods:
            edges = np.linspace(0, self.train_steps, n_sub_periods + 1).astype(int)
            segs += [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        if self.val_steps:
            segs.append((self.train_steps, self.n_steps))
        return tuple(segs)

    def offset_probabilities(self, sample_method: str) -> np.ndarray | None:
        """Start-offset probabilities of sample_method 'exponential'; None for the others (uniform, stratified)."""
        if sample_method != "exponential" or self.offset_range <= 1:
            return None
        p = np.exp(5.0 * np.arange(self.offset_range) / self.offset_range)
        return p / p.sum()


def stratified_offsets(key: Any, offset_range: int, batch: int) -> Any:
    """sample_method 'stratified': [0, offset_range) cut at integer edges into `batch` equal segments, one
    offset drawn uniformly in each (a segment shorter than one step gives its start)."""
    import jax
    import jax.numpy as jnp

    edges = np.linspace(0, offset_range, batch + 1).astype(np.int64)
    sizes = np.maximum(edges[1:] - edges[:-1], 1)
    return jnp.asarray(edges[:-1]) + jax.random.randint(key, (batch,), 0, jnp.asarray(sizes))


def plan_split(panel: PricePanel, spec: RunSpec, start: datetime | None = None, end: datetime | None = None,
               *, min_steps_per_part: int | None = None) -> TrainSplit:
    """The split of [start, end) under the spec's val_fraction and bout_offset; raises naming the
    setting to change when a part would be too short to score."""
    start, end = start or spec.start, end or spec.end
    window = plan_window(panel, spec, start, end)
    step = window.step_minutes
    b = window.n_steps
    val = int(b * spec.optimisation_settings.val_fraction)
    eff = b - val
    r = spec.bout_offset // step
    w = eff - r
    need = min_steps_per_part or 2 * window.steps_per_day + 1  # two daily returns at least
    if val and val < need:
        raise ValueError(f"optimisation_settings.val_fraction {spec.optimisation_settings.val_fraction} holds out "
                         f"{val} steps of {b}; the validation part needs at least {need}: raise val_fraction, "
                         "lengthen the period, or set val_fraction: 0")
    if w < need:
        raise ValueError(f"bout_offset ({spec.bout_offset} min = {r} steps) leaves training windows of {w} steps "
                         f"(the training part holds {eff}); they need at least {need}: lower bout_offset or "
                         "val_fraction, or lengthen the period ((1 - val_fraction) x length > bout_offset)")
    return TrainSplit(b, eff, r, w, step, start, end)
