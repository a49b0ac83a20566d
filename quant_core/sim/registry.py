"""Pool rules by name: the dynamic (TFMM) rules of `quant_core.sim.rules` plus the static pools.

One schema per rule (`quant_core.sim.schema.PoolRule`) drives initialisation (from the run
spec's `initial_*` keys), search ranges (overridable through `optuna_settings.parameter_config`),
gradient training (the unconstrained transforms) and reporting in user units.
"""

from __future__ import annotations

from quant_core.sim.amm.cow import COW_PARAMS
from quant_core.sim.amm.gyroscope import GYROSCOPE_PARAMS
from quant_core.sim.amm.reclamm import RECLAMM_PARAMS
from quant_core.sim.rules import ALL_RULES
from quant_core.sim.schema import PoolRule, RuleContext  # noqa: F401  (re-exported)

_STATIC_RULES = (
    PoolRule("balancer", "static_weights", description="constant-weight G3M pool (Balancer weighted pool)"),
    PoolRule("hodl", "hodl", description="hold the initial token amounts; no trading"),
    PoolRule(
        "cow", "cow", COW_PARAMS,
        description="CoW AMM / FM-AMM: two tokens, arbitrage by batch auction, arb_quality sets how much of the "
        "arbitrage surplus the pool keeps", n_tokens=2,
    ),
    PoolRule(
        "gyroscope", "gyroscope", GYROSCOPE_PARAMS,
        description="Gyroscope E-CLP: two tokens, liquidity concentrated on a rotated, stretched ellipse over "
        "the price range [alpha, beta]", n_tokens=2,
    ),
    PoolRule(
        "reclamm", "reclamm", RECLAMM_PARAMS,
        description="reCLAMM: two tokens, constant product on real + virtual balances whose price range re-centres "
        "towards the market", n_tokens=2,
    ),
)

_RULES: dict[str, PoolRule] = {r.name: r for r in (*ALL_RULES, *_STATIC_RULES)}


def available_rules() -> list[str]:
    return sorted(_RULES)


def get_rule(name: str) -> PoolRule:
    try:
        return _RULES[name]
    except KeyError:
        raise KeyError(f"rule {name!r} is not available; choose one of {available_rules()}") from None
