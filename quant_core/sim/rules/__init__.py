"""Dynamic (TFMM) weight-update rules, each a `PoolRule` of `quant_core.sim.schema`.

Delta rules return per-chunk weight changes summing to zero; target rules (min_variance,
index_market_cap) return target weights that the simulator blends into the current weights.
hodling_index_market_cap and trad_hodling_index_market_cap are the index_market_cap rule with
another reserve engine (`PoolRule.reserve_engine`; see quant_core/sim/amm/hodling.py).
"""

from quant_core.sim.rules.channel import MEAN_REVERSION_CHANNEL, POWER_CHANNEL, TRIPLE_THREAT_MEAN_REVERSION_CHANNEL
from quant_core.sim.rules.difference_momentum import DIFFERENCE_MOMENTUM
from quant_core.sim.rules.index_market_cap import (
    HODLING_INDEX_MARKET_CAP,
    INDEX_MARKET_CAP,
    TRAD_HODLING_INDEX_MARKET_CAP,
)
from quant_core.sim.rules.min_variance import MIN_VARIANCE
from quant_core.sim.rules.momentum import ANTI_MOMENTUM, MOMENTUM
from quant_core.sim.schema import PoolRule

ALL_RULES: tuple[PoolRule, ...] = (
    MOMENTUM,
    ANTI_MOMENTUM,
    POWER_CHANNEL,
    MEAN_REVERSION_CHANNEL,
    TRIPLE_THREAT_MEAN_REVERSION_CHANNEL,
    DIFFERENCE_MOMENTUM,
    MIN_VARIANCE,
    INDEX_MARKET_CAP,
    HODLING_INDEX_MARKET_CAP,
    TRAD_HODLING_INDEX_MARKET_CAP,
)

__all__ = ["ALL_RULES"]
