"""CEX trading strategies: signals on one market's candles and a vmapped trade backtester."""

from __future__ import annotations

from quant_core.strategies.liquidity_sweep import LIQUIDITY_SWEEP
from quant_core.strategies.schema import Strategy, StrategyParam

__all__ = ["Strategy", "StrategyParam", "available_strategies", "get_strategy"]

_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (LIQUIDITY_SWEEP,)}


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise KeyError(f"strategy {name!r} is not available; choose one of {available_strategies()}") from None
