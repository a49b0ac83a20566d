"""Return metrics of a pool value path (JAX, differentiable where the math allows).

Every metric has the signature ``fn(values [T], steps_per_day, benchmarks=None) -> scalar`` and is
"higher is better" so training maximises it: risk measures (drawdowns, volatility, ...) are negated.
``steps_per_day`` must be a static Python int. All metrics work under ``jax.jit`` and ``jax.vmap``.

That negation is the optimiser's business only. What people and traders read (``summary``, evaluations,
training reports, stored versions, exports) carries each metric's natural sign: the metrics in ``NEGATED``
are flipped back (``natural_signs``), so volatility, drawdowns, durations and the ulcer index are positive
and lower is better (``better``); ``maximised`` names what a search maximised ("-ulcer").

Notation. V_t is the value path (one entry per step), v_d = V[::steps_per_day] the day-boundary samples
(d = 0 … D-1; the last partial day is ignored, as in the reference), r_d = v_d[1:]/v_d[:-1] - 1 the daily
arithmetic returns, l_d = diff(log(v_d + 1e-12)) the daily log returns. "std" is the population std
(ddof 0). Small guards: 1e-12 inside logs, 1e-8 added to denominators. years = (T-1) / (365·steps_per_day)
is the elapsed time of the whole path. DD_t = 1 - V_t / max_{s<=t} V_s is the drawdown series.
H_t / U_t are the HODL / uniform-HODL benchmark value paths (same length as V), given by ``Benchmarks``.

Sharpe family
- sharpe:            per-step arithmetic returns s = V[1:]/V[:-1] - 1; sqrt(365·steps_per_day)·mean(s)/(std(s)+1e-8)
- daily_sharpe:      sqrt(365)·mean(r)/(std(r)+1e-8)
- daily_log_sharpe:  sqrt(365)·mean(l)/(std(l)+1e-8)
- sortino:           sqrt(365)·mean(r)/(DD⁻+1e-8), downside deviation vs 0: DD⁻ = sqrt(mean(min(r, 0)²))
- information_ratio: active daily log returns a = l(V) - l(H); sqrt(365)·mean(a)/(std(a)+1e-8)   [needs hodl]

Returns
- returns:                          V_{T-1}/V_0 - 1
- annualised_returns:               (V_{T-1}/V_0)^(1/years) - 1
- returns_over_hodl:                (V_{T-1}/V_0) / (H_{T-1}/H_0) - 1; with H_0 = V_0 (as the reference
                                    builds HODL from the initial reserves) this is V_{T-1}/H_{T-1} - 1   [needs hodl]
- annualised_returns_over_hodl:     (1 + returns_over_hodl)^(1/years) - 1   [needs hodl]
- returns_over_uniform_hodl:        the same against U   [needs uniform_hodl]
- annualised_returns_over_uniform_hodl: the same, annualised   [needs uniform_hodl]

Risk (negated for training, reported positive: see NEGATED) and risk-adjusted
- greatest_draw_down:    -max_t DD_t on the full path (0 is best)
- weekly_max_drawdown:   the full path is cut into consecutive weeks of W = 7·steps_per_day steps; week k is
                         V[kW : (k+1)W + 1] (sharing its end point with the next week) and its max drawdown
                         is measured from the running peak inside the week; the metric is minus the mean over
                         complete weeks (a trailing partial week is dropped; a path shorter than one week is
                         treated as one block)
- annualised_volatility: -sqrt(365)·std(r)
- max_drawdown_duration: minus the longest run of consecutive daily samples strictly below the running daily
                         peak, in days
- ulcer:                 minus the Ulcer index sqrt(mean((100·DD_d)²)) of the daily drawdown series
                         DD_d = 1 - v_d / cummax(v_d), in percent
- calmar:                annualised_returns / (max_t DD_t + 1e-8)
- sterling:              annualised_returns / (mean_d DD_d + 0.10): classic Sterling, the average drawdown
                         (here the mean of the daily drawdown series) plus 10 percentage points
- daily_var_95%:         q = 5th percentile of r (linear interpolation, jnp.percentile); it is the signed
                         return at the 5% tail, so it is already "higher is better" (= minus the VaR loss)
- daily_raroc:           annualised_returns / (|q|·sqrt(365) + 1e-8): annual return per unit of
                         square-root-of-time annualised daily VaR95
- daily_rovar:           mean(r) / (|q| + 1e-8)
- omega:                 sum(max(r, 0)) / (sum(max(-r, 0)) + 1e-8), threshold 0
- upside_capture:        over the days where H rose (r_H > 0): sum(r_V) / (sum(r_H) + 1e-8), i.e. the ratio of
                         mean daily returns on up days (the day counts cancel)   [needs hodl]
- downside_capture:      over the days where H fell (r_H < 0): minus sum(r_V) / (sum(r_H) - 1e-8); a downside
                         capture of C is trained on as -C (capturing less of the falls is better) and
                         reported as C   [needs hodl]
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from quant_core.signs import NEGATED as NEGATED
from quant_core.signs import better as better
from quant_core.signs import maximised as maximised
from quant_core.signs import natural_signs
from quant_core.signs import natural_value as natural_value

DAYS_PER_YEAR = 365.0
STERLING_OFFSET = 0.10


class Benchmarks(NamedTuple):
    """Benchmark value paths, each shaped like the pool's value path ([T]); None when not available."""

    hodl: jax.Array | None = None
    uniform_hodl: jax.Array | None = None


