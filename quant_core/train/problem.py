"""What a search needs of the thing it tunes, so grid, random and Optuna search serve every tunable.

A `SearchProblem` gives the parameters a search leaves alone (`base`, user units, {name: [n]}), the
parameter schema (`quant_core.params.Param`) its axes come from, and an evaluator factory:
`evaluator(metrics, n_sub_periods)` scores a batch {name: [B, n]} in one call as [B, metrics, segments],
the segments being the training part, optionally `n_sub_periods` equal sub-periods of it, then the
validation part when there is one.

`search_axes` turns a schema plus the run's overrides (`search_settings.parameter_space` for grid and
random, `optuna_settings.parameter_config` for Optuna) into `SearchAxis`es: one per searched parameter,
or one per token when a parameter is searched token by token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from quant_core.params import Kind, Param, find_param, points_between
from quant_core.spec import Range

Points = Literal["grid", "random", "optuna"]
SPACE = "optimisation_settings.search_settings.parameter_space"
CONFIG = "optimisation_settings.optuna_settings.parameter_config"


class NoFiniteCandidate(RuntimeError):
    """Every candidate of a search scored a non-finite objective (bad data, or none met a guard such as
    strategy_settings.min_trades)."""


class NothingToSearch(ValueError):
    """The schema and the run's overrides leave no parameter to search."""


class BatchEvaluator(Protocol):
    def scores(self, params: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchAxis:
    """One searched dimension: a parameter (token None = every token at once), and either its values
    (a grid, or a list to draw from) or a range [low, high] to draw from."""

    name: str
    token: int | None
    values: np.ndarray | None
    low: float = 0.0
    high: float = 0.0
    log_scale: bool = False
    kind: Kind = "float"

    @property
    def label(self) -> str:
        """The name Optuna stores the axis under."""
        return self.name if self.token is None else f"{self.name}_{self.token}"


def expand_around(low: float, high: float, log_scale: bool, x0: float) -> tuple[float, float]:
    """optuna_settings.expand_around: [x0/4, 4 x0] on a log scale, x0 +- a quarter of the range otherwise,
    within [low, high] (the whole range when that leaves nothing)."""
    if log_scale:
        lo, hi = max(low, x0 / 4), min(high, x0 * 4)
    else:
        quarter = (high - low) / 4
        lo, hi = max(low, x0 - quarter), min(high, x0 + quarter)
    return (lo, hi) if lo < hi else (low, high)


def _tokens(scalar: bool, n_tokens: int) -> list[int | None]:
    return [None] if scalar or n_tokens == 1 else list(range(n_tokens))


def _range_axes(p: Param, entry, points: Points, n_tokens: int, base: np.ndarray, expand: bool,
                where: str) -> list[SearchAxis]:
    if p.hard_limits:
        p.check([entry.low, entry.high], where)
    low, high = entry.low, entry.high
    # a range's scalar setting defaults per method: grid/random one value for every token, Optuna per token
    scalar = p.scalar or (entry.scalar if entry.scalar is not None else points != "optuna")
    if points == "optuna":
        if expand:
            low, high = expand_around(low, high, entry.log_scale, float(np.mean(base)))
        if p.kind == "int":
            low, high = float(np.ceil(low)), float(np.floor(high))
        return [SearchAxis(p.name, t, None, low, high, entry.log_scale, p.kind) for t in _tokens(scalar, n_tokens)]
    if points == "grid":
        vals = points_between(low, high, entry.n, entry.log_scale, p.kind == "int")
        return [SearchAxis(p.name, t, vals, kind=p.kind) for t in _tokens(scalar, n_tokens)]
    return [SearchAxis(p.name, t, None, low, high, entry.log_scale, p.kind) for t in _tokens(scalar, n_tokens)]


def search_axes(params: tuple[Param, ...], spec: Any, points: Points, base: dict[str, np.ndarray],
                n_tokens: int, owner: str = "the tunable") -> list[SearchAxis]:
    """The axes of a search over `params` under the spec's overrides (module docstring).

    A parameter nothing reads under the spec is never searched; one gradient descent cannot move
    (hook bounds, frozen engine settings) only when the run lists it."""
    opt = spec.optimisation_settings
    optuna = points == "optuna"
    overrides = opt.optuna_settings.parameter_config if optuna else opt.search_settings.parameter_space
    where = CONFIG if optuna else SPACE
    names = {n: p for p in params for n in (p.name, *p.aliases)}
    given: dict[str, Any] = {}
    for key, entry in overrides.items():
        if key not in names:
            find_param(params, key, owner)  # raises naming the close and the valid ones
        given[names[key].name] = entry
    axes: list[SearchAxis] = []
    for p in params:
        if not p.active(spec):
            continue
        entry = given.get(p.name)
        if p.kind == "choice":
            if entry is not None and not isinstance(entry, list):
                raise ValueError(f"{where}.{p.name}: a choice parameter takes a list of its choices "
                                 f"{list(p.choices)}" if not optuna else
                                 f"{where}.{p.name}: Optuna searches every choice of {list(p.choices)}; remove the "
                                 "entry (or fix the value under `parameters`)")
            values = p.check(entry, where) if entry is not None else np.asarray(p.choices, dtype=np.float64)
            axes.append(SearchAxis(p.name, None, values, kind="choice"))
            continue
        if entry is None:
            if not p.trainable:
                continue
            entry = Range(low=p.low, high=p.high, log_scale=p.log_scale, n=opt.search_settings.default_points)
        if isinstance(entry, list):
            if optuna:
                raise ValueError(f"{where}.{p.name}: give a range {{low, high}} for Optuna")
            values = p.check(entry, where) if p.hard_limits else np.asarray(entry, dtype=np.float64)
            axes.append(SearchAxis(p.name, None, values, kind=p.kind))
            continue
        axes.extend(_range_axes(p, entry, points, n_tokens, base[p.name], opt.optuna_settings.expand_around,
                                where))
    if not axes:
        raise NothingToSearch(f"{owner} has no parameter to search; list some under {where}")
    return axes


def check_overrides(params: tuple[Param, ...], spec: Any, base: dict[str, np.ndarray], n_tokens: int,
                    owner: str) -> None:
    """Both override tables (parameter_space, parameter_config) name real parameters with admissible
    values, whichever method runs: checked when the spec is loaded, before any work."""
    for points in ("grid", "optuna"):
        try:
            search_axes(params, spec, points, base, n_tokens, owner)
        except NothingToSearch:
            pass  # a rule with nothing to search is fine until someone searches it


@dataclass(frozen=True)
class SearchProblem:
    base: dict[str, np.ndarray]  # {name: [n]}: every parameter's starting value (user units)
    tokens: list[str]  # the n per-token columns (alphabetical); one entry for a CEX strategy
    params: tuple[Param, ...]
    spec: Any  # the run spec (search overrides, active flags)
    owner: str  # "rule 'momentum'", "strategy 'liquidity_sweep'": named in errors
    has_validation: bool
    evaluator: Callable[[tuple[str, ...], int], BatchEvaluator]  # (metrics, n_sub_periods)
    table_metrics: tuple[str, ...]  # reported per candidate besides the objective

    def axes(self, points: Points) -> list[SearchAxis]:
        return search_axes(self.params, self.spec, points, self.base, len(self.tokens), self.owner)
