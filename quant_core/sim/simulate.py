"""One forward pass of a pool: prices x rule x parameters x run spec -> values, weights, reserves.

Index conventions follow the reference simulator (docs/tfmm-reference-details.md, sections 0-5):
the estimator runs on chunk prices from the warm-up start; the weight change applied in bout
chunk c comes from the gradient that includes the price at the start of chunk c+1, and the
weights start ramping at that same minute, so nothing uses a later price. Outputs are reported
at every data step from the start (inclusive) to the end (exclusive).
"""

from __future__ import annotations

import contextlib
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
from quant_core.sim.amm.cow import cow_reserves
from quant_core.sim.amm.g3m import (
    g3m_log_reserves_from_minute_weights,
    g3m_minute_log_growth,
    g3m_minute_log_growth_at,
    g3m_step_log_growth,
)
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees
from quant_core.sim.amm.gyroscope import gyroscope_reserves
from quant_core.sim.amm.hodling import trad_hodling_reserves, trading_mask, trading_steps_per_year
from quant_core.sim.hooks import ensemble_mean, rebalancing_log_growth
from quant_core.sim.pool import BOUND_PARAMS, Pool, check_bounds, get_pool
from quant_core.sim.registry import RuleContext
from quant_core.sim.token_sum import token_sum
from quant_core.sim.weights import WeightSchedule, chunk_weights
from quant_core.spec import RunSpec
from quant_core.units import MINUTES_PER_DAY


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
    max_memory_days: float  # after the reference's cap for short histories (see plan_window)

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
    """Rows for a run over [start, end) (default: the spec's start/end) and the estimator warm-up.

    As in the reference simulator: when the data before the start holds fewer than max_memory_days
    days, max_memory_days becomes (days before the start) - 1; the warm-up is ceil(max_memory_days)
    days before the start (rounded down to whole chunks), and the estimators start at its first row."""
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
    days_before = start_row * step / MINUTES_PER_DAY
    memory = spec.max_memory_days
    if days_before < memory and days_before > 1:
        memory = days_before - 1
    warm_rows = min(math.ceil(memory) * MINUTES_PER_DAY // step, start_row)
    warm = (warm_rows // stride) * stride
    return SimWindow(start_row - warm, start_row, end_row, stride, step, memory)


@dataclass(frozen=True)
class _Static:
    """Everything that fixes array shapes or control flow: one compiled function per value."""

    rule: str  # the full name, hooks included
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
    weight_method: str = "scan"  # "scan" | "vectorized" (auto resolved)
    interpolation_method: str = "linear"
    ste_max_change: bool = False
    ste_min_max_weight: bool = False
    use_pre_exp_scaling: bool = True
    use_alt_lamb: bool = False
    # market: any cost or arb spacing selects the sequential minute scan
    fees: float = 0.0
    gas_cost: float = 0.0
    arb_fees: float = 0.0
    arb_frequency: int = 1
    noise_trader_ratio: float = 0.0
    do_arb: bool = True
    do_trades: bool = False
    arb_quality: float = 1.0
    annual_streaming_fee: float = 0.04
    invariant_tolerance: float = 1e-9
    report: bool = False  # also compute the reporting extras (fee revenue, LVR benchmark)
    gyro_numeraire_first: bool = False  # gyroscope: the numeraire is the first token, so swap the pair

    @property
    def pool(self) -> Pool:
        return get_pool(self.rule)

    @property
    def with_costs(self) -> bool:
        return (self.fees > 0 or self.gas_cost > 0 or self.arb_fees > 0 or self.arb_frequency > 1
                or self.noise_trader_ratio > 0 or not self.do_arb or self.do_trades)

    @property
    def minute_grid(self) -> bool:
        """Step through every minute (prices interpolated between data rows) rather than summing the
        zero-fee closed form per data step."""
        p = self.pool
        return self.with_costs or p.rebalancer is not None or p.engine in ("cow", "hodling", "trad_hodling") or (
            self.interpolation_method != "linear" and p.engine == "g3m")

    @property
    def rule_context(self) -> RuleContext:
        return RuleContext(self.chunk_period, self.max_memory_days, self.weight_method,
                           self.use_pre_exp_scaling, self.use_alt_lamb)


def _minute_log_prices(log_prices: jax.Array, step_minutes: int) -> jax.Array:
    """Log prices at every minute from the first to the last data row, linear in between."""
    if step_minutes == 1:
        return log_prices
    frac = (jnp.arange(step_minutes, dtype=log_prices.dtype) / step_minutes)[None, :, None]
    inner = log_prices[:-1, None, :] + frac * (log_prices[1:] - log_prices[:-1])[:, None, :]
    return jnp.concatenate([inner.reshape(-1, log_prices.shape[1]), log_prices[-1:]], axis=0)


def _forward(st: _Static, rows: jax.Array, params: dict[str, jax.Array], w0: jax.Array, v0: jax.Array,
             aux: dict[str, jax.Array] | None = None):
    """values [S], weights [S, n], reserves [S, n] (and, with st.report, a dict of extras)."""
    pool = st.pool
    aux = aux or {}
    if st.numeraire_index is not None:
        rows = rows / rows[:, st.numeraire_index : st.numeraire_index + 1]
    prices = rows[st.warmup_rows :]
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
        reserves = _gyroscope(st, prices, params, v0)
        values = token_sum(reserves * prices, keepdims=False)
        weights = reserves * prices / values[:, None]
        extras["fee_revenue"] = jnp.zeros_like(values)
        if st.report:
            minute_prices = jnp.exp(_minute_log_prices(log_prices, m))
            minute_weights = jnp.repeat(weights, m, axis=0)[: minute_prices.shape[0]]
            extras["rebalancing_values"] = _rebalancing_values(v0, minute_prices, minute_weights, m)
            return values, weights, reserves, extras
        return values, weights, reserves

    schedule = _schedule(pool, st, rows, params, w0, aux)
    weights = schedule.per_minute(st.n_steps) if m == 1 else schedule.at(boundary_minutes)
    if not st.minute_grid:
        if m == 1:  # minute data: the per-minute sums directly (no sub-step sums to take)
            values = v0 * jnp.exp(g3m_minute_log_growth(log_prices, weights))
        else:
            values = v0 * jnp.exp(g3m_step_log_growth(log_prices, schedule, m))
        reserves = values[:, None] * weights / prices  # arbitrage keeps R_i p_i = w_i V
        extras["fee_revenue"] = jnp.zeros_like(values)
        minute_prices = minute_weights = None
    else:
        minute_lp = _minute_log_prices(log_prices, m)
        minute_prices = jnp.exp(minute_lp)
        minute_weights = schedule.per_minute(minute_lp.shape[0])
        minute_reserves, fee_revenue = _minute_engine(pool, st, minute_prices, minute_weights, params, w0, v0, aux)
        reserves = minute_reserves[::m]
        values = token_sum(reserves * prices, keepdims=False)
        if pool.engine == "gyroscope":
            weights = reserves * prices / values[:, None]
        # fees earned within each data step, booked at the step's end
        per_step = jnp.sum(fee_revenue[1:].reshape(st.n_steps - 1, m), axis=1)
        extras["fee_revenue"] = jnp.concatenate([fee_revenue[:1], per_step])
    if st.report:
        if minute_prices is None:
            minute_prices = jnp.exp(_minute_log_prices(log_prices, m))
            minute_weights = schedule.per_minute(minute_prices.shape[0])
        if pool.engine == "gyroscope":
            minute_weights = jnp.repeat(weights, m, axis=0)[: minute_prices.shape[0]]
        extras["rebalancing_values"] = _rebalancing_values(v0, minute_prices, minute_weights, m)
        return values, weights, reserves, extras
    return values, weights, reserves


def values_at_supported(st: _Static) -> bool:
    """Whether `values_at` applies: minute data, zero costs, a G3M pool with linearly ramped weights."""
    return st.step_minutes == 1 and not st.minute_grid and st.pool.engine == "g3m"


def values_at(st: _Static, rows: jax.Array, params: dict[str, jax.Array], w0: jax.Array, v0: jax.Array,
              minutes: jax.Array) -> jax.Array:
    """Pool values at the given evaluated minutes [Q] (`_forward`'s values[minutes]), summed per chunk
    (`g3m_minute_log_growth_at`): training on a daily metric needs no per-minute path."""
    if not values_at_supported(st):
        raise ValueError("values_at needs minute data, zero costs and a G3M pool with linear interpolation")
    if st.numeraire_index is not None:
        rows = rows / rows[:, st.numeraire_index : st.numeraire_index + 1]
    schedule = _schedule(st.pool, st, rows, params, w0, {})
    return v0 * jnp.exp(g3m_minute_log_growth_at(jnp.log(rows[st.warmup_rows :]), schedule, minutes))


def _rebalancing_values(v0, minute_prices, minute_weights, m: int) -> jax.Array:
    """The LVR benchmark at each data step: a zero-fee CEX portfolio rebalanced every minute to the weights."""
    return v0 * jnp.exp(jnp.cumsum(rebalancing_log_growth(minute_prices, minute_weights, 0.0)))[::m]


def _minute_engine(pool: Pool, st: _Static, prices, weights, params, w0, v0, aux):
    """Reserves [T, n] and fee revenue [T] on the minute grid."""
    if pool.rebalancer is not None:
        spread = None
        if pool.rebalancer == "rvr":
            spread = aux["spread"]
        growth = rebalancing_log_growth(prices, weights, st.fees, spread)
        values = v0 * jnp.exp(jnp.cumsum(growth))
        return weights * values[:, None] / prices, jnp.zeros_like(values)
    if pool.engine == "cow":
        reserves = cow_reserves(prices, v0 * w0 / prices[0], weights=w0, fees=st.fees,
                                arb_quality=params["arb_quality"][0], gas_cost=st.gas_cost, arb_fees=st.arb_fees,
                                arb_frequency=st.arb_frequency, noise_trader_ratio=st.noise_trader_ratio)
        return reserves, jnp.zeros(prices.shape[0], dtype=prices.dtype)
    if pool.engine == "gyroscope":
        return _gyroscope(st, prices, params, v0), jnp.zeros(prices.shape[0], dtype=prices.dtype)
    if pool.engine == "trad_hodling":
        return _trad_hodling(st, prices, weights, v0, aux), jnp.zeros(prices.shape[0], dtype=prices.dtype)
    if pool.engine == "hodling" and not st.with_costs:
        # Arbitraged only inside each chunk's interpolation window, frozen outside it: the reserves at
        # minute t are the ordinary pool's at the last trading minute <= t. (The reference's zero-fee
        # path instead applies only the one-minute price move when trading resumes, so the drift during
        # a hold is never arbitraged; its fee path does arbitrage it, as here and in our fee path,
        # which closes the pool outside the same mask.)
        log_r = g3m_log_reserves_from_minute_weights(jnp.log(prices), weights, jnp.log(v0 * w0 / prices[0]))
        held = _last_trading_minute(trading_mask(prices.shape[0], st.chunk_period, st.interpolation_period))
        return jnp.exp(log_r[held]), jnp.zeros(prices.shape[0], dtype=prices.dtype)
    if not st.with_costs:
        # zero fees but a non-linear interpolation: the per-minute product, exact
        log_r = g3m_log_reserves_from_minute_weights(jnp.log(prices), weights, jnp.log(v0 * w0 / prices[0]))
        return jnp.exp(log_r), jnp.zeros(prices.shape[0], dtype=prices.dtype)
    out = g3m_reserves_with_fees(
        prices, weights, v0 * w0 / prices[0], fees=st.fees, gas_cost=st.gas_cost, arb_fees=st.arb_fees,
        arb_frequency=st.arb_frequency, noise_trader_ratio=st.noise_trader_ratio,
        trades=aux["trades"] if st.do_trades else None,
        invariant_tolerance=st.invariant_tolerance, do_arb=st.do_arb,
        trade_mask=(trading_mask(prices.shape[0], st.chunk_period, st.interpolation_period)
                    if pool.engine == "hodling" else None),
    )
    return out.reserves, out.fee_revenue


def _last_trading_minute(mask: jax.Array) -> jax.Array:
    """For every minute, the last minute <= it at which the pool traded (0 before the first)."""
    return jnp.maximum(jax.lax.cummax(jnp.where(mask, jnp.arange(mask.shape[0]), -1)), 0)


def _trad_hodling(st: _Static, prices, weights, v0, aux):
    """The CEX index portfolio, rebalanced every arb_frequency minutes inside the windows."""
    f = st.arb_frequency
    spread = aux.get("spread")
    reserves = trad_hodling_reserves(
        prices[::f], weights[::f], v0, trading_mask(prices.shape[0], st.chunk_period, st.interpolation_period, f),
        fees=st.fees, spread=None if spread is None else spread[::f], annual_streaming_fee=st.annual_streaming_fee,
        steps_per_year=trading_steps_per_year(st.chunk_period, st.interpolation_period, f),
    )
    return jnp.repeat(reserves, f, axis=0)[: prices.shape[0]]


def _gyroscope(st: _Static, prices, params, v0):
    """E-CLP reserves: its price range is quoted in the numeraire, which sits second (default: the
    last token alphabetically, as in the reference)."""
    flip = st.gyro_numeraire_first
    ordered = prices[:, ::-1] if flip else prices
    reserves = gyroscope_reserves(
        ordered, v0, alpha=params["alpha"][0], beta=params["beta"][0], lam=params["lam"][0], phi=params["phi"][0],
        fees=st.fees, gas_cost=st.gas_cost, arb_fees=st.arb_fees, arb_frequency=st.arb_frequency,
    )
    return reserves[:, ::-1] if flip else reserves


def _schedule(pool: Pool, st: _Static, rows, params, w0, aux) -> WeightSchedule:
    if pool.rule.kind != "dynamic":
        return WeightSchedule.constant(w0, st.chunk_period)
    rule = pool.rule
    ctx = st.rule_context
    n_chunks = math.ceil(st.n_steps * st.step_minutes / st.chunk_period) + 1
    start_chunk = st.warmup_rows // st.stride
    last_row = rows.shape[0] - 1
    # chunk prices up to the one that informs the last bout chunk; never past the window's last row
    idx = jnp.minimum(jnp.arange(start_chunk + n_chunks + 1) * st.stride, last_row)
    chunk_prices = rows[idx]
    rule_params = {k: v for k, v in params.items() if k not in BOUND_PARAMS}
    rule_aux = {k: aux[k][idx] for k in rule.required_aux}

    def outputs(p):
        return rule.deltas(chunk_prices, p, ctx, rule_aux)

    ensemble = pool.has("ensemble")
    deltas = ensemble_mean(outputs, rule_params) if ensemble else outputs(rule_params)
    bout = deltas[start_chunk + 1 : start_chunk + 1 + n_chunks]
    blend = None
    if rule.outputs_weights:
        # an ensemble of target-weight rules blends the mean target with the members' mean lambda
        blend = (jnp.mean(jax.vmap(lambda p: rule.blend_lamb(p, ctx))(rule_params), axis=0) if ensemble
                 else rule.blend_lamb(rule_params, ctx))
    bounds = (params[BOUND_PARAMS[0]], params[BOUND_PARAMS[1]]) if pool.has("bounded") else None
    w_start, d = chunk_weights(
        w0, bout, minimum_weight=st.minimum_weight, maximum_change=st.maximum_change,
        interpolation_period=st.interpolation_period, blend=blend, bounds=bounds,
        ste_max_change=st.ste_max_change, ste_min_max_weight=st.ste_min_max_weight,
    )
    return WeightSchedule(w0, w_start, d, st.chunk_period, st.interpolation_period, st.interpolation_method)


@functools.lru_cache(maxsize=64)
def compiled_forward(st: _Static, batched: bool = False):
    """jit(forward) for these static settings; batched=True vmaps over a leading parameter axis."""
    fn = functools.partial(_forward, st)
    if batched:
        fn = jax.vmap(fn, in_axes=(None, 0, None, None, None))
    return jax.jit(fn)


def run_device(st: _Static) -> contextlib.AbstractContextManager:
    """Where a forward pass runs: the sequential per-minute scans (fees, CoW, Gyroscope, hooks) take
    tens of microseconds per step on a GPU against under one on the CPU (a year of minutes with fees:
    22 s on an H200, 0.4 s on 2 CPU cores), so on a GPU machine they are placed on the CPU; the
    closed-form zero-fee pass stays on the default device."""
    if st.minute_grid and jax.default_backend() != "cpu":
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


def sorted_panel_rows(panel: PricePanel, spec: RunSpec) -> np.ndarray:
    """Panel prices with columns in alphabetical token order (the simulator's order)."""
    missing = [t for t in spec.tokens if t not in panel.tokens]
    if missing:
        raise SimulationInputError(f"tokens {missing} are not in the price data (it has {list(panel.tokens)})")
    return panel.prices[:, [panel.tokens.index(t) for t in spec.sorted_tokens]]


def resolve_weight_method(spec: RunSpec) -> str:
    """`auto` picks the faster estimator path for the backend: on a GPU the vectorised one (blocked
    solves, parallel over time: 50-200x faster there), on a CPU the scan (5-25x faster there, and
    quicker to compile). Both give the same numbers (tested to 1e-10)."""
    method = spec.weight_calculation_method
    rule = get_pool(spec.rule).rule
    if method == "vectorized" and not rule.supports_vectorized:
        raise ValueError(f"weight_calculation_method 'vectorized' is not available for rule {rule.name!r}; "
                         "use 'scan' or 'auto'")
    if method == "auto":
        return "vectorized" if rule.supports_vectorized and jax.default_backend() != "cpu" else "scan"
    return method


def static_settings(spec: RunSpec, window: SimWindow, *, report: bool = False) -> _Static:
    tokens = spec.sorted_tokens
    st = _Static(
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
        max_memory_days=window.max_memory_days,
        numeraire_index=tokens.index(spec.numeraire) if spec.numeraire else None,
        weight_method=resolve_weight_method(spec),
        interpolation_method=spec.weight_interpolation_method,
        ste_max_change=spec.ste_max_change,
        ste_min_max_weight=spec.ste_min_max_weight,
        use_pre_exp_scaling=spec.use_pre_exp_scaling,
        use_alt_lamb=spec.use_alt_lamb,
        fees=spec.fees,
        gas_cost=spec.gas_cost,
        arb_fees=spec.arb_fees,
        arb_frequency=spec.arb_frequency,
        noise_trader_ratio=spec.noise_trader_ratio,
        do_arb=spec.do_arb,
        do_trades=spec.do_trades,
        arb_quality=spec.arb_quality,
        annual_streaming_fee=spec.annual_streaming_fee,
        report=report,
        gyro_numeraire_first=(spec.numeraire or tokens[-1]) == tokens[0],
    )
    return st


def initial_weights(spec: RunSpec) -> np.ndarray:
    """Initial weights (alphabetical token order): `initial_weights`, else softmax of the logits."""
    n = len(spec.tokens)
    if spec.initial_weights is not None:
        return np.asarray(spec.initial_weights, dtype=np.float64)
    logits = np.broadcast_to(np.asarray(spec.initial_weights_logits, dtype=np.float64), (n,))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def resolve_params(spec: RunSpec, overrides: dict | None = None) -> dict[str, np.ndarray]:
    """Pool parameters in user units, one value per token (alphabetical order); with the
    `ensemble__` hook a leading member axis [M, n] where given so.

    Precedence: `overrides` > the spec's `parameters` > the spec's `initial_*` keys."""
    pool = get_pool(spec.rule)
    n = len(spec.tokens)
    given = {**(spec.parameters or {}), **(overrides or {})}
    out: dict[str, np.ndarray] = {}
    for name, value in given.items():
        p = pool.param(name)  # raises with the valid names
        arr = np.asarray(value, dtype=np.float64)
        members_ok = pool.has("ensemble") and p.name not in BOUND_PARAMS and arr.ndim == 2 and arr.shape[1] == n
        if not members_ok and (arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n)):
            shape = " or [members x tokens] values (ensemble__)" if pool.has("ensemble") else ""
            raise ValueError(f"parameters.{name} must be a number or {n} values{shape}, got shape {arr.shape}")
        out[p.name] = arr.copy() if members_ok else np.broadcast_to(arr, (n,)).copy()
    defaults = pool.initial_params(spec)
    for p in pool.params:
        if p.name not in out:
            out[p.name] = np.asarray(defaults[p.name], dtype=np.float64)
    if pool.has("bounded"):
        check_bounds(out[BOUND_PARAMS[0]], out[BOUND_PARAMS[1]])
    if pool.has("ensemble"):
        members = {v.shape[0] for v in out.values() if v.ndim == 2}
        if len(members) > 1:
            raise ValueError(f"ensemble__ parameters disagree on the number of members: {sorted(members)}")
        m = members.pop() if members else spec.optimisation_settings.n_ensemble_members
        out = {k: (v if v.ndim == 2 or k in BOUND_PARAMS else np.broadcast_to(v, (m, n)).copy())
               for k, v in out.items()}
    return out


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
    window = plan_window(panel, spec, start, end)
    st = static_settings(spec, window, report=True)
    rows = sorted_panel_rows(panel, spec)[window.first_row : window.end_row]
    with run_device(st):
        resolved = {k: jnp.asarray(v) for k, v in resolve_params(spec, params).items()}
        aux_arrays = _check_aux(st, spec, window, aux, len(panel.timestamps))
        values, weights, reserves, extras = compiled_forward(st)(
            jnp.asarray(rows), resolved, jnp.asarray(initial_weights(spec)), jnp.float64(spec.initial_pool_value),
            aux_arrays,
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
        fee_revenue=np.asarray(extras["fee_revenue"]),
        rebalancing_values=None if "rebalancing_values" not in extras else np.asarray(extras["rebalancing_values"]),
        substepped=st.minute_grid and window.step_minutes > 1,
        engine=st.pool.rebalancer or st.pool.engine,
    )


def required_series(st: _Static) -> tuple[list[str], list[str]]:
    """The extra series a run needs besides prices: per price row (rule inputs such as market caps)
    and per minute (rvr__'s spreads, do_trades' trades)."""
    per_minute = (["spread"] if st.pool.rebalancer == "rvr" else []) + (["trades"] if st.do_trades else [])
    return list(st.pool.rule.required_aux), per_minute


def _check_aux(st: _Static, spec: RunSpec, window: SimWindow, aux: dict[str, np.ndarray] | None,
               panel_rows: int) -> dict[str, jax.Array]:
    """The extra series the pool needs, checked and cut to the run.

    Rule inputs (e.g. `market_cap` for index_market_cap) are per panel row [rows, n], like the prices,
    so the estimators can warm up on them; market series (`spread` for rvr__, `trades` for do_trades)
    are per minute of the evaluated window [T, ...]."""
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
        out[k] = arr[window.first_row : window.end_row]
    for k in per_minute:
        arr = jnp.asarray(aux[k], dtype=jnp.float64)
        if arr.shape[0] != n_minutes:
            raise SimulationInputError(f"aux[{k!r}] has {arr.shape[0]} rows; the run covers {n_minutes} minutes")
        out[k] = arr
    return out
