"""A pool = hooks + a base rule + the reserve engine that holds its weights.

`get_pool("ensemble__bounded__momentum")` gives the base rule's parameter schema plus the
parameters its hooks add, so one schema drives initialisation, search and reporting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from quant_core.params import Param, find_param
from quant_core.sim.hooks import RuleName, parse_rule_name
from quant_core.sim.registry import PoolRule, available_rules, get_rule

# The bounded__ hook's parameters (user units: weights, one per token).
BOUND_PARAMS = ("min_weights_per_asset", "max_weights_per_asset")

# Which reserve engine holds a static rule's weights, by its kind (dynamic rules name theirs).
_ENGINES = {"hodl": "hodl", "cow": "cow", "gyroscope": "gyroscope"}


def _bound_specs() -> tuple[Param, ...]:
    """Default bounds are the uniform guardrail's, so bounded__ alone changes nothing."""
    return (
        Param(BOUND_PARAMS[0], 0.0, 0.5, initial_key="minimum_weight", unit="weight",
              description="bounded__ hook: the lowest weight each token may have", trainable=False,
              initial=lambda spec: spec.effective_minimum_weight),
        Param(BOUND_PARAMS[1], 0.5, 1.0, initial_key="minimum_weight", unit="weight",
              description="bounded__ hook: the highest weight each token may have", trainable=False,
              initial=lambda spec: 1.0 - (len(spec.tokens) - 1) * spec.effective_minimum_weight),
    )


# the parameters a hook adds to the rule it wraps
HOOK_PARAMS: dict[str, tuple[Param, ...]] = {"bounded": _bound_specs()}


@dataclass(frozen=True)
class Pool:
    name: RuleName
    rule: PoolRule

    @property
    def engine(self) -> str:
        return _ENGINES.get(self.rule.kind, self.rule.reserve_engine)

    @property
    def rebalancer(self) -> str | None:
        return self.name.rebalancer

    def has(self, hook: str) -> bool:
        return self.name.has(hook)

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(self.rule.params) + tuple(p for h in self.name.hooks for p in HOOK_PARAMS.get(h, ()))

    def param(self, name: str) -> Param:
        return find_param(self.params, name, f"rule {self.name.base!r}")

    def initial_params(self, spec) -> dict[str, np.ndarray]:
        """Initial values (user units, one per token) of the rule's and the hooks' parameters."""
        n = len(spec.tokens)
        return {p.name: np.full(n, p.initial_value(spec)) for p in self.params}

    def check_hooks(self) -> None:
        """Hooks that change weights need a rule that has weights to change."""
        if (self.has("bounded") or self.has("ensemble")) and self.rule.kind != "dynamic":
            raise ValueError(f"rule {'__'.join(self.name.hooks + (self.name.base,))!r}: bounded__ and ensemble__ "
                             f"wrap a dynamic (TFMM) rule, and {self.name.base!r} has fixed weights")
        if self.rebalancer and self.engine != "g3m":
            raise ValueError(f"{self.rebalancer}__ tracks a weighted pool; {self.name.base!r} is not one")


@functools.lru_cache(maxsize=256)
def get_pool(name: str) -> Pool:
    """The pool for a rule name with optional hook prefixes; raises naming the valid names."""
    parsed = parse_rule_name(name, available_rules())
    pool = Pool(parsed, get_rule(parsed.base))
    pool.check_hooks()
    return pool


def check_bounds(low: np.ndarray, high: np.ndarray) -> None:
    """Per-asset bounds must admit a weight vector: 0 <= low < high <= 1, sum low <= 1 <= sum high."""
    problems = []
    if np.any(low < 0) or np.any(high > 1):
        problems.append("each bound must lie in [0, 1]")
    if np.any(low >= high):
        problems.append("min_weights_per_asset must be below max_weights_per_asset for every token")
    if low.sum() > 1:
        problems.append(f"min_weights_per_asset sums to {low.sum():.4g} > 1")
    if high.sum() < 1:
        problems.append(f"max_weights_per_asset sums to {high.sum():.4g} < 1")
    if problems:
        raise ValueError("parameters.min_weights_per_asset / max_weights_per_asset: " + "; ".join(problems))
