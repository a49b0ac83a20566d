"""One forward pass of a pool: prices x rule x parameters x run spec -> values, weights, reserves.

Index conventions follow the reference simulator (docs/tfmm-reference-details.md, sections 0-5):
the estimator runs on chunk prices from the warm-up start; the weight change applied in bout
chunk c comes from the gradient that includes the price at the start of chunk c+1, and the
weights start ramping at that same minute, so nothing uses a later price. Outputs are reported
at every data step from the start (inclusive) to the end (exclusive).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from quant_core.data.panel import PricePanel
from quant_core.data.schema import to_epoch_ms
from quant_core.sim.amm.g3m import g3m_log_reserves
from quant_core.sim.registry import PoolRule, get_rule
from quant_core.sim.weights import WeightSchedule, chunk_weights
from quant_core.spec import MINUTES_PER_DAY, RunSpec


class SimulationInputError(ValueError):
    """The prices cannot support the requested run (window outside the data, step mismatch)."""


@dataclass(frozen=True)
class SimWindow:
    """Which panel rows a run reads: [first_row, start_row) warm-up, [start_row, end_row) evaluated."""

    first_row: int
    start_row: int
    end_row: int
    stride: int  # panel rows per chunk
    step_minutes: int

    @property
    def n_steps(self) -> int:
        return self.end_row - self.start_row

    @property
    def warmup_rows(self) -> int:
        return self.start_row - self.first_row

    @property
    def steps_per_day(self) -> int:
        return max(1, MINUTES_PER_DAY // self.step_minutes)


def plan_window(
    panel: PricePanel, spec: RunSpec, start: datetime | None = None, end: datetime | None = None
) -> SimWindow:
    """Rows for a run over [start, end) (default: the spec's start/end), with warm-up capped by
    max_memory_days and by the data available before the start."""
    step = panel.step_minutes
    if spec.chunk_period % step:
        raise SimulationInputError(
            f"chunk_period ({spec.chunk_period} min) must be a multiple of the data step ({step} min): "
            f"set chunk_period to {step} x an integer"
        )
    start = start or spec.start
    end = end or spec.end
    stamps = panel.timestamps.astype("datetime64[ms]").astype(np.int64)
    try:
        start_row = panel.index_of(start)
        # the end is exclusive: one step past the last row is allowed
        past_last = to_epoch_ms(end) == stamps[-1] + step * 60_000
        end_row = len(stamps) if past_last else panel.index_of(end)
    except KeyError as exc:
        raise SimulationInputError(
            f"the run window {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} (startDateString/endDateString) "
            f"must fall on the price data's rows: {exc.args[0]}"
        ) from None
    if end_row - start_row < 2:
        raise SimulationInputError(f"window {start} .. {end} holds fewer than 2 data steps")
    stride = spec.chunk_period // step
    max_rows = int(spec.max_memory_days * MINUTES_PER_DAY // step)
    warm = (min(max_rows, start_row) // stride) * stride
    return SimWindow(start_row - warm, start_row, end_row, stride, step)


@dataclass(frozen=True)
class _Static:
    """Everything that fixes array shapes or control flow: one compiled function per value."""

    rule: str
    n_tokens: int
    warmup_rows: int
    n_steps: int
    stride: int
    step_minutes: int
    chunk_period: int
    interpolation_period: int
    minimum_weight: float
    maximum_change: float
    max_memory_days: float
    numeraire_index: int | None


def _forward(st: _Static, rows: jax.Array, params: dict[str, jax.Array], w0: jax.Array, v0: jax.Array):
    rule = get_rule(st.rule)
    if st.numeraire_index is not None:
        rows = rows / rows[:, st.numeraire_index : st.numeraire_index + 1]
    prices = rows[st.warmup_rows :]
    log_prices = jnp.log(prices)
    boundary_minutes = jnp.arange(st.n_steps) * st.step_minutes
    log_r0 = jnp.log(v0 * w0 / prices[0])

    if rule.kind == "hodl":
        log_r = jnp.broadcast_to(log_r0, prices.shape)
        weights = jnp.exp(log_r) * prices
        weights = weights / jnp.sum(weights, axis=1, keepdims=True)
    else:
        if rule.kind == "static_weights":
            schedule = WeightSchedule.constant(w0, st.chunk_period)
        else:
            schedule = _dynamic_schedule(rule, st, rows, params, w0)
        log_r = g3m_log_reserves(log_prices, schedule, st.step_minutes, log_r0)
        weights = schedule.at(boundary_minutes)
    reserves = jnp.exp(log_r)
    values = jnp.sum(reserves * prices, axis=1)
    return values, weights, reserves


def _dynamic_schedule(rule: PoolRule, st: _Static, rows, params, w0) -> WeightSchedule:
    n_chunks = math.ceil(st.n_steps * st.step_minutes / st.chunk_period) + 1
    start_chunk = st.warmup_rows // st.stride
    last_row = rows.shape[0] - 1
    # chunk prices up to the one that informs the last bout chunk; never past the window's last row
    idx = jnp.minimum(jnp.arange(start_chunk + n_chunks + 1) * st.stride, last_row)
    deltas = rule.deltas(rows[idx], params, st.chunk_period, st.max_memory_days)
    bout_deltas = deltas[start_chunk + 1 : start_chunk + 1 + n_chunks]
    w_start, d = chunk_weights(
        w0, bout_deltas, minimum_weight=st.minimum_weight, maximum_change=st.maximum_change,
        interpolation_period=st.interpolation_period,
    )
    return WeightSchedule(w0, w_start, d, st.chunk_period, st.interpolation_period)


@functools.lru_cache(maxsize=64)
def compiled_forward(st: _Static, batched: bool = False):
    """jit(forward) for these static settings; batched=True vmaps over a leading parameter axis."""
    fn = functools.partial(_forward, st)
    if batched:
        fn = jax.vmap(fn, in_axes=(None, 0, None, None))
    return jax.jit(fn)


@dataclass(frozen=True)
class SimResult:
    timestamps: np.ndarray  # datetime64[ms], one per data step in [start, end)
    tokens: tuple[str, ...]  # alphabetical (the order of per-token arrays)
    values: np.ndarray  # [S] pool value in the numeraire (the data's quote, USD, by default)
    weights: np.ndarray  # [S, n] weights held at each step
    reserves: np.ndarray  # [S, n] token amounts
    prices: np.ndarray  # [S, n]
    steps_per_day: int

    def to_frame(self, token_order: list[str] | None = None) -> pl.DataFrame:
        """`timestamp,value,weight_<T>...,reserve_<T>...` with tokens in `token_order`."""
        order = token_order or list(self.tokens)
        cols: dict[str, object] = {
            "timestamp": pl.Series(self.timestamps.astype("datetime64[ms]")).dt.replace_time_zone("UTC"),
            "value": self.values,
        }
        for t in order:
            cols[f"weight_{t}"] = self.weights[:, self.tokens.index(t)]
        for t in order:
            cols[f"reserve_{t}"] = self.reserves[:, self.tokens.index(t)]
        return pl.DataFrame(cols)


def sorted_panel_rows(panel: PricePanel, spec: RunSpec) -> np.ndarray:
    """Panel prices with columns in alphabetical token order (the simulator's order)."""
    missing = [t for t in spec.tokens if t not in panel.tokens]
    if missing:
        raise SimulationInputError(f"tokens {missing} are not in the price data (it has {list(panel.tokens)})")
    return panel.prices[:, [panel.tokens.index(t) for t in spec.sorted_tokens]]


def static_settings(spec: RunSpec, window: SimWindow) -> _Static:
    tokens = spec.sorted_tokens
    return _Static(
        rule=spec.rule,
        n_tokens=len(tokens),
        warmup_rows=window.warmup_rows,
        n_steps=window.n_steps,
        stride=window.stride,
        step_minutes=window.step_minutes,
        chunk_period=spec.chunk_period,
        interpolation_period=spec.weight_interpolation_period,
        minimum_weight=spec.effective_minimum_weight,
        maximum_change=spec.maximum_change,
        max_memory_days=spec.max_memory_days,
        numeraire_index=tokens.index(spec.numeraire) if spec.numeraire else None,
    )


def initial_weights(spec: RunSpec) -> np.ndarray:
    """Initial weights (alphabetical token order): `initial_weights`, else softmax of the logits."""
    n = len(spec.tokens)
    if spec.initial_weights is not None:
        return np.asarray(spec.initial_weights, dtype=np.float64)
    logits = np.broadcast_to(np.asarray(spec.initial_weights_logits, dtype=np.float64), (n,))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def resolve_params(spec: RunSpec, overrides: dict | None = None) -> dict[str, np.ndarray]:
    """Rule parameters in user units, one value per token (alphabetical order).

    Precedence: `overrides` > the spec's `parameters` > the spec's `initial_*` keys."""
    rule = get_rule(spec.rule)
    n = len(spec.tokens)
    given = {**(spec.parameters or {}), **(overrides or {})}
    out: dict[str, np.ndarray] = {}
    for name, value in given.items():
        p = rule.param(name)  # raises with the valid names
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
            raise ValueError(f"parameter {name!r} must be a number or {n} values, got shape {arr.shape}")
        out[p.name] = np.broadcast_to(arr, (n,)).copy()
    for p in rule.params:
        if p.name not in out:
            out[p.name] = np.full(n, float(getattr(spec, p.initial_key)))
    return out


def simulate(
    panel: PricePanel,
    spec: RunSpec,
    params: dict | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> SimResult:
    """Simulate the spec's pool over [start, end) (default: startDateString .. endDateString)."""
    window = plan_window(panel, spec, start, end)
    st = static_settings(spec, window)
    rows = sorted_panel_rows(panel, spec)[window.first_row : window.end_row]
    resolved = {k: jnp.asarray(v) for k, v in resolve_params(spec, params).items()}
    values, weights, reserves = compiled_forward(st)(
        jnp.asarray(rows), resolved, jnp.asarray(initial_weights(spec)), jnp.float64(spec.initial_pool_value)
    )
    prices = rows[window.warmup_rows :]
    if spec.numeraire:
        prices = prices / prices[:, [spec.sorted_tokens.index(spec.numeraire)]]
    return SimResult(
        timestamps=panel.timestamps[window.start_row : window.end_row],
        tokens=tuple(spec.sorted_tokens),
        values=np.asarray(values),
        weights=np.asarray(weights),
        reserves=np.asarray(reserves),
        prices=prices,
        steps_per_day=window.steps_per_day,
    )