MetricFn = Callable[..., jax.Array]


def benchmarks_for(prices: jax.Array, initial_weights: jax.Array, initial_value: jax.Array) -> Benchmarks:
    """The pool's benchmarks on prices [T, n]: HODL of its initial tokens, V0 sum_i w0_i p_t,i / p_0,i, and
    HODL of equal initial values, V0 mean_i p_t,i / p_0,i (the same start value as the pool)."""
    rel = jnp.asarray(prices) / jnp.asarray(prices)[0]
    return Benchmarks(hodl=initial_value * (rel @ jnp.asarray(initial_weights)),
                      uniform_hodl=initial_value * jnp.mean(rel, axis=-1))


# ---------------------------------------------------------------------------------------------- helpers


def daily_values(values: jax.Array, steps_per_day: int) -> jax.Array:
    return values[::steps_per_day]


def daily_log_returns(values: jax.Array, steps_per_day: int) -> jax.Array:
    return jnp.diff(jnp.log(daily_values(values, steps_per_day) + 1e-12))


def daily_arith_returns(values: jax.Array, steps_per_day: int) -> jax.Array:
    v = daily_values(values, steps_per_day)
    return v[1:] / v[:-1] - 1.0


def sharpe_of_returns(r: jax.Array, periods_per_year: float = DAYS_PER_YEAR, xp=jnp) -> jax.Array:
    """Annualised Sharpe of per-period returns (population std, as the reference). `xp=numpy` for plain arrays
    of changing length (the live timeline): jax would compile once per length."""
    return xp.sqrt(periods_per_year) * xp.mean(r) / (xp.std(r) + 1e-8)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a finite (zero) gradient at 0."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _drawdowns(v: jax.Array) -> jax.Array:
    return 1.0 - v / jax.lax.cummax(v)


def _years(values: jax.Array, steps_per_day: int) -> float:
    return max(values.shape[0] - 1, 1) / (DAYS_PER_YEAR * steps_per_day)


def _annualise(growth: jax.Array, years: float) -> jax.Array:
    return growth ** (1.0 / years) - 1.0


def _benchmark(values: jax.Array, benchmarks: Benchmarks | None, field: str, metric: str) -> jax.Array:
    path = None if benchmarks is None else getattr(benchmarks, field)
    if path is None:
        raise ValueError(
            f"metric {metric!r} needs a benchmark value path: pass benchmarks=Benchmarks({field}=<values [T]>)"
        )
    path = jnp.asarray(path)
    if path.shape != values.shape:
        raise ValueError(f"metric {metric!r}: benchmarks.{field} has shape {path.shape}, values {values.shape}")
    return path


# ---------------------------------------------------------------------------------------------- sharpe family


