"""Hooks: prefixes that wrap a pool rule, chained by `__`, e.g. `ensemble__bounded__momentum`.

- `bounded__`: per-asset weight bounds (`min_weights_per_asset`, `max_weights_per_asset`), applied
  after normalising each chunk's raw weights and before the uniform minimum_weight guardrail. With
  learnable_bounds_settings.freeze_bounds false, training moves them jointly, never one by one (a lone
  bound can leave no feasible weight vector): quant_core.train.learnable_bounds.
- `ensemble__`: the rule runs once per ensemble member (parameters with a leading member axis) and
  the members' rule outputs are averaged before they become weights.
- `lvr__` / `rvr__`: instead of an AMM under arbitrage, the pool's weights are held by a CEX
  portfolio rebalanced every minute, paying `fees` on what it sells (loss-versus-rebalancing) and,
  for `rvr__`, half the quoted spread on everything it trades (rebalancing-versus-rebalancing;
  the spreads are an auxiliary series `spread` [T, n] the caller provides). On CoW pools the portfolio holds the
  pool's fixed weights; on Gyroscope pools, the E-CLP's empirical weights on its zero-fee path (as the reference).
- `momentum_fee__`: a per-minute swap fee from the first token's momentum (quant_core.sim.dynamic_fees).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from quant_core.params import Param
from quant_core.sim.dynamic_fees import MOMENTUM_FEE_PARAMS
from quant_core.sim.token_sum import token_sum

# The bounded__ hook's parameters (user units: weights, one per token).
BOUND_PARAMS = ("min_weights_per_asset", "max_weights_per_asset")


@dataclass(frozen=True)
class Hook:
    """A hook as a value: what it adds (parameters) and what it changes, read by the simulator and `quant list`."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    wraps_weights: bool = False  # changes a dynamic rule's weights, so it needs one
    replaces_reserves: bool = False  # a rebalancing portfolio holds the weights instead of the AMM
    minute_series: tuple[str, ...] = ()  # auxiliary series it reads, one row per minute of the run


_BOUNDS = (
    # default bounds are the uniform guardrail's, so bounded__ alone changes nothing. trainable=False: they
    # have no per-parameter transform; quant_core.train.params trains the pair jointly when freeze_bounds is false
    Param(BOUND_PARAMS[0], 0.0, 0.5, initial_key="minimum_weight", unit="weight",
          description="bounded__ hook: the lowest weight each token may have (trained, with the highest, "
          "when learnable_bounds_settings.freeze_bounds is false)", trainable=False,
          initial=lambda spec: spec.effective_minimum_weight),
    Param(BOUND_PARAMS[1], 0.5, 1.0, initial_key="minimum_weight", unit="weight",
          description="bounded__ hook: the highest weight each token may have (trained with the lowest when "
          "freeze_bounds is false)", trainable=False,
          initial=lambda spec: 1.0 - (len(spec.tokens) - 1) * spec.effective_minimum_weight),
)

HOOKS: dict[str, Hook] = {h.name: h for h in (
    Hook("lvr", "the pool's weights held by a CEX portfolio rebalanced every minute, paying `fees` on what it "
         "sells (loss-versus-rebalancing)", replaces_reserves=True),
    Hook("rvr", "as lvr__, also paying half the quoted spread on everything it trades (needs aux spread [T, n])",
         replaces_reserves=True, minute_series=("spread",)),
    Hook("bounded", "per-asset weight bounds, applied after normalising each chunk's raw weights", _BOUNDS,
         wraps_weights=True),
    Hook("ensemble", "the rule runs once per ensemble member and the members' outputs are averaged",
         wraps_weights=True),
    Hook("momentum_fee", "the pool's swap fee follows the first token's price momentum each chunk (the reference's "
         "momentum dynamic-fee hook; quant_core.sim.dynamic_fees)", MOMENTUM_FEE_PARAMS),
)}


@dataclass(frozen=True)
class RuleName:
    """A rule name split into its hooks (outermost first) and the base pool rule."""

    hooks: tuple[Hook, ...]
    base: str

    def has(self, hook: str) -> bool:
        return any(h.name == hook for h in self.hooks)

    @property
    def full(self) -> str:
        return "__".join((*(h.name for h in self.hooks), self.base))

    @property
    def rebalancer(self) -> str | None:
        """The hook ('lvr' or 'rvr') whose rebalancing portfolio replaces the pool's reserves, if any."""
        return next((h.name for h in self.hooks if h.replaces_reserves), None)


def parse_rule_name(name: str, available: list[str]) -> RuleName:
    """Split `hook__hook__rule`; raise naming the valid hooks and rules when it does not parse."""
    parts = name.split("__")
    base, hooks = parts[-1], tuple(parts[:-1])
    unknown = [h for h in hooks if h not in HOOKS]
    if unknown:
        raise ValueError(f"rule {name!r}: unknown hook(s) {unknown}; hooks are {list(HOOKS)} written as 'hook__rule'")
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"rule {name!r}: each hook may appear once")
    if sum(HOOKS[h].replaces_reserves for h in hooks) > 1:
        raise ValueError(f"rule {name!r}: lvr__ and rvr__ both replace the reserves; use one of them")
    if base not in available:
        close = difflib.get_close_matches(base, available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"rule {name!r}: base rule {base!r} is not available{hint}; choose one of {available}")
    return RuleName(tuple(HOOKS[h] for h in hooks), base)


def rebalancing_log_growth(
    prices: jax.Array, weights: jax.Array, fees: jax.Array, spread: jax.Array | None = None
) -> jax.Array:
    """log(V_t / V_{t-1}) of a portfolio rebalanced to `weights` each step, [T] with row 0 = 0.

    With r = p_t/p_{t-1}, w = w_{t-1}, w' = w_t (all per unit of V_{t-1}):
      price move:  x = sum w r; the drifted holdings w r are traded back to w x, costing
                   c1 = fees * sum max(w r - w x, 0) + sum spread/2 |w x - w r|;
      weight move: y = x - c1; trading w y -> w' y costs
                   c2 = fees * sum max(y (w - w'), 0) + sum spread/2 |y (w' - w)|;
      V_t = V_{t-1} (y - c2).
    Every cost is proportional to V_{t-1}, so the path is a cumulative product: no scan needed."""
    r = prices[1:] / prices[:-1]
    w_prev, w_next = weights[:-1], weights[1:]
    half = 0.0 if spread is None else 0.5 * spread[1:]
    x = token_sum(w_prev * r)
    move = w_prev * x - w_prev * r
    c1 = token_sum(fees * jnp.maximum(-move, 0.0) + half * jnp.abs(move))
    y = x - c1
    move = y * (w_next - w_prev)
    c2 = token_sum(fees * jnp.maximum(-move, 0.0) + half * jnp.abs(move))
    growth = jnp.log(y - c2)[:, 0]
    return jnp.concatenate([jnp.zeros((1,), dtype=growth.dtype), growth])


def ensemble_mean(fn, member_params: dict[str, jax.Array]) -> jax.Array:
    """Average of fn(params) over the leading member axis of every parameter."""
    return jnp.mean(jax.vmap(fn)(member_params), axis=0)
