"""The contract between pool rules and the simulator: parameter schemas, the rule context, rules.

A rule is data (`PoolRule`): its parameters (`ParamSpec`, in user units, with the run-spec key
they start from and the unconstrained transform gradient training uses) and a pure function
`deltas(chunk_prices, params, ctx, aux)`. Keeping this in one small module lets every rule module
and the registry depend on it without depending on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import jax
import jax.numpy as jnp

from quant_core.sim.estimators import lamb_to_memory_days, memory_days_to_lamb

if TYPE_CHECKING:
    from quant_core.spec import RunSpec

Transform = Literal["logit_lamb", "log2", "log", "squareplus", "identity"]


def squareplus(x: jax.Array) -> jax.Array:
    """(x + sqrt(x^2 + 4)) / 2: a smooth, strictly positive map with squareplus(0) = 1."""
    return 0.5 * (x + jnp.sqrt(x * x + 4.0))


def inverse_squareplus(y: jax.Array) -> jax.Array:
    """The x with squareplus(x) = y (y > 0): x = y - 1/y."""
    return y - 1.0 / y


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


@dataclass(frozen=True)
class ParamSpec:
    """One strategy parameter in user units (memory in days, k per day, weights, radians...)."""

    name: str
    initial_key: str  # run-spec key its initial value comes from (documentation and search UI)
    low: float  # search range (user units), overridable by optuna_settings.parameter_config
    high: float
    log_scale: bool
    transform: Transform  # unconstrained space for gradient training
    description: str
    aliases: tuple[str, ...] = ()
    trainable: bool = True  # False: gradient descent cannot move it (gradient-free search can)
    # the initial value from a run spec, when it is not simply spec.<initial_key>
    initial: Callable[[RunSpec], float] | None = None
    scalar: bool = False  # one value for the whole pool rather than one per token
    only_if: str | None = None  # a run-spec flag (e.g. "use_alt_lamb") without which the rule ignores it

    def active(self, spec: RunSpec) -> bool:
        """Whether the rule reads this parameter under the spec (search skips inactive ones)."""
        return self.only_if is None or bool(getattr(spec, self.only_if))

    def initial_value(self, spec: RunSpec) -> float:
        return float(self.initial(spec) if self.initial is not None else getattr(spec, self.initial_key))

    def to_unconstrained(self, value: jax.Array, chunk_period: int = 1440) -> jax.Array:
        value = jnp.asarray(value, dtype=jnp.float64)
        if self.transform == "logit_lamb":
            lamb = memory_days_to_lamb(value, chunk_period)
            return jnp.log(lamb) - jnp.log1p(-lamb)
        if self.transform == "log2":
            return jnp.log2(value)
        if self.transform == "log":
            return jnp.log(value)
        if self.transform == "squareplus":
            return inverse_squareplus(value)
        return value

    def from_unconstrained(self, x: jax.Array, chunk_period: int = 1440) -> jax.Array:
        x = jnp.asarray(x, dtype=jnp.float64)
        if self.transform == "logit_lamb":
            return lamb_to_memory_days(jax.nn.sigmoid(x), chunk_period)
        if self.transform == "log2":
            return 2.0**x
        if self.transform == "log":
            return jnp.exp(x)
        if self.transform == "squareplus":
            return squareplus(x)
        return x


def find_param(params: tuple[ParamSpec, ...], name: str, rule: str) -> ParamSpec:
    """The parameter called `name` (or one of its aliases); raises naming the valid ones."""
    for p in params:
        if name == p.name or name in p.aliases:
            return p
    raise KeyError(f"rule {rule!r} has no parameter {name!r}; its parameters are {[p.name for p in params]}")


# deltas(chunk_prices [C, n], params {name: [n]}, ctx, aux {name: [C, n]}) -> [C, n]; row c may use
# chunk rows 0..c only, and row 0 is the rule's output before any price change (zero for delta rules).
DeltaFn = Callable[[jax.Array, dict[str, jax.Array], RuleContext, dict[str, jax.Array]], jax.Array]


@dataclass(frozen=True)
class PoolRule:
    """A pool rule: what it is called, what it trains, and how it moves (or holds) weights."""

    name: str
    kind: Literal["dynamic", "static_weights", "hodl", "cow", "gyroscope"]
    params: tuple[ParamSpec, ...] = ()
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

    def param(self, name: str) -> ParamSpec:
        return find_param(self.params, name, self.name)
