"""One forward pass of a pool: prices x rule x parameters x run spec -> values, weights, reserves.

Index conventions follow the reference simulator (docs/tfmm-reference-details.md, sections 0-5):
the estimator runs on chunk prices from the warm-up start; the weight change applied in bout
chunk c comes from the gradient that includes the price at the start of chunk c+1, and the
weights start ramping at that same minute, so nothing uses a later price. Target-weight rules
start and move as the reference runs them (`engines.weight_schedule`): for min_variance that
reads one chunk ahead, up to one chunk past the window's end (`rows_past_end`). Outputs are
reported at every data step from the start (inclusive) to the end (exclusive).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from quant_core.data.panel import PricePanel
from quant_core.sim.amm.g3m import g3m_minute_log_growth, g3m_minute_log_growth_at, g3m_step_log_growth
from quant_core.sim.amm.gyroscope_fit import check_start_shares
from quant_core.sim.dynamic_fees import momentum_fee_hook
from quant_core.sim.engines import (
    fee_kernel_runs,
    gyroscope_engine,
    minute_log_prices,
    rebalancing_values,
    step_engine,
    weight_schedule,
)
from quant_core.sim.native_build import check_switches
from quant_core.sim.resolve import initial_weights, resolve_params
from quant_core.sim.settings import StaticSettings, required_series, static_settings
from quant_core.sim.token_sum import token_sum
from quant_core.sim.window import SimulationInputError, SimWindow, plan_window, sorted_panel_rows
from quant_core.spec import RunSpec


def _forward(st: StaticSettings, rows: jax.Array, params: dict[str, jax.Array], w0: jax.Array, v0: jax.Array,
             aux: dict[str, jax.Array] | None = None):
    """values [S], weights [S, n], reserves [S, n] (and, with st.report, a dict of extras)."""
    pool = st.pool
    aux = aux or {}
    raw_rows = rows  # in the data's quote: what the momentum_fee__ hook reads, as the reference's
    if st.numeraire_index is not None:
        rows = rows / rows[:, st.numeraire_index : st.numeraire_index + 1]
    prices = rows[st.warmup_rows : st.warmup_rows + st.n_steps]  # rows may run past the end (`rows_past_end`)
    log_prices = jnp.log(prices)
    m = st.step_minutes
    boundary_minutes = jnp.arange(st.n_steps) * m
    extras: dict[str, jax.Array] = {}

    if pool.engine == "hodl":
        reserves = jnp.broadcast_to(v0 * w0 / prices[0], prices.shape)
        values = token_sum(reserves * prices, keepdims=False)
        weights = reserves * prices / values[:, None]
        extras["fee_revenue"] = jnp.zeros_like(values)
        return (values, weights, reserves, extras) if st.report else (values, weights, reserves)

    if pool.engine == "gyroscope" and not st.minute_grid:
        reserves = gyroscope_engine(st, prices, params, v0)
        values = token_sum(reserves * prices, keepdims=False)
        weights = reserves * prices / values[:, None]
        extras["fee_revenue"] = jnp.zeros_like(values)
        if st.report:
            minute_prices = jnp.exp(minute_log_prices(log_prices, m))
            minute_weights = jnp.repeat(weights, m, axis=0)[: minute_prices.shape[0]]
            extras["rebalancing_values"] = rebalancing_values(v0, minute_prices, minute_weights, m)
            return values, weights, reserves, extras
        return values, weights, reserves

    schedule = weight_schedule(pool, st, rows, params, w0, aux)
    w0 = schedule.initial  # the weights at minute 0 (a target rule's first target): R_0 = V_0 w_0 / p_0
    weights = schedule.per_minute(st.n_steps) if m == 1 else schedule.at(boundary_minutes)
    if not st.minute_grid:
        if m == 1:  # minute data: the per-minute sums directly (no sub-step sums to take)
            values = v0 * jnp.exp(g3m_minute_log_growth(prices, weights))
        else:
            values = v0 * jnp.exp(g3m_step_log_growth(log_prices, schedule, m))
        reserves = values[:, None] * weights / prices  # arbitrage keeps R_i p_i = w_i V
        extras["fee_revenue"] = jnp.zeros_like(values)
        minute_prices = minute_weights = None
    else:
        minute_lp = minute_log_prices(log_prices, m)
        minute_prices = jnp.exp(minute_lp)
        minute_weights = schedule.per_minute(minute_lp.shape[0])
        if pool.engine == "gyroscope" and pool.rebalancer:
            minute_weights = _gyroscope_zero_fee_weights(st, minute_prices, params, v0)
        if pool.has("momentum_fee"):
            aux = {**aux, "dynamic_fees": momentum_fee_hook(
                raw_rows, params, stride=st.stride, start_row=st.warmup_rows, n_minutes=minute_lp.shape[0],
                chunk_period=st.chunk_period, max_memory_days=st.max_memory_days, token_index=0,
                timing=st.momentum_fee_timing, reference_constants=st.momentum_fee_reference_constants,
                method=st.rule_context.method)}
        # the reserves at each data step and the fees earned within it, booked at the step's end
        reserves, extras["fee_revenue"] = step_engine(pool, st, minute_prices, minute_weights, params, w0, v0, aux)
        values = token_sum(reserves * prices, keepdims=False)
        if pool.engine in ("gyroscope", "reclamm"):  # weights as the value shares the reserves hold
            weights = reserves * prices / values[:, None]
    if st.report:
        if minute_prices is None:
            minute_prices = jnp.exp(minute_log_prices(log_prices, m))
            minute_weights = schedule.per_minute(minute_prices.shape[0])
        if pool.engine in ("gyroscope", "reclamm") and not pool.rebalancer:
            minute_weights = jnp.repeat(weights, m, axis=0)[: minute_prices.shape[0]]
        extras["rebalancing_values"] = rebalancing_values(v0, minute_prices, minute_weights, m)
        return values, weights, reserves, extras
    return values, weights, reserves


def _gyroscope_zero_fee_weights(st: StaticSettings, minute_prices, params, v0):
    """What lvr__/rvr__ rebalance to on a Gyroscope pool: the E-CLP's empirical weights (value shares) on its
    zero-fee path, as the reference's hooks take them (GyroscopePool.calculate_weights)."""
    reserves = gyroscope_engine(dataclasses.replace(st, fees=0.0, gas_cost=0.0, arb_fees=0.0), minute_prices,
                                params, v0)
    value = reserves * minute_prices
    return value / token_sum(value)


