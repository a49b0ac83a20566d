"""The contract between CEX strategies and the backtester: parameter schemas and strategies as data.

A CEX strategy trades one market's candles. Its parameters (`StrategyParam`) carry a default, a
search range and a kind: `float` (continuous), `int` (whole numbers in [low, high]) or `choice`
(one of a few values; 0 may stand for "off"). One schema drives defaults, grid/random/Optuna search
spaces, validation of user-given values and reporting, as the pool rules' schemas do.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Kind = Literal["float", "int", "choice"]


@dataclass(frozen=True)
class StrategyParam:
    """One strategy parameter in user units."""

    name: str
    default: float
    low: float
    high: float
    kind: Kind = "float"
    choices: tuple[float, ...] = ()  # kind "choice": the admissible values
    log_scale: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.choices or self.default not in self.choices:
                raise ValueError(f"{self.name}: a choice parameter lists its choices, the default among them")
        elif not self.low <= self.default <= self.high:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.low}, {self.high}]")

    def grid(self, n: int) -> np.ndarray:
        """n points over the range (every choice for a choice parameter; whole numbers for int)."""
        if self.kind == "choice":
            return np.asarray(self.choices, dtype=np.float64)
        pts = np.geomspace(self.low, self.high, n) if self.log_scale else np.linspace(self.low, self.high, n)
        return np.unique(np.round(pts)) if self.kind == "int" else pts

    def check(self, values: np.ndarray, where: str = "parameters") -> np.ndarray:
        """The values as float64, or ValueError naming the parameter, the bad value and the admissible ones."""
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{where}.{self.name}: values must be finite numbers")
        if self.kind == "choice":
            bad = v[~np.isin(v, self.choices)]
            if bad.size:
                raise ValueError(f"{where}.{self.name}: {bad[0]:g} is not one of {list(self.choices)}")
            return v
        if self.kind == "int":
            if np.any(v != np.round(v)):
                raise ValueError(f"{where}.{self.name}: whole numbers only (got {v[v != np.round(v)][0]:g})")
        bad = v[(v < self.low) | (v > self.high)]
        if bad.size:
            raise ValueError(f"{where}.{self.name}: {bad[0]:g} is outside [{self.low:g}, {self.high:g}]")
        return v


@dataclass(frozen=True)
class Strategy:
    """A CEX strategy: its name, parameter schema and its half of a backtest.

    `prepare(bars, params)` (params: {name: [B]} checked by `batch`) returns what the bracket-order
    state machine of quant_core.strategies.backtest reads: the window's bars {open, high, low, close,
    volume}, entry signals [T, S] (+1 long, -1 short, 0 none) of S signal sets, ATRs [T, A], and the
    per-combination lanes {set, atr_row, rr_ratio, stop_atr_mult, max_hold_bars}."""

    name: str
    params: tuple[StrategyParam, ...]
    description: str = ""
    prepare: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def param(self, name: str) -> StrategyParam:
        for p in self.params:
            if p.name == name:
                return p
        close = difflib.get_close_matches(name, [p.name for p in self.params], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"strategy {self.name!r} has no parameter {name!r}{hint}; its parameters are "
                       f"{[p.name for p in self.params]}")

    def defaults(self) -> dict[str, float]:
        return {p.name: float(p.default) for p in self.params}

    def resolve(self, given: dict[str, float] | None = None, where: str = "parameters") -> dict[str, float]:
        """Defaults overridden by `given` (user units), each value checked against the schema."""
        out = self.defaults()
        for name, value in (given or {}).items():
            p = self.param(name)
            if isinstance(value, list):
                if len(value) != 1:
                    raise ValueError(f"{where}.{name}: a strategy parameter is one number, got {value}")
                value = value[0]
            out[p.name] = float(p.check(np.asarray([value]), where)[0])
        return out

    def batch(self, combos: dict[str, np.ndarray], where: str = "parameters") -> dict[str, np.ndarray]:
        """{name: [B]} for every parameter: given columns checked, missing ones filled with the default."""
        sizes = {np.asarray(v).reshape(-1).size for v in combos.values()}
        if len(sizes) > 1:
            raise ValueError(f"{where}: every parameter needs the same number of combinations, got sizes {sizes}")
        b = sizes.pop() if sizes else 1
        out = {}
        for name in combos:
            self.param(name)
        for p in self.params:
            col = combos.get(p.name)
            out[p.name] = (np.full(b, float(p.default)) if col is None
                           else p.check(np.asarray(col, dtype=np.float64).reshape(-1), where))
        return out
