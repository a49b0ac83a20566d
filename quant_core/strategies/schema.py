"""The contract between CEX strategies and the backtester: parameter schemas, strategies as data, and
what a strategy hands the state machine (`Prepared`).

A CEX strategy trades one market's candles. Its parameters are `quant_core.params.Param`s with a
default, a search range and a kind: `float` (continuous), `int` (whole numbers in [low, high]) or
`choice` (one of a few values; 0 may stand for "off"), the same type the pool rules use. Rules that
tie parameters together (a channel's exit period below its entry period) are `Constraint`s, checked
with the schema so that a bad combination is refused before any signal is computed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from quant_core.params import Param, find_param

StopAnchor = Literal["extreme", "fill"]

# a strategy's parameter: its range bounds its values (signals are not defined outside it)
strategy_param = functools.partial(Param, hard_limits=True)


class Prepared(NamedTuple):
    """A strategy's half of a backtest: what the bracket-order state machine of
    quant_core.strategies.backtest reads for a batch of B combinations over the window's T bars.

    - bars: the window's {open, high, low, close, volume}, each [T];
    - entries: [T, S] int8 entry signals of S signal sets (+1 long, -1 short, 0 none), decided at the close;
    - atr: [T, A] ATRs, one column per ATR period;
    - lanes: per-combination [B] columns: set (int, column of entries/exits), atr_row (int, column of atr),
      stop_atr_mult, max_hold_bars and, for a profit target, rr_ratio (leave it out: no target);
    - exits: [T, S] int8 exit signals of the same signal sets, or None (no exit signals: the state machine
      compiles without them). +1 closes an open long at that bar's close, -1 an open short;
    - stop_anchor: where the initial stop sits, stop_atr_mult x ATR of the signal bar away from "extreme"
      (the signal bar's low for a long, high for a short) or "fill" (the entry fill).
    """

    bars: dict[str, np.ndarray]
    entries: Any  # [T, S] int8 (NumPy or JAX)
    atr: np.ndarray
    lanes: dict[str, np.ndarray]
    exits: Any | None = None  # [T, S] int8 (NumPy or JAX) or None
    stop_anchor: StopAnchor = "extreme"


class Constraint(NamedTuple):
    """A rule between parameters: `holds(*columns)` -> bool [B] over the named parameters' columns."""

    names: tuple[str, ...]
    holds: Callable[..., np.ndarray]
    text: str  # the rule for people, naming the parameters ("exit_period must be below entry_period")


@dataclass(frozen=True)
class Strategy:
    """A CEX strategy: its name, parameter schema and its half of a backtest.

    `prepare(bars, params)` (params: {name: [B]} checked by `batch`) returns a `Prepared`. A module of
    quant_core.strategies that defines a module-level `STRATEGY = Strategy(...)` is registered
    automatically (see quant_core.strategies)."""

    name: str
    params: tuple[Param, ...]
    description: str = ""
    prepare: Callable[..., Prepared] | None = field(default=None, compare=False, repr=False)
    constraints: tuple[Constraint, ...] = field(default=(), compare=False, repr=False)

    def param(self, name: str) -> Param:
        return find_param(self.params, name, f"strategy {self.name!r}")

    def defaults(self) -> dict[str, float]:
        return {p.name: float(p.default) for p in self.params}

    def valid(self, combos: dict[str, np.ndarray]) -> np.ndarray:
        """bool [B]: which combinations (every parameter given, e.g. from `batch`) meet every constraint;
        a search can drop the others instead of being refused."""
        cols = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in combos.items()}
        ok = np.ones(max((c.size for c in cols.values()), default=1), dtype=bool)
        for c in self.constraints:
            ok &= np.asarray(c.holds(*(cols[n] for n in c.names)), dtype=bool).reshape(-1)
        return ok

    def check_constraints(self, combos: dict[str, np.ndarray], where: str = "parameters") -> None:
        """ValueError naming the broken rule, its parameters and the first offending combination."""
        cols = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in combos.items()}
        for c in self.constraints:
            bad = np.flatnonzero(~np.asarray(c.holds(*(cols[n] for n in c.names)), dtype=bool).reshape(-1))
            if bad.size:
                j = int(bad[0])
                values = ", ".join(f"{n}={cols[n][j if cols[n].size > 1 else 0]:g}" for n in c.names)
                at = f" (combination {j} of {cols[c.names[0]].size})" if cols[c.names[0]].size > 1 else ""
                raise ValueError(f"{where}: {c.text}; got {values}{at}")

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
        self.check_constraints(out, where)
        return out

    def batch(self, combos: dict[str, np.ndarray], where: str = "parameters") -> dict[str, np.ndarray]:
        """{name: [B]} for every parameter (`complete`), then the constraints between parameters checked."""
        out = self.complete(combos, where)
        self.check_constraints(out, where)
        return out

    def complete(self, combos: dict[str, np.ndarray], where: str = "parameters") -> dict[str, np.ndarray]:
        """{name: [B]} for every parameter: given columns checked against the schema, missing ones filled with
        the default (constraints between parameters not checked: see `valid`, `check_constraints`)."""
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
