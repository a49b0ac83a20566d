"""Return metrics of a pool value path (JAX, differentiable where the math allows).

Every metric is "higher is better" so training maximises it. Values are sampled at day
boundaries (`values[::steps_per_day]`); the last partial day is ignored, as in the reference.

- daily_log_sharpe: r = diff(log(v_d + 1e-12)); sqrt(365) * mean(r) / (std(r) + 1e-8), std with ddof 0
- daily_sharpe:     the same on arithmetic daily returns v_d[1:]/v_d[:-1] - 1
- returns:          V_last / V_0 - 1
- greatest_draw_down: the largest fall from a running peak, negated (0 is best)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import jax
import jax.numpy as jnp

DAYS_PER_YEAR = 365.0

MetricFn = Callable[[jax.Array, int], jax.Array]


def daily_values(values: jax.Array, steps_per_day: int) -> jax.Array:
    return values[::steps_per_day]


def daily_log_returns(values: jax.Array, steps_per_day: int) -> jax.Array:
    return jnp.diff(jnp.log(daily_values(values, steps_per_day) + 1e-12))


def sharpe_of_returns(r: jax.Array) -> jax.Array:
    """Annualised Sharpe of daily returns (population std, as the reference)."""
    return jnp.sqrt(DAYS_PER_YEAR) * jnp.mean(r) / (jnp.std(r) + 1e-8)


def daily_log_sharpe(values: jax.Array, steps_per_day: int) -> jax.Array:
    return sharpe_of_returns(daily_log_returns(values, steps_per_day))


def daily_sharpe(values: jax.Array, steps_per_day: int) -> jax.Array:
    v = daily_values(values, steps_per_day)
    return sharpe_of_returns(v[1:] / v[:-1] - 1.0)


def total_return(values: jax.Array, steps_per_day: int) -> jax.Array:
    del steps_per_day
    return values[-1] / values[0] - 1.0


def greatest_draw_down(values: jax.Array, steps_per_day: int) -> jax.Array:
    del steps_per_day
    peak = jax.lax.cummax(values)
    return -jnp.max(1.0 - values / peak)


METRICS: dict[str, MetricFn] = {
    "daily_log_sharpe": daily_log_sharpe,
    "daily_sharpe": daily_sharpe,
    "returns": total_return,
    "greatest_draw_down": greatest_draw_down,
}


def get_metric(name: str) -> MetricFn:
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown metric {name!r}{hint}; valid metrics: {sorted(METRICS)}") from None


def summary(values, steps_per_day: int) -> dict[str, float]:
    """All registered metrics of one path, as plain floats (for reports and the store)."""
    v = jnp.asarray(values)
    return {name: float(fn(v, steps_per_day)) for name, fn in METRICS.items()}
