"""Pool rules by name: each declares its parameter schema and how it moves weights.

One schema per rule drives initialisation (from the run spec's `initial_*` keys), search ranges
(overridable through `optuna_settings.parameter_config`) and reporting in user units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp

from quant_core.sim.estimators import ewma_gradient, memory_days_to_lamb
from quant_core.sim.rules.momentum import anti_momentum_delta, momentum_delta


@dataclass(frozen=True)
class ParamSpec:
    """One strategy parameter, in user units."""

    name: str
    initial_key: str  # run-spec key that holds its initial value
    low: float
    high: float
    log_scale: bool
    transform: Literal["logit_lamb", "log2", "identity"]  # unconstrained space for gradient training
    description: str
    aliases: tuple[str, ...] = ()
    trainable: bool = True


@dataclass(frozen=True)
class PoolRule:
    name: str
    kind: Literal["dynamic", "static_weights", "hodl"]
    params: tuple[ParamSpec, ...] = ()
    # (chunk prices [C, n], params {name: [n]}, chunk_period, max_memory_days) -> weight changes [C, n]
    deltas: Callable[[jax.Array, dict[str, jax.Array], int, float], jax.Array] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if name == p.name or name in p.aliases:
                return p
        raise KeyError(
            f"rule {self.name!r} has no parameter {name!r}; its parameters are {[p.name for p in self.params]}"
        )


MEMORY_DAYS = ParamSpec(
    "memory_days", "initial_memory_length", 1.0, 200.0, True, "logit_lamb",
    "EWMA memory length of the gradient estimator, in days", aliases=("memory_length",),
)
K_PER_DAY = ParamSpec(
    "k_per_day", "initial_k_per_day", 0.1, 1000.0, True, "log2",
    "aggressiveness: weight change per unit of gradient, per day of memory",
)


def _momentum_like(delta_fn):
    def deltas(chunk_prices, params, chunk_period, max_memory_days):
        memory = jnp.minimum(params["memory_days"], max_memory_days)
        lamb = memory_days_to_lamb(memory, chunk_period)
        k = params["k_per_day"] * memory
        return delta_fn(ewma_gradient(chunk_prices, lamb), k)

    return deltas


_RULES: dict[str, PoolRule] = {
    "momentum": PoolRule(
        "momentum", "dynamic", (MEMORY_DAYS, K_PER_DAY), _momentum_like(momentum_delta),
        "trend following: weight moves towards the assets with the strongest price gradient",
    ),
    "anti_momentum": PoolRule(
        "anti_momentum", "dynamic", (MEMORY_DAYS, K_PER_DAY), _momentum_like(anti_momentum_delta),
        "counter-trend: momentum with the sign of k flipped",
    ),
    "balancer": PoolRule("balancer", "static_weights", description="constant-weight G3M pool"),
    "hodl": PoolRule("hodl", "hodl", description="hold the initial token amounts"),
}


def available_rules() -> list[str]:
    return sorted(_RULES)


def get_rule(name: str) -> PoolRule:
    try:
        return _RULES[name]
    except KeyError:
        raise KeyError(f"rule {name!r} is not available; choose one of {available_rules()}") from None
