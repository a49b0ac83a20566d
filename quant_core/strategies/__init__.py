"""CEX trading strategies: signals on one market's candles and a vmapped trade backtester.

Registration is automatic: every module of this package that assigns a module-level `STRATEGY` (a
`Strategy`) is a strategy, so adding one needs no edit outside its own module. Discovery is lazy (the
first `get_strategy` / `available_strategies` call) and reads each module's source before importing it:
only modules that define `STRATEGY` are imported, never the infrastructure (backtest, market, the
trainers), so importing this package imports no strategy and registering one cannot close an import
cycle, whatever the strategy modules themselves import.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import pkgutil
import threading
from pathlib import Path

from quant_core.strategies.schema import Strategy

__all__ = ["Strategy", "available_strategies", "get_strategy"]

_STRATEGIES: dict[str, Strategy] | None = None
_LOCK = threading.Lock()


def _defines_strategy(module: str) -> bool:
    """Whether the module's source assigns `STRATEGY` at module level (sourceless modules: imported to see)."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(".py"):
        return True
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), origin)
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "STRATEGY" for t in targets):
            return True
    return False


def _discover() -> dict[str, Strategy]:
    found: dict[str, Strategy] = {}
    where: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = f"{__name__}.{info.name}"
        if info.ispkg or not _defines_strategy(module):
            continue
        strategy = getattr(importlib.import_module(module), "STRATEGY", None)
        if strategy is None:
            continue
        if not isinstance(strategy, Strategy):
            raise TypeError(f"{module}.STRATEGY is a {type(strategy).__name__}, not a quant_core.strategies.Strategy")
        if strategy.name in found:
            raise ValueError(f"strategy {strategy.name!r} is defined twice: in {where[strategy.name]} and {module}")
        found[strategy.name] = strategy
        where[strategy.name] = module
    return found


def _registry() -> dict[str, Strategy]:
    global _STRATEGIES
    if _STRATEGIES is None:
        with _LOCK:
            if _STRATEGIES is None:
                _STRATEGIES = _discover()
    return _STRATEGIES


def available_strategies() -> list[str]:
    return sorted(_registry())


def get_strategy(name: str) -> Strategy:
    try:
        return _registry()[name]
    except KeyError:
        close = difflib.get_close_matches(name, available_strategies(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"strategy {name!r} is not available{hint}; choose one of {available_strategies()}") from None