def values_at_supported(st: StaticSettings) -> bool:
    """Whether `values_at` applies: minute data, zero costs, a G3M pool with linearly ramped weights."""
    return st.step_minutes == 1 and not st.minute_grid and st.pool.engine == "g3m"


def values_at(st: StaticSettings, rows: jax.Array, params: dict[str, jax.Array], w0: jax.Array, v0: jax.Array,
              minutes: jax.Array) -> jax.Array:
    """Pool values at the given evaluated minutes [Q] (`_forward`'s values[minutes]), summed per chunk
    (`g3m_minute_log_growth_at`): training on a daily metric needs no per-minute path."""
    if not values_at_supported(st):
        raise ValueError("values_at needs minute data, zero costs and a G3M pool with linear interpolation")
    if st.numeraire_index is not None:
        rows = rows / rows[:, st.numeraire_index : st.numeraire_index + 1]
    schedule = weight_schedule(st.pool, st, rows, params, w0, {})
    prices = rows[st.warmup_rows : st.warmup_rows + st.n_steps]
    return v0 * jnp.exp(g3m_minute_log_growth_at(jnp.log(prices), schedule, minutes))


def rows_past_end(st: StaticSettings) -> int:
    """Price rows after the window's end that the rule reads when the data has them.

    A target rule started at its first target (the reference's timing, `weight_schedule`) ramps in
    chunk c towards its output row c+1; min_variance's row c+1 holds the return into the next chunk,
    so the last chunk reads the price at the next chunk boundary, up to one chunk past the window, as
    the reference does. Delta rules and target rules started at their initial weights (one chunk
    later) read nothing past the end. Without those rows the last chunk uses the window's last price."""
    if not (st.pool.rule.kind == "dynamic" and st.pool.rule.outputs_weights
            and st.target_weights_start == "first_target"):
        return 0
    return -(-st.n_steps // st.stride) * st.stride - st.n_steps + 1


@functools.lru_cache(maxsize=64)
def compiled_forward(st: StaticSettings, batched: bool = False):
    """jit(forward) for these static settings; batched=True vmaps over a leading parameter axis."""
    fn = functools.partial(_forward, st)
    if batched:
        fn = jax.vmap(fn, in_axes=(None, 0, None, None, None))
    return jax.jit(fn)


# Fewest parameter sets for which a fee pass the GPU kernel runs stays on a GPU. The kernel's time hardly
# depends on the batch (one thread per set, the minutes in sequence: 7.0 s for a year of minutes on an H200 for
# 1,024 sets, against 33 s for the scan on its 16-core host), whereas the scan on one CPU thread (a search's on
# a GPU machine, quant_core.train.threads) takes ~0.2 s per set and year: one set or a small batch is faster there.
GPU_FEE_MIN_SETS = 32


def run_device(st: StaticSettings, differentiated: bool = False, sets: int = 1) -> contextlib.AbstractContextManager:
    """Where a forward pass of `sets` parameter sets runs: the sequential per-minute scans (fees, CoW, Gyroscope,
    hooks) take tens of microseconds per step on a GPU against under one on the CPU (a year of minutes with
    fees: 22 s on an H200, 0.4 s on 2 CPU cores), so on a GPU machine they are placed on the CPU; the
    closed-form zero-fee pass stays on the default device, and so does a batch of GPU_FEE_MIN_SETS or more
    whose fee pass the GPU kernel runs (engines.fee_kernel_runs; forward only: a derivative takes the scan,
    `differentiated`)."""
    gpu_kernel = fee_kernel_runs(st) and not differentiated and sets >= GPU_FEE_MIN_SETS
    if st.minute_grid and jax.default_backend() != "cpu" and not gpu_kernel:
        return jax.default_device(jax.devices("cpu")[0])
    return contextlib.nullcontext()


@dataclass(frozen=True)
class SimResult:
    timestamps: np.ndarray  # datetime64[ms], one per data step in [start, end)
    tokens: tuple[str, ...]  # alphabetical (the order of per-token arrays)
    values: np.ndarray  # [S] pool value in the numeraire (the data's quote, USD, by default)
    weights: np.ndarray  # [S, n] weights held at each step
    reserves: np.ndarray  # [S, n] token amounts
    prices: np.ndarray  # [S, n]
    steps_per_day: int
    fee_revenue: np.ndarray | None = None  # [S] fees the pool earned during each step (0 at the first)
    rebalancing_values: np.ndarray | None = None  # [S] a CEX portfolio rebalanced each minute to the same weights
    substepped: bool = False  # data coarser than a minute was stepped through log-linearly interpolated minutes
    engine: str = "g3m"

    @property
    def lvr(self) -> np.ndarray | None:
        """Cumulative loss-versus-rebalancing [S]: the rebalancing portfolio's value minus the pool's."""
        return None if self.rebalancing_values is None else self.rebalancing_values - self.values

    def summary(self) -> dict[str, float]:
        """Every registered return metric of the value path, the HODL-relative ones included."""
        from quant_core import metrics

        bench = metrics.benchmarks_for(self.prices, self.weights[0], self.values[0])
        return metrics.summary(self.values, self.steps_per_day, bench)

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


def simulate(
    panel: PricePanel,
    spec: RunSpec,
    params: dict | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    aux: dict[str, np.ndarray] | None = None,
) -> SimResult:
    """Simulate the spec's pool over [start, end) (default: startDateString .. endDateString).

    `aux` holds extra series some pools need: per price-data row, the rule inputs such as
    `market_cap` [rows, n] (index_market_cap); per minute of the run, `spread` [T, n] for rvr__
    and `trades` for do_trades (see quant_core.sim.amm.g3m_fees)."""
    check_switches()
    window = plan_window(panel, spec, start, end)
    st = static_settings(spec, window, report=True)
    tail = min(rows_past_end(st), len(panel.timestamps) - window.end_row)
    rows = sorted_panel_rows(panel, spec)[window.first_row : window.end_row + tail]
    with run_device(st):
        resolved = {k: jnp.asarray(v) for k, v in resolve_params(spec, params).items()}
        aux_arrays = _check_aux(st, spec, window, aux, len(panel.timestamps), tail)
        values, weights, reserves, extras = compiled_forward(st)(
            jnp.asarray(rows), resolved, jnp.asarray(initial_weights(spec)), jnp.float64(spec.initial_pool_value),
            aux_arrays,
        )
    prices = rows[window.warmup_rows : window.end_row - window.first_row]
    if spec.numeraire:
        prices = prices / prices[:, [spec.sorted_tokens.index(spec.numeraire)]]
    if st.gyro_weights is not None:  # lam and phi were solved from initial_weights: refuse a start that misses them
        check_start_shares(weights[0], st.gyro_weights, prices[0], float(resolved["alpha"][0]),
                           float(resolved["beta"][0]), numeraire_first=st.gyro_numeraire_first,
                           tokens=tuple(spec.sorted_tokens))
    return SimResult(
        timestamps=panel.timestamps[window.start_row : window.end_row],
        tokens=tuple(spec.sorted_tokens),
        values=np.asarray(values),
        weights=np.asarray(weights),
        reserves=np.asarray(reserves),
        prices=prices,
        steps_per_day=window.steps_per_day,
        fee_revenue=np.asarray(extras["fee_revenue"]),
        rebalancing_values=None if "rebalancing_values" not in extras else np.asarray(extras["rebalancing_values"]),
        substepped=st.minute_grid and window.step_minutes > 1,
        engine=st.pool.rebalancer or st.pool.engine,
    )


def _check_aux(st: StaticSettings, spec: RunSpec, window: SimWindow, aux: dict[str, np.ndarray] | None,
               panel_rows: int, tail: int = 0) -> dict[str, jax.Array]:
    """The extra series the pool needs, checked and cut to the run.

    Rule inputs (e.g. `market_cap` for index_market_cap) are per panel row [rows, n], like the prices,
    so the estimators can warm up on them (cut as the prices are, `tail` rows past the end included);
    market series (`spread` for rvr__, `trades` for do_trades) are per minute of the evaluated window [T, ...]."""
    aux = dict(aux or {})
    n_minutes = (st.n_steps - 1) * st.step_minutes + 1
    per_row, per_minute = required_series(st)
    missing = [k for k in per_row + per_minute if k not in aux]
    if st.pool.engine == "trad_hodling" and "spread" in aux:
        per_minute.append("spread")  # optional: the CEX portfolio pays half the spread when given
    if missing:
        raise SimulationInputError(
            f"rule {spec.rule!r}{' with do_trades' if spec.do_trades else ''} needs the series {missing}: pass "
            f"aux={{name: array}} with {per_row or 'no'} per price-data row [{panel_rows}, {st.n_tokens}] and "
            f"{per_minute or 'no'} per minute of the run [{n_minutes}, ...] (spread: fractional CEX spreads per "
            "token; trades: see quant_core.sim.amm.g3m_fees)")
    out = {}
    for k in per_row:
        arr = jnp.asarray(aux[k], dtype=jnp.float64)
        if arr.shape != (panel_rows, st.n_tokens):
            raise SimulationInputError(f"aux[{k!r}] has shape {arr.shape}; it needs one value per price-data row "
                                       f"and token (alphabetical): ({panel_rows}, {st.n_tokens})")
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise SimulationInputError(f"aux[{k!r}] holds NaN or infinite values; fill or drop those rows")
        out[k] = arr[window.first_row : window.end_row + tail]
    for k in per_minute:
        arr = jnp.asarray(aux[k], dtype=jnp.float64)
        if arr.shape[0] != n_minutes:
            raise SimulationInputError(f"aux[{k!r}] has {arr.shape[0]} rows; the run covers {n_minutes} minutes")
        out[k] = arr
    return out
