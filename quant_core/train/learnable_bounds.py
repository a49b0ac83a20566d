"""The bounded__ hook's per-asset bounds as trained parameters (`learnable_bounds_settings.freeze_bounds:
false`), in the reference simulator's parametrisation (quantammsim/hooks/bounded_weights_hook.py).

Gradient steps move three unconstrained values; every value maps to feasible bounds, so no step can leave a
pool without a valid weight vector:

    min    = sigmoid(raw_min_budget) * softmax(raw_min_logits)       sum(min) < 1, min >= 0
    gap    = (1 - min) * sigmoid(raw_gap_logits)                     0 < gap <= 1 - min
    max0   = min + gap                                               min < max0 <= 1
    max    = min(max0 * max((1 + 1e-12) / sum(max0), 1), 1)          sum(max) >= 1, max <= 1

(raw_min_budget is one value for the pool; the other two one per token.) Starting bounds in user units are
mapped back by the inverse: budget = logit(sum min), logits = log(min / sum min), gap = logit((max - min) /
(1 - min)); that is exact unless the bounds sit on an edge (a zero min, a max of 1, sum(max) = 1), which
land within about 1e-7.

Differences from the reference, on purpose: the sigmoid inputs are clipped to [-15, 15] and sum(max) is made
to reach 1 by a relative 1e-12 rather than missing it by the reference's 1e-6, so that in float64 every
reachable value gives bounds `check_bounds` accepts (strictly min < max, sum(max) >= 1) and a trained
configuration simulates as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

RAW_KEYS = ("raw_min_budget", "raw_min_logits", "raw_gap_logits")
LIMIT = 15.0  # |sigmoid input| beyond this is clipped: keeps gaps and the budget's complement above rounding
_SLACK = 1e-12  # sum(max) is scaled to 1 + _SLACK, so rounding never leaves it below 1


def learns_bounds(spec: Any) -> bool:
    """Whether training moves the bounds: a bounded__ rule with learnable_bounds_settings.freeze_bounds false."""
    rule = getattr(spec, "rule", None)
    lbs = getattr(spec, "learnable_bounds_settings", None)
    return (isinstance(rule, str) and "bounded" in rule.split("__")[:-1] and lbs is not None
            and not lbs.freeze_bounds)


def bounds_from_raw(raw: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """(min, max) weights per token [..., n] from the unconstrained values (module docstring); JAX-traceable,
    any leading batch axes."""
    budget = jax.nn.sigmoid(jnp.clip(jnp.asarray(raw["raw_min_budget"]), -LIMIT, LIMIT))
    low = budget * jax.nn.softmax(jnp.asarray(raw["raw_min_logits"]), axis=-1)
    gap = (1.0 - low) * jax.nn.sigmoid(jnp.clip(jnp.asarray(raw["raw_gap_logits"]), -LIMIT, LIMIT))
    high0 = low + gap
    scale = jnp.maximum((1.0 + _SLACK) / jnp.sum(high0, axis=-1, keepdims=True), 1.0)
    return low, jnp.minimum(high0 * scale, 1.0)


def _logit(p: np.ndarray) -> np.ndarray:
    edge = 1.0 / (1.0 + np.exp(LIMIT))  # sigmoid(-LIMIT): probabilities past it clip to +-LIMIT anyway
    p = np.clip(p, edge, 1.0 - edge)
    return np.log(p) - np.log1p(-p)


def raw_from_bounds(low: Any, high: Any) -> dict[str, np.ndarray]:
    """The unconstrained values whose bounds are (low, high) [..., n] (exact away from the edges: module
    docstring); raw_min_budget has a last axis of one."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    total = low.sum(axis=-1, keepdims=True)
    share = np.maximum(low, 1e-300) / np.maximum(total, 1e-300)
    room = np.maximum(1.0 - low, 1e-300)
    return {
        "raw_min_budget": _logit(total),
        "raw_min_logits": np.log(share),
        "raw_gap_logits": _logit((high - low) / room),
    }
