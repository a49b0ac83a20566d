"""The contract between pool rules and the simulator: parameter schemas, the rule context, rules.

A rule is data (`PoolRule`): its parameters (`quant_core.params.Param`, in user units, with the run-spec key
they start from and the unconstrained transform gradient training uses) and a pure function
`deltas(chunk_prices, params, ctx, aux)`. Keeping this in one small module lets every rule module
and the registry depend on it without depending on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp

from quant_core.params import Param, Transform, find_param, inverse_squareplus, squareplus  # noqa: F401
from quant_core.sim.estimators import lamb_to_memory_days, memory_days_to_lamb


def _logit_lamb(value: jax.Array, chunk_period: int) -> jax.Array:
    lamb = memory_days_to_lamb(value, chunk_period)
    return jnp.log(lamb) - jnp.log1p(-lamb)


# memory lengths train as the logit of their per-chunk EWMA decay, so every step is a valid memory
LOGIT_LAMB = Transform("logit_lamb", _logit_lamb,
                       lambda x, chunk_period: lamb_to_memory_days(jax.nn.sigmoid(x), chunk_period), 0.0)


@dataclass(frozen=True)
class RuleContext:
    """What a rule needs to know about the run besides prices and parameters (all static)."""

    chunk_period: int  # minutes between rule evaluations
    max_memory_days: float  # cap on every memory length (after the short-history rule)
    method: str = "scan"  # "scan" | "vectorized": how the estimators run (same numbers)
    use_pre_exp_scaling: bool = True  # False: channel rules use pre_exp_scaling = 0.5
    use_alt_lamb: bool = False  # True: rules with a second memory use memory_days_2 for it

    def memory(self, memory_days: jax.Array) -> jax.Array:
        """A memory length capped at max_memory_days (the reference caps lambda, the same thing)."""
        return jnp.minimum(memory_days, self.max_memory_days)

    def lamb(self, memory_days: jax.Array) -> jax.Array:
        """The per-chunk EWMA decay of a memory length (capped)."""
        return memory_days_to_lamb(self.memory(memory_days), self.chunk_period)


# deltas(chunk_prices [C, n], params {name: [n]}, ctx, aux {name: [C, n]}) -> [C, n]; row c may use
# chunk rows 0..c only, and row 0 is the rule's output before any price change (zero for delta rules).
DeltaFn = Callable[[jax.Array, dict[str, jax.Array], RuleContext, dict[str, jax.Array]], jax.Array]


@dataclass(frozen=True)
class PoolRule:
    """A pool rule: what it is called, what it trains, and how it moves (or holds) weights."""

    name: str
    kind: Literal["dynamic", "static_weights", "hodl", "cow", "gyroscope", "reclamm"]
    params: tuple[Param, ...] = ()
    deltas: DeltaFn | None = None
    description: str = ""
    # target-weight rules (min_variance): deltas returns target weights, blended with the current
    # weights as raw = blend W + (1 - blend) target, blend = blend_lamb(params, ctx)
    outputs_weights: bool = False
    blend_lamb: Callable[[dict[str, jax.Array], RuleContext], jax.Array] | None = None
    required_aux: tuple[str, ...] = ()  # per-row series the rule reads besides prices (e.g. market_cap)
    supports_vectorized: bool = True  # has a parallel-over-time estimator path equal to the scan
    differentiable: bool = True  # gradient descent can train it
    n_tokens: int | None = None  # a fixed pool size (two-token engines)
    # how reserves follow a dynamic rule's weights: a G3M pool under arbitrage, or the index variants
    # that trade only inside each chunk's interpolation window (as a G3M pool, or as a CEX portfolio)
    reserve_engine: Literal["g3m", "hodling", "trad_hodling"] = "g3m"
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param:
        return find_param(self.params, name, f"rule {self.name!r}")
