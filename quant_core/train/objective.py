"""Pool objectives: many parameter sets scored in one batched, compiled forward pass.

`PoolEvaluator` runs the pool once over a window for a batch of parameter sets and scores
segments of the one value path (train part / validation part, or sub-periods), so a held-out
part is evaluated as the continuation of the same pool, never restarted. `PoolObjective` is the
one-metric, one-segment case the searches maximise.
"""

from __future__ import annotations

import functools
from datetime import datetime

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.metrics import Benchmarks, benchmarks_for, get_metric
from quant_core.sim.resolve import initial_weights
from quant_core.sim.settings import required_series, static_settings
from quant_core.sim.simulate import compiled_forward, run_device
from quant_core.sim.window import plan_window, sorted_panel_rows
from quant_core.spec import RunSpec

Segment = tuple[int, int]  # [lo, hi) data steps of the evaluated window


def segment_scores(values, prices, w0, v0, metric_names: tuple[str, ...], segments: tuple[Segment, ...],
                   steps_per_day: int) -> jax.Array:
    """[n_metrics, n_segments] for one value path [S] (prices [S, n] in the numeraire)."""
    bench = benchmarks_for(prices, w0, v0)
    out = []
    for name in metric_names:
        fn = get_metric(name)
        row = []
        for lo, hi in segments:
            seg_bench = Benchmarks(*(b[lo:hi] for b in bench))
            row.append(fn(values[lo:hi], steps_per_day, seg_bench))
        out.append(jnp.stack(row))
    return jnp.stack(out)


@functools.lru_cache(maxsize=32)
def _compiled_scores(st, metric_names: tuple[str, ...], segments: tuple[Segment, ...], steps_per_day: int):
    """One compiled scorer per static settings: folds of equal length share it."""
    forward = compiled_forward(st, batched=True)

    # a target-weight rule started at its first target holds those weights at minute 0: HODL starts from them
    # (as the reference's benchmark and SimResult.summary); every other pool starts at w0
    starts_at_target = st.pool.rule.outputs_weights and st.target_weights_start == "first_target"

    @jax.jit
    def score(rows, params, w0, v0):
        values, weights, _ = forward(rows, params, w0, v0, {})
        prices = rows[st.warmup_rows : st.warmup_rows + st.n_steps]
        if st.numeraire_index is not None:
            prices = prices / prices[:, st.numeraire_index : st.numeraire_index + 1]
        return jax.vmap(lambda v, w: segment_scores(v, prices, w[0] if starts_at_target else w0, v0, metric_names,
                                                    segments, steps_per_day))(values, weights)

    return score


def check_trainable_series(spec: RunSpec, st) -> None:
    """Training feeds prices only; rules that need other series are simulated with aux=... instead."""
    per_row, per_minute = required_series(st)
    needs = per_row + per_minute
    if needs:
        raise ValueError(f"training rule {spec.rule!r}{' with do_trades' if spec.do_trades else ''} needs the "
                         f"series {needs}, which training does not take yet; simulate it with aux=... instead")


class PoolEvaluator:
    """Scores parameter sets (user units, {name: [B, n]}) on segments of one window of a panel.

    The compiled function depends only on shapes and static settings, so folds of equal length
    reuse one compilation."""

    def __init__(
        self,
        panel: PricePanel,
        spec: RunSpec,
        start: datetime | None = None,
        end: datetime | None = None,
        metrics: tuple[str, ...] | None = None,
        segments: tuple[Segment, ...] | None = None,
    ) -> None:
        self.spec = spec
        self.window = plan_window(panel, spec, start, end)
        self.metric_names = tuple(metrics or (spec.return_val,))
        for name in self.metric_names:
            get_metric(name)  # fail early on an unknown name
        self.segments = tuple(segments or ((0, self.window.n_steps),))
        for lo, hi in self.segments:
            if not 0 <= lo < hi <= self.window.n_steps or hi - lo < 2:
                raise ValueError(f"segment [{lo}, {hi}) does not fit the window of {self.window.n_steps} steps")
        st = static_settings(spec, self.window)
        check_trainable_series(spec, st)
        self._device = functools.partial(run_device, st)
        self._score = _compiled_scores(st, self.metric_names, self.segments, self.window.steps_per_day)
        with self._device():
            self._rows = jnp.asarray(sorted_panel_rows(panel, spec)[self.window.first_row : self.window.end_row])
            self._w0 = jnp.asarray(initial_weights(spec))
            self._v0 = jnp.float64(spec.initial_pool_value)

    def scores(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """[B, n_metrics, n_segments]; non-finite scores become -inf (a failed candidate)."""
        with self._device(sets=len(next(iter(params.values())))):
            batch = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
            out = np.asarray(self._score(self._rows, batch, self._w0, self._v0))
        return np.where(np.isfinite(out), out, -np.inf)


class PoolObjective(PoolEvaluator):
    """One metric (default: the spec's return_val) over one window: {name: [B, n]} -> [B]."""

    def __init__(
        self,
        panel: PricePanel,
        spec: RunSpec,
        start: datetime | None = None,
        end: datetime | None = None,
        metric: str | None = None,
    ) -> None:
        super().__init__(panel, spec, start, end, metrics=(metric or spec.return_val,))
        self.metric_name = self.metric_names[0]

    def __call__(self, params: dict[str, np.ndarray]) -> np.ndarray:
        return self.scores(params)[:, 0, 0]


def batched_values(panel: PricePanel, spec: RunSpec, params: list[dict], start: datetime | None = None,
                   end: datetime | None = None) -> np.ndarray:
    """Value paths [K, S] of K parameter sets (user units) over [start, end), in one vmapped pass."""
    from quant_core.sim.resolve import resolve_params

    window = plan_window(panel, spec, start, end)
    st = static_settings(spec, window)
    check_trainable_series(spec, st)
    resolved = [resolve_params(spec, p) for p in params]
    batch = {k: np.stack([r[k] for r in resolved]) for k in resolved[0]}
    with run_device(st, sets=len(params)):
        rows = jnp.asarray(sorted_panel_rows(panel, spec)[window.first_row : window.end_row])
        values, _, _ = compiled_forward(st, batched=True)(
            rows, {k: jnp.asarray(v) for k, v in batch.items()}, jnp.asarray(initial_weights(spec)),
            jnp.float64(spec.initial_pool_value), {})
    return np.asarray(values)