def sharpe(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return sharpe_of_returns(values[1:] / values[:-1] - 1.0, DAYS_PER_YEAR * steps_per_day)


def daily_log_sharpe(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return sharpe_of_returns(daily_log_returns(values, steps_per_day))


def daily_sharpe(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return sharpe_of_returns(daily_arith_returns(values, steps_per_day))


def sortino(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    r = daily_arith_returns(values, steps_per_day)
    downside = _safe_sqrt(jnp.mean(jnp.minimum(r, 0.0) ** 2))
    return jnp.sqrt(DAYS_PER_YEAR) * jnp.mean(r) / (downside + 1e-8)


def information_ratio(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    h = _benchmark(values, benchmarks, "hodl", "information_ratio")
    active = daily_log_returns(values, steps_per_day) - daily_log_returns(h, steps_per_day)
    return sharpe_of_returns(active)


# ---------------------------------------------------------------------------------------------- returns


def total_return(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del steps_per_day, benchmarks
    return values[-1] / values[0] - 1.0


def annualised_returns(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return _annualise(values[-1] / values[0], _years(values, steps_per_day))


def _relative_growth(values: jax.Array, bench: jax.Array) -> jax.Array:
    return (values[-1] / values[0]) / (bench[-1] / bench[0])


def returns_over_hodl(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del steps_per_day
    return _relative_growth(values, _benchmark(values, benchmarks, "hodl", "returns_over_hodl")) - 1.0


def annualised_returns_over_hodl(
    values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None
) -> jax.Array:
    h = _benchmark(values, benchmarks, "hodl", "annualised_returns_over_hodl")
    return _annualise(_relative_growth(values, h), _years(values, steps_per_day))


def returns_over_uniform_hodl(
    values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None
) -> jax.Array:
    del steps_per_day
    u = _benchmark(values, benchmarks, "uniform_hodl", "returns_over_uniform_hodl")
    return _relative_growth(values, u) - 1.0


def annualised_returns_over_uniform_hodl(
    values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None
) -> jax.Array:
    u = _benchmark(values, benchmarks, "uniform_hodl", "annualised_returns_over_uniform_hodl")
    return _annualise(_relative_growth(values, u), _years(values, steps_per_day))


# ---------------------------------------------------------------------------------------------- risk


def greatest_draw_down(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del steps_per_day, benchmarks
    return -jnp.max(_drawdowns(values))


def weekly_max_drawdown(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    w = 7 * steps_per_day
    n_weeks = (values.shape[0] - 1) // w
    if n_weeks == 0:
        return -jnp.max(_drawdowns(values))
    starts = jnp.arange(n_weeks) * w
    blocks = jax.vmap(lambda s: jax.lax.dynamic_slice(values, (s,), (w + 1,)))(starts)  # [n_weeks, w + 1]
    per_week = jnp.max(jax.vmap(_drawdowns)(blocks), axis=1)
    return -jnp.mean(per_week)


def annualised_volatility(
    values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None
) -> jax.Array:
    del benchmarks
    return -jnp.sqrt(DAYS_PER_YEAR) * jnp.std(daily_arith_returns(values, steps_per_day))


def max_drawdown_duration(
    values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None
) -> jax.Array:
    del benchmarks
    v = daily_values(values, steps_per_day)
    underwater = (v < jax.lax.cummax(v)).astype(v.dtype)

    def step(run, u):
        run = (run + 1.0) * u
        return run, run

    _, runs = jax.lax.scan(step, jnp.zeros((), v.dtype), underwater)
    return -jnp.max(runs)


def ulcer(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    dd_pct = 100.0 * _drawdowns(daily_values(values, steps_per_day))
    return -_safe_sqrt(jnp.mean(dd_pct**2))


def calmar(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return annualised_returns(values, steps_per_day) / (jnp.max(_drawdowns(values)) + 1e-8)


def sterling(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    mean_dd = jnp.mean(_drawdowns(daily_values(values, steps_per_day)))
    return annualised_returns(values, steps_per_day) / (mean_dd + STERLING_OFFSET)


def daily_var_95(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    return jnp.percentile(daily_arith_returns(values, steps_per_day), 5.0)


def daily_raroc(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    var = jnp.abs(daily_var_95(values, steps_per_day))
    return annualised_returns(values, steps_per_day) / (var * jnp.sqrt(DAYS_PER_YEAR) + 1e-8)


def daily_rovar(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    r = daily_arith_returns(values, steps_per_day)
    return jnp.mean(r) / (jnp.abs(jnp.percentile(r, 5.0)) + 1e-8)


def omega(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    del benchmarks
    r = daily_arith_returns(values, steps_per_day)
    return jnp.sum(jnp.maximum(r, 0.0)) / (jnp.sum(jnp.maximum(-r, 0.0)) + 1e-8)


def upside_capture(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    h = _benchmark(values, benchmarks, "hodl", "upside_capture")
    r, rh = daily_arith_returns(values, steps_per_day), daily_arith_returns(h, steps_per_day)
    up = rh > 0
    return jnp.sum(jnp.where(up, r, 0.0)) / (jnp.sum(jnp.where(up, rh, 0.0)) + 1e-8)


def downside_capture(values: jax.Array, steps_per_day: int, benchmarks: Benchmarks | None = None) -> jax.Array:
    h = _benchmark(values, benchmarks, "hodl", "downside_capture")
    r, rh = daily_arith_returns(values, steps_per_day), daily_arith_returns(h, steps_per_day)
    down = rh < 0
    return -jnp.sum(jnp.where(down, r, 0.0)) / (jnp.sum(jnp.where(down, rh, 0.0)) - 1e-8)


# ---------------------------------------------------------------------------------------------- registry

METRICS: dict[str, MetricFn] = {
    "sharpe": sharpe,
    "daily_sharpe": daily_sharpe,
    "daily_log_sharpe": daily_log_sharpe,
    "sortino": sortino,
    "information_ratio": information_ratio,
    "returns": total_return,
    "annualised_returns": annualised_returns,
    "returns_over_hodl": returns_over_hodl,
    "annualised_returns_over_hodl": annualised_returns_over_hodl,
    "returns_over_uniform_hodl": returns_over_uniform_hodl,
    "annualised_returns_over_uniform_hodl": annualised_returns_over_uniform_hodl,
    "greatest_draw_down": greatest_draw_down,
    "weekly_max_drawdown": weekly_max_drawdown,
    "annualised_volatility": annualised_volatility,
    "max_drawdown_duration": max_drawdown_duration,
    "ulcer": ulcer,
    "calmar": calmar,
    "sterling": sterling,
    "daily_var_95%": daily_var_95,
    "daily_raroc": daily_raroc,
    "daily_rovar": daily_rovar,
    "omega": omega,
    "upside_capture": upside_capture,
    "downside_capture": downside_capture,
}

# Which Benchmarks field each metric needs (metrics not listed need none).
BENCHMARK_NEEDS: dict[str, str] = {
    "information_ratio": "hodl",
    "returns_over_hodl": "hodl",
    "annualised_returns_over_hodl": "hodl",
    "returns_over_uniform_hodl": "uniform_hodl",
    "annualised_returns_over_uniform_hodl": "uniform_hodl",
    "upside_capture": "hodl",
    "downside_capture": "hodl",
}


# Metrics that read the path only at the day boundaries V[::steps_per_day]:
# fn(values, spd) == fn(values[::spd], 1). Training can then compute the pool's value on those
# days alone (quant_core.sim.amm.g3m.g3m_minute_log_growth_at) instead of at every minute.
DAILY_SAMPLED = frozenset({
    "daily_log_sharpe", "daily_sharpe", "sortino", "annualised_volatility", "max_drawdown_duration", "ulcer",
    "daily_var_95%", "daily_rovar", "omega",
})


def get_metric(name: str) -> MetricFn:
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown metric {name!r}{hint}; valid metrics: {sorted(METRICS)}") from None


@functools.lru_cache(maxsize=64)
def _summary_kernel(steps_per_day: int, names: tuple[str, ...]):
    """One compiled function computing all the named metrics (jit caches it per input shape)."""

    @jax.jit
    def kernel(values, benchmarks):
        return {name: METRICS[name](values, steps_per_day, benchmarks) for name in names}

    return kernel


def summary(values, steps_per_day: int, benchmarks: Benchmarks | None = None) -> dict[str, float]:
    """All registered metrics of one path, as plain floats in their natural signs (for reports and the store;
    training reads the objective-signed METRICS instead).

    Metrics whose benchmark path is absent from ``benchmarks`` are skipped."""
    v = jnp.asarray(values)
    b = Benchmarks() if benchmarks is None else benchmarks
    b = Benchmarks(*(None if p is None else jnp.asarray(p) for p in b))
    names = tuple(n for n in METRICS if BENCHMARK_NEEDS.get(n) is None or getattr(b, BENCHMARK_NEEDS[n]) is not None)
    out = _summary_kernel(int(steps_per_day), names)(v, b)
    return natural_signs({name: float(out[name]) for name in names})
