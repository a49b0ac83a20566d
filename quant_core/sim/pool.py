"""A pool = hooks + a base rule + the reserve engine that holds its weights.

`get_pool("ensemble__bounded__momentum")` gives the base rule's parameter schema plus the
parameters its hooks add, so one schema drives initialisation, search and reporting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from quant_core.params import Param, find_param
from quant_core.sim.hooks import BOUND_PARAMS, RuleName, parse_rule_name  # noqa: F401  (BOUND_PARAMS re-exported)
from quant_core.sim.registry import PoolRule, available_rules, get_rule
from quant_core.spec_sections import INITIAL_VALUE_KEYS

# Which reserve engine holds a static rule's weights, by its kind (dynamic rules name theirs).
_ENGINES = {"hodl": "hodl", "cow": "cow", "gyroscope": "gyroscope", "reclamm": "reclamm"}


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
        return tuple(self.rule.params) + tuple(p for h in self.name.hooks for p in h.params)

    def param(self, name: str) -> Param:
        return find_param(self.params, name, f"rule {self.name.base!r}")

    def initial_params(self, spec) -> dict[str, np.ndarray]:
        """Initial values (user units, one per token) of the rule's and the hooks' parameters."""
        n = len(spec.tokens)
        per_token = {k: v for k in INITIAL_VALUE_KEYS if isinstance(v := getattr(spec, k, None), list)}
        if not per_token:
            return {p.name: np.full(n, p.initial_value(spec)) for p in self.params}
        # the reference's per-token initial vectors: token i starts where a spec holding the i-th values would
        token_specs = [spec.model_copy(update={k: v[i] for k, v in per_token.items()}) for i in range(n)]
        return {p.name: np.array([p.initial_value(s) for s in token_specs]) for p in self.params}

    def check_hooks(self) -> None:
        """Hooks that change weights need a rule that has weights to change."""
        wrapping = [f"{h.name}__" for h in self.name.hooks if h.wraps_weights]
        if wrapping and self.rule.kind != "dynamic":
            raise ValueError(f"rule {self.name.full!r}: {' and '.join(wrapping)} wrap a dynamic (TFMM) rule, and "
                             f"{self.name.base!r} has fixed weights")
        if self.rebalancer and self.engine not in ("g3m", "cow", "gyroscope"):
            raise ValueError(f"{self.rebalancer}__ tracks a pool's weights (a G3M/TFMM, CoW or Gyroscope pool); "
                             f"{self.name.base!r} is not one")
        if self.has("momentum_fee") and (self.engine != "g3m" or self.rebalancer):
            raise ValueError(f"rule {self.name.full!r}: momentum_fee__ sets the swap fee of a G3M/TFMM pool under "
                             "arbitrage; use it on balancer or a dynamic rule without lvr__/rvr__")


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
