"""Markets and universes: what the platform ingests and what it trains, declared as data.

A registry file (YAML) lists the markets (exchange + symbol + timeframe, and where their candles
come from) and the universes (a strategy over some of those markets, with its run spec,
walk-forward settings and stage thresholds). Adding a market or a universe needs no code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quant_core.data.schema import Market, to_utc
from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS, StageThresholds
from quant_core.live.breakers import check_limits
from quant_core.live.settings import LiveSettings
from quant_core.runspec import check_spec
from quant_core.spec import RunSpec
from quant_core.spec_sections import SPLITTABLE_METHODS
from quant_core.validate.folds import WalkForwardSettings
from quant_core.yaml_files import YamlFileError, load_yaml_file


class RegistryError(ValueError):
    """The registry file is unusable; the message names the entry and field."""


class MarketEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    exchange: str
    symbol: str
    timeframe: str
    source: Literal["shipped", "file", "ccxt", "synthetic"] = Field(
        "shipped",
        description="shipped: the prices that ship with the project; file: `path` (long format); ccxt: the "
        "exchange's REST API through ccxt (incremental, from `since`); synthetic: seeded generated candles",
    )
    path: str | None = None
    since: str | None = Field(None, description="ccxt / synthetic: first candle to ingest (UTC date or timestamp)")
    exchange_config: dict[str, Any] | None = Field(
        None, description="ccxt: passed to the exchange constructor (urls, options, timeout); API keys come "
        "from QUANT_<EXCHANGE>_API_KEY / _SECRET environment variables, never from here")
    seed: int = Field(0, description="synthetic: random seed (same seed, same candles)")
    shocks: dict[str, float] | None = Field(
        None, description="synthetic: planted events, {UTC day: log return}; every price from that day's first "
        "candle on is multiplied by exp(shock) (e.g. {'2024-05-06': -0.3} for a 26% crash), to test breakers")

    @model_validator(mode="after")
    def _path(self) -> MarketEntry:
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs `path` (a long-format price file)")
        if self.source in ("ccxt", "synthetic") and not self.since:
            raise ValueError(f"source {self.source!r} needs `since` (the first candle to ingest, e.g. '2024-01-01')")
        if self.since:
            to_utc(self.since)  # raises naming the bad value
        if self.exchange_config is not None and self.source != "ccxt":
            raise ValueError("`exchange_config` applies to source 'ccxt' only")
        if self.shocks is not None:
            if self.source != "synthetic":
                raise ValueError("`shocks` applies to source 'synthetic' only")
            from quant_core.data.synthetic import _check_shocks

            _check_shocks(self.shocks)
        secret = {"apiKey", "secret", "password", "privateKey"} & set(self.exchange_config or {})
        if secret:
            raise ValueError(f"exchange_config must not hold credentials {sorted(secret)}: set "
                             f"QUANT_{self.exchange.upper()}_API_KEY / _SECRET in the environment instead")
        Market(self.exchange, self.symbol, self.timeframe)  # validates the identity
        if self.source == "ccxt":
            from quant_core.data.ccxt_settings import check_exchange_id

            check_exchange_id(self.exchange)
        return self

    @property
    def market(self) -> Market:
        return Market(self.exchange, self.symbol, self.timeframe)

    @property
    def key(self) -> str:
        return self.market.key


class ThresholdSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    discovery_below: int = StageThresholds.discovery_below
    mature_above: int = StageThresholds.mature_above
    mature_min_oos_sharpe: float = StageThresholds.mature_min_oos_sharpe
    mature_max_p_value: float = StageThresholds.mature_max_p_value
    mature_max_pbo: float = StageThresholds.mature_max_pbo
    retire_below_sharpe: float = StageThresholds.retire_below_sharpe

    def thresholds(self) -> StageThresholds:
        return StageThresholds(**self.model_dump())


class Universe(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="identifier: lower-case letters, digits and underscores")
    description: str = ""
    markets: dict[str, str] = Field(description="token -> market key (exchange.BASE-QUOTE.timeframe)")
    spec: RunSpec
    walk_forward: WalkForwardSettings = Field(default_factory=WalkForwardSettings)
    stage_thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    circuit_breakers: dict[str, float] = Field(
        default_factory=dict, description="limits overriding the defaults (quant_core.live.breakers defines each)")
    live: LiveSettings = Field(default_factory=LiveSettings, description="the live gate and the challenger test")
    search_steps: int | None = Field(None, ge=1, le=256, description="steps each retrain's search is cut into "
                                     "(grid/random: candidate ranges; optuna: workers sharing one study); the "
                                     "launchpad's search_steps overrides it")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError(f"{v!r}: use lower-case letters, digits and underscores, starting with a letter")
        return v

    @field_validator("circuit_breakers")
    @classmethod
    def _breakers(cls, v: dict[str, float]) -> dict[str, float]:
        check_limits(v)  # names and finite, non-negative limits
        return v

    @model_validator(mode="after")
    def _tokens_match(self) -> Universe:
        method = self.spec.optimisation_settings.method
        if (self.search_steps or 1) > 1 and method not in SPLITTABLE_METHODS:
            raise ValueError(f"search_steps: {self.search_steps}: method {method} trains one path and cannot be split "
                             f"into steps; remove search_steps (it applies to {', '.join(SPLITTABLE_METHODS)})")
        check_spec(self.spec)  # what its pool rule or strategy accepts, at registry load
        if (self.spec.kind == "pool" and self.spec.rule.split("__")[-1] == "min_variance"
                and self.spec.target_weights_start == "first_target"):
            # the platform trains for live trading: no configuration may be chosen on prices it could not have seen
            raise ValueError("spec.target_weights_start: 'first_target' (the reference's timing, the default) lets "
                             "min_variance trade each chunk on a variance that includes the chunk's closing price, a "
                             "one-chunk look-ahead; a universe trains for live trading, so set "
                             "target_weights_start: initial_weights")
        if self.spec.kind == "strategy" and len(self.markets) != 1:
            raise ValueError(f"strategy {self.spec.strategy!r} trades one market; markets lists {len(self.markets)}: "
                             "give one `TOKEN: market key` entry (and spec.tokens: [TOKEN])")
        if sorted(self.markets) != sorted(self.spec.tokens):
            raise ValueError(
                f"markets cover tokens {sorted(self.markets)} but spec.tokens is {self.spec.tokens}: "
                f"give one market per token"
            )
        return self

    @property
    def effective_circuit_breakers(self) -> dict[str, float]:
        return {**DEFAULT_CIRCUIT_BREAKERS, **self.circuit_breakers}


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    markets: list[MarketEntry]
    universes: list[Universe] = Field(default_factory=list)
    partitions_start: str = Field(
        "2022-01-01", description="first day of the daily candle partitions (UTC); retrain weeks start once a "
        "universe's lookback fits after it")

    @field_validator("partitions_start")
    @classmethod
    def _start(cls, v: str) -> str:
        to_utc(v)
        return v

    @model_validator(mode="after")
    def _references(self) -> Registry:
        keys = [m.key for m in self.markets]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"markets listed twice: {dupes}")
        names = [u.name for u in self.universes]
        if len(set(names)) != len(names):
            raise ValueError(f"universe names must be unique, got {names}")
        by_key = {m.key: m for m in self.markets}
        for u in self.universes:
            missing = sorted(set(u.markets.values()) - set(keys))
            if missing:
                raise ValueError(f"universe {u.name!r} uses markets {missing} that are not in `markets` ({keys})")
            frames = {token: by_key[key].timeframe for token, key in sorted(u.markets.items())}
            if len(set(frames.values())) > 1:
                # a pool's price panel has one row per time step for every token
                raise ValueError(f"universe {u.name!r} mixes timeframes {frames}: a universe's markets share one "
                                 "timeframe; list markets of the same timeframe (add them to `markets` if needed)")
        return self

    def market(self, key: str) -> MarketEntry:
        for m in self.markets:
            if m.key == key:
                return m
        raise KeyError(f"market {key!r} is not in the registry; known: {[m.key for m in self.markets]}")

    def universe(self, name: str) -> Universe:
        for u in self.universes:
            if u.name == name:
                return u
        raise KeyError(f"universe {name!r} is not in the registry; known: {[u.name for u in self.universes]}")


def _where(loc: tuple) -> str:
    """An error's field path without the run spec's union tag (universes.0.spec.pool.x -> universes.0.spec.x)."""
    parts = [str(p) for i, p in enumerate(loc) if not (i and loc[i - 1] == "spec" and p in ("pool", "strategy"))]
    return ".".join(parts)


def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"registry file {path} does not exist")
    try:
        data = load_yaml_file(path, "registry file")
    except YamlFileError as exc:
        raise RegistryError(str(exc)) from None
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        lines = [f"- {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise RegistryError(f"invalid registry {path}:\n" + "\n".join(lines)) from None
