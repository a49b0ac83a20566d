"""Market-cap index: target weights proportional to each asset's market capitalisation.

    target_c = mcap_{c-1} / sum_j mcap_{c-1, j}   (row 0: mcap_0 / sum mcap_0)
aux["market_cap"] [C, n] is the chunk-sampled market cap (price x circulating supply). The one-chunk
lag reproduces the reference's alignment: it slices its market-cap weights at the bout's first chunk
where delta rules take the gradient one chunk later. So, run as the reference runs target rules (the
default, quant_core.sim.engines), the pool starts at the guardrailed market-cap shares at the bout
start and ramps in chunk c towards the shares at chunk c's start: no look-ahead. The simulator blends
raw = lambda W + (1 - lambda) target, lambda from memory_days (the reference uses the rule's lambda
with a zero, untrained logit delta).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quant_core.sim.rules.common import MEMORY_DAYS, Aux, Params
from quant_core.sim.schema import PoolRule, RuleContext


def index_market_cap_targets(chunk_prices: jax.Array, params: Params, ctx: RuleContext, aux: Aux) -> jax.Array:
    """Target weights [C, n]: the previous chunk's market-cap shares (row 0: its own)."""
    mcap = jnp.asarray(aux["market_cap"])
    lagged = jnp.concatenate([mcap[:1], mcap[:-1]], axis=0)
    return lagged / jnp.sum(lagged, axis=-1, keepdims=True)


def index_market_cap_blend(params: Params, ctx: RuleContext) -> jax.Array:
    """lambda: how much of the previous weights each chunk keeps (from memory_days, capped)."""
    return ctx.lamb(params["memory_days"])


INDEX_MARKET_CAP = PoolRule(
    "index_market_cap", "dynamic",
    (dataclasses.replace(
        MEMORY_DAYS,
        description="smoothing memory in days: each chunk keeps lambda(memory_days) of the previous weights",
    ),),
    index_market_cap_targets,
    description="market-cap index: weights follow each token's share of the pool's total market capitalisation",
    outputs_weights=True,
    blend_lamb=index_market_cap_blend,
    required_aux=("market_cap",),
)

HODLING_INDEX_MARKET_CAP = dataclasses.replace(
    INDEX_MARKET_CAP, name="hodling_index_market_cap", reserve_engine="hodling",
    description="market-cap index held by a G3M pool that trades (is arbitraged) only while its weights move, "
    "in the first weight_interpolation_period minutes of each chunk, and holds its reserves otherwise",
)
TRAD_HODLING_INDEX_MARKET_CAP = dataclasses.replace(
    INDEX_MARKET_CAP, name="trad_hodling_index_market_cap", reserve_engine="trad_hodling",
    description="market-cap index held by a CEX portfolio that rebalances (paying fees, half the spread and a "
    "streaming fee) only while its weights move, and holds its tokens otherwise",
)
