"""A pool objective: many parameter sets scored in one batched, compiled forward pass."""

from __future__ import annotations

import functools
from datetime import datetime

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.metrics import benchmarks_for, get_metric
from quant_core.sim.simulate import (
    compiled_forward,
    initial_weights,
    plan_window,
    required_series,
    run_device,
    sorted_panel_rows,
    static_settings,
)
from quant_core.spec import RunSpec


@functools.lru_cache(maxsize=32)
def _compiled_score(st, metric_name: str, steps_per_day: int):
    """One compiled scorer per static settings: folds of equal length share it."""
    forward = compiled_forward(st, batched=True)
    metric_fn = get_metric(metric_name)

    @jax.jit
    def score(rows, params, w0, v0):
        values, _, _ = forward(rows, params, w0, v0, {})
        prices = rows[st.warmup_rows :]
        if st.numeraire_index is not None:
            prices = prices / prices[:, st.numeraire_index : st.numeraire_index + 1]
        bench = benchmarks_for(prices, w0, v0)
        return jax.vmap(lambda v: metric_fn(v, steps_per_day, bench))(values)

    return score


class PoolObjective:
    """Scores parameter sets (user units, [B, n] per parameter) on one window of a panel.

    The compiled function depends only on shapes and static settings, so folds of equal length
    reuse one compilation."""

    def __init__(
        self,
        panel: PricePanel,
        spec: RunSpec,
        start: datetime | None = None,
        end: datetime | None = None,
        metric: str | None = None,
    ) -> None:
        self.spec = spec
        self.window = plan_window(panel, spec, start, end)
        self.metric_name = metric or spec.return_val
        get_metric(self.metric_name)  # fail early on an unknown name
        st = static_settings(spec, self.window)
        per_row, per_minute = required_series(st)
        needs = per_row + per_minute
        if needs:
            raise ValueError(f"training rule {spec.rule!r}{' with do_trades' if spec.do_trades else ''} needs the "
                             f"series {needs}, which training does not take yet; simulate it with aux=... instead")
        self._device = functools.partial(run_device, st)
        self._score = _compiled_score(st, self.metric_name, self.window.steps_per_day)
        with self._device():
            self._rows = jnp.asarray(sorted_panel_rows(panel, spec)[self.window.first_row : self.window.end_row])
            self._w0 = jnp.asarray(initial_weights(spec))
            self._v0 = jnp.float64(spec.initial_pool_value)

    def __call__(self, params: dict[str, np.ndarray]) -> np.ndarray:
        with self._device():
            batch = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
            out = np.asarray(self._score(self._rows, batch, self._w0, self._v0))
        return np.where(np.isfinite(out), out, -np.inf)
