"""The one parameter type of everything tunable: pool rules, hooks, reserve engines and CEX strategies.

A `Param` is a schema entry in user units (memory in days, k per day, bars, ATR multiples...): its kind
(`float`, `int` whole numbers, or `choice` among a few values, 0 possibly meaning "off"), where its
starting value comes from, its search range (log scale or not), whether it holds one value per token or
one for the whole pool (`scalar`), and the `Transform` gradient training moves it in. One schema drives
defaults, validation of user-given values, grid / random / Optuna search spaces, gradient training and
`quant list`.

Transforms are values (a name and its two maps), so a rule that needs another space defines its own
(the pool rules' memory lengths train as logit lambda: `quant_core.sim.schema.LOGIT_LAMB`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

Kind = Literal["float", "int", "choice"]


class Transform(NamedTuple):
    """A bijection between a parameter's user units and the unconstrained space gradients move in.

    Both maps take (array, chunk_period) and must be JAX-traceable; chunk_period matters only to
    transforms defined per chunk (logit lambda)."""

    name: str
    to_unconstrained: Callable[[Any, int], Any]
    from_unconstrained: Callable[[Any, int], Any]
    lower: float = -math.inf  # the open interval (lower, upper) of user values the transform maps
    upper: float = math.inf


def _jnp():
    import jax.numpy as jnp  # at first use: loading a schema needs no JAX

    return jnp


def squareplus(x):
    """(x + sqrt(x^2 + 4)) / 2: a smooth, strictly positive map with squareplus(0) = 1."""
    jnp = _jnp()
    return 0.5 * (x + jnp.sqrt(x * x + 4.0))


def inverse_squareplus(y):
    """The x with squareplus(x) = y (y > 0): x = y - 1/y."""
    return y - 1.0 / y


IDENTITY = Transform("identity", lambda v, _c: v, lambda x, _c: x)
LOG = Transform("log", lambda v, _c: _jnp().log(v), lambda x, _c: _jnp().exp(x), 0.0)
LOG2 = Transform("log2", lambda v, _c: _jnp().log2(v), lambda x, _c: 2.0**x, 0.0)
SQUAREPLUS = Transform("squareplus", lambda v, _c: inverse_squareplus(v), lambda x, _c: squareplus(x), 0.0)


@dataclass(frozen=True)
class Param:
    """One tunable parameter in user units.

    Its starting value: `initial(spec)` when given, else the run-spec key `initial_key` (pool rules read
    `initial_*` fingerprint keys), else `default`. Search ranges default to [low, high] and may be
    overridden per run (search_settings.parameter_space, optuna_settings.parameter_config)."""

    name: str
    low: float
    high: float
    default: float | None = None
    kind: Kind = "float"
    choices: tuple[float, ...] = ()  # kind "choice": the admissible values
    log_scale: bool = False
    transform: Transform = IDENTITY
    description: str = ""
    unit: str = ""
    scalar: bool = False  # one value for the whole pool rather than one per token
    initial_key: str | None = None
    initial: Callable[[Any], float] | None = None
    aliases: tuple[str, ...] = ()
    trainable: bool = True  # False: searched only when listed, never by gradient descent
    hard_limits: bool = False  # [low, high] bounds every value (True) or is only the default search range
    only_if: str | None = None  # a run-spec flag (e.g. "use_alt_lamb") without which nothing reads it

    def __post_init__(self) -> None:
        if not isinstance(self.transform, Transform):
            raise TypeError(f"{self.name}: transform must be a Transform value (e.g. params.LOG2), got "
                            f"{self.transform!r}")
        if self.kind == "choice":
            if not self.choices or (self.default is not None and self.default not in self.choices):
                raise ValueError(f"{self.name}: a choice parameter lists its choices, the default among them")
        elif not self.low < self.high:
            raise ValueError(f"{self.name}: low {self.low} must be below high {self.high}")
        elif self.default is not None and not self.low <= self.default <= self.high:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.low}, {self.high}]")
        if self.default is None and self.initial is None and self.initial_key is None:
            raise ValueError(f"{self.name}: give a default, an initial_key or an initial function")

    # -- starting value ----------------------------------------------------------------------------
    def active(self, spec: Any) -> bool:
        """Whether anything reads this parameter under the spec (searches skip inactive ones)."""
        return self.only_if is None or bool(getattr(spec, self.only_if))

    def initial_value(self, spec: Any = None) -> float:
        if self.initial is not None:
            return float(self.initial(spec))
        if self.initial_key is not None and spec is not None and hasattr(spec, self.initial_key):
            return float(getattr(spec, self.initial_key))
        if self.default is None:
            raise ValueError(f"{self.name}: its starting value comes from the run spec key {self.initial_key!r}")
        return float(self.default)

    @property
    def starts_from(self) -> str:
        """Where the starting value comes from, for people (`quant list`)."""
        if self.initial is not None:
            return f"from {self.initial_key}" if self.initial_key else "computed"
        if self.initial_key is not None:
            return self.initial_key
        return f"{self.default:g}"

    # -- values --------------------------------------------------------------------------------------
    def grid(self, n: int) -> np.ndarray:
        """n points over the range (every choice for a choice parameter; whole numbers for int)."""
        if self.kind == "choice":
            return np.asarray(self.choices, dtype=np.float64)
        return points_between(self.low, self.high, n, self.log_scale, self.kind == "int")

    def check(self, values, where: str = "parameters") -> np.ndarray:
        """The values as float64, or ValueError naming the parameter, the bad value and the admissible ones
        (the range binds only parameters with hard_limits)."""
        v = np.asarray(values, dtype=np.float64)
        flat = v.reshape(-1)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{where}.{self.name}: values must be finite numbers")
        if self.kind == "choice":
            bad = v[~np.isin(v, self.choices)]
            if bad.size:
                raise ValueError(f"{where}.{self.name}: {bad.flat[0]:g} is not one of {list(self.choices)}")
            return v
        if self.kind == "int" and np.any(v != np.round(v)):
            raise ValueError(f"{where}.{self.name}: whole numbers only (got {v[v != np.round(v)].flat[0]:g})")
        bad = flat[(flat < self.low) | (flat > self.high)] if self.hard_limits else flat[:0]
        if bad.size:
            raise ValueError(f"{where}.{self.name}: {bad.flat[0]:g} is outside [{self.low:g}, {self.high:g}]")
        lo, hi = self.transform.lower, self.transform.upper
        bad = flat[(flat <= lo) | (flat >= hi)]
        if bad.size:
            span = f"above {lo:g}" if math.isinf(hi) else f"between {lo:g} and {hi:g} (exclusive)"
            raise ValueError(f"{where}.{self.name}: {bad.flat[0]:g} is impossible; it must be {span} "
                             f"(e.g. {self.default if self.default is not None else self.low:g})")
        return v

    # -- gradient training ---------------------------------------------------------------------------
    def to_unconstrained(self, value, chunk_period: int = 1440):
        return self.transform.to_unconstrained(_jnp().asarray(value, dtype=_jnp().float64), chunk_period)

    def from_unconstrained(self, x, chunk_period: int = 1440):
        return self.transform.from_unconstrained(_jnp().asarray(x, dtype=_jnp().float64), chunk_period)


def points_between(low: float, high: float, n: int, log_scale: bool, integer: bool = False) -> np.ndarray:
    """n grid points over [low, high] (geometric on a log scale); whole numbers, deduplicated, for int."""
    pts = np.geomspace(low, high, n) if log_scale else np.linspace(low, high, n)
    return np.unique(np.round(pts)) if integer else pts


def find_param(params: tuple[Param, ...], name: str, owner: str) -> Param:
    """The parameter called `name` (or one of its aliases); KeyError naming the close and the valid ones."""
    for p in params:
        if name == p.name or name in p.aliases:
            return p
    names = [p.name for p in params]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KeyError(f"{owner} has no parameter {name!r}{hint}; its parameters are {names}")
