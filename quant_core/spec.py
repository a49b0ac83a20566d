"""The run spec: a validated QuantAMM-style run fingerprint, a common part plus one section per kind.

Users already write run fingerprints (plain dicts with keys such as `rule`, `tokens`,
`startDateString`, `chunk_period`, `optimisation_settings`). `PoolSpec` accepts them unchanged, with the
reference simulator's defaults; a spec that names a `strategy` is a `StrategySpec` (a CEX strategy on one
market's candles), and a key of the other kind is refused rather than ignored. `RunSpec` is the
discriminated union of the two. Unknown or inconsistent keys are rejected with a message that names the
key and the fix. Defaults live here and nowhere else.

This module checks what a spec can check alone; whether a rule or strategy exists and its `parameters`
and search ranges fit its schema is checked by its tunable (`quant_core.runspec.load_run_spec`), so this
module imports neither the simulator nor the strategies.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# the training methods (quant_core.train.trainer); the CLI and the Dagster launchpad offer these
Method = Literal["gradient_descent", "optuna", "grid", "random"]
METHODS: tuple[str, ...] = get_args(Method)


class RunSpecError(ValueError):
    """A run spec that cannot be used; the message names each bad field and how to fix it."""


def parse_utc(value: str | datetime) -> datetime:
    """Dates in specs are UTC: 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (or an ISO timestamp)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(
            f"cannot read date {value!r}: write it as 'YYYY-MM-DD HH:MM:SS' (UTC)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Range(_Strict):
    """A search range of one parameter in user units (optuna_settings.parameter_config and
    search_settings.parameter_space)."""

    low: float
    high: float
    log_scale: bool = False
    n: int = Field(5, ge=2, description="grid points (method grid; geometric when log_scale)")
    scalar: bool | None = Field(None, description="one value for every token (true) or each token searched "
                                "separately (false); default: true for grid/random, false for Optuna")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log_scale and self.low <= 0:
            raise ValueError(f"log_scale needs low > 0 (got {self.low}); raise low or set log_scale: false")
        return self


class OptunaStorage(_Strict):
    type: Literal["sqlite", "mysql", "postgresql"] = "sqlite"
    url: str | None = None


class OptunaEarlyStopping(_Strict):
    enabled: bool = False
    patience: int = Field(100, ge=1)
    min_improvement: float = Field(0.001, ge=0)


class OptunaSettings(_Strict):
    study_name: str | None = None
    storage: OptunaStorage = Field(default_factory=OptunaStorage)
    n_trials: int = Field(20, ge=1)
    n_jobs: int = Field(4, ge=1, description="trials evaluated together in one batched (vmapped) call")
    timeout: float | None = Field(7200, gt=0)
    n_startup_trials: int = Field(10, ge=0)
    sampler: Literal["tpe", "cmaes", "gp", "random"] = "tpe"
    early_stopping: OptunaEarlyStopping = Field(default_factory=OptunaEarlyStopping)
    expand_around: bool = True
    multi_objective: bool = False
    make_scalar: bool = False
    overfitting_penalty: float = Field(0.0, ge=0)
    n_sub_periods: int = Field(4, ge=2, description="multi_objective: sub-periods of the training part")
    parameter_config: dict[str, Range] = Field(default_factory=dict)


class SearchSettings(_Strict):
    """Grid and random search (methods grid / random); see quant_core.train.grid."""

    parameter_space: dict[str, list[float] | Range] = Field(default_factory=dict)
    default_points: int = Field(5, ge=2, description="grid points for a parameter not in parameter_space")
    n_samples: int = Field(256, ge=1, description="random search: candidates drawn")
    batch_size: int = Field(256, ge=1, description="candidates scored together in one vmapped call")
    top_k: int = Field(10, ge=1)

    @field_validator("parameter_space")
    @classmethod
    def _values(cls, v: dict) -> dict:
        for name, entry in v.items():
            if isinstance(entry, list) and not entry:
                raise ValueError(f"parameter_space.{name}: list at least one value, or give {{low, high}}")
        return v


class StrategySettings(_Strict):
    """Costs, sizing and guards of a CEX strategy backtest (`strategy: liquidity_sweep`)."""

    taker_fee_bps: float = Field(10.0, ge=0, lt=10_000, description="taker fee charged on entry and on exit")
    slippage_bps: float = Field(2.0, ge=0, lt=10_000, description="adverse fill vs the bar price, both sides")
    position_fraction: float = Field(1.0, gt=0, le=1, description="share of the equity each trade commits")
    initial_capital: float = Field(10_000.0, gt=0, description="starting equity in the quote currency")
    min_trades: int = Field(5, ge=0, description="training: candidates with fewer trades in the scored part "
                            "score -inf, so a handful of lucky trades cannot win the search")


class OptimisationSettings(_Strict):
    method: Method = "gradient_descent"
    optimiser: Literal["adam", "adamw", "sgd"] = "adamw"
    base_lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(8, ge=1)
    n_iterations: int = Field(1000, ge=1)
    n_parameter_sets: int = Field(4, ge=1)
    noise_scale: float = Field(0.1, ge=0)
    sample_method: Literal["uniform", "exponential"] = "uniform"
    training_data_kind: Literal["historic"] = "historic"
    use_gradient_clipping: bool = True
    clip_norm: float = Field(10.0, gt=0)
    lr_schedule_type: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = Field(100, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    use_plateau_decay: bool = False
    decay_lr_plateau: int = Field(100, ge=1)
    decay_lr_ratio: float = Field(0.8, gt=0, le=1)
    early_stopping: bool = True
    early_stopping_patience: int = Field(200, ge=1)
    early_stopping_metric: str = "daily_log_sharpe"
    val_fraction: float = Field(0.2, ge=0, lt=1)
    use_swa: bool = False
    swa_start_frac: float = Field(0.75, ge=0, le=1)
    swa_freq: int = Field(5, ge=1)
    initial_random_key: int = 0
    n_ensemble_members: int = Field(1, ge=1)
    ensemble_init_method: Literal["lhs", "sobol", "grid", "gaussian"] = "lhs"
    ensemble_init_scale: float = Field(1.0, ge=0)
    ensemble_init_seed: int = 42
    track_checkpoints: bool = False
    checkpoint_interval: int = Field(50, ge=1)
    optuna_settings: OptunaSettings = Field(default_factory=OptunaSettings)
    search_settings: SearchSettings = Field(default_factory=SearchSettings)


class SpecBase(_Strict):
    """What every run spec holds, whatever it tunes: tokens, windows, the objective, the training method."""

    kind: ClassVar[str]
    tokens: list[str] = Field(default_factory=lambda: ["BTC", "ETH", "USDC"])
    startDateString: str = "2023-01-01 00:00:00"
    endDateString: str = "2023-06-01 00:00:00"
    endTestDateString: str | None = None
    # days of data before a window that warm up the estimators (pools) or indicators (CEX strategies)
    max_memory_days: float = Field(365.0, gt=0)
    return_val: str = "daily_log_sharpe"
    optimisation_settings: OptimisationSettings = Field(default_factory=OptimisationSettings)
    # a number, one value per token, or (ensemble__ rules) one list per ensemble member
    parameters: dict[str, float | list[float] | list[list[float]]] | None = None

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one token, e.g. ['BTC', 'ETH', 'USDC']")
        dupes = sorted({t for t in v if v.count(t) > 1})
        if dupes:
            raise ValueError(f"duplicate tokens {dupes}: list each token once")
        return v

    @field_validator("startDateString", "endDateString", "endTestDateString")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            parse_utc(v)
        return v

    @model_validator(mode="after")
    def _common(self) -> SpecBase:
        start, end = self.start, self.end
        if not start < end:
            raise ValueError(f"startDateString ({self.startDateString}) must be before endDateString")
        if self.endTestDateString is not None and not self.end_test > end:
            raise ValueError(
                f"endTestDateString ({self.endTestDateString}) must be after endDateString ({self.endDateString})"
            )
        opt = self.optimisation_settings
        if opt.method == "optuna" and opt.optuna_settings.overfitting_penalty > 0 and opt.val_fraction == 0:
            raise ValueError("optimisation_settings.optuna_settings.overfitting_penalty compares the training and "
                             "validation scores: set optimisation_settings.val_fraction > 0 (e.g. 0.2) or the "
                             "penalty to 0")
        return self

    @property
    def start(self) -> datetime:
        return parse_utc(self.startDateString)

    @property
    def end(self) -> datetime:
        return parse_utc(self.endDateString)

    @property
    def end_test(self) -> datetime | None:
        return parse_utc(self.endTestDateString) if self.endTestDateString else None

    @property
    def sorted_tokens(self) -> list[str]:
        """The reference simulator orders tokens alphabetically; per-token vectors follow it."""
        return sorted(self.tokens)

    def with_window(self, start: datetime, end: datetime, end_test: datetime | None = None) -> RunSpec:
        """A copy of this spec over another window (walk-forward folds)."""
        fmt = "%Y-%m-%d %H:%M:%S"
        return self.model_copy(
            update={
                "startDateString": start.strftime(fmt),
                "endDateString": end.strftime(fmt),
                "endTestDateString": end_test.strftime(fmt) if end_test else None,
            }
        )


class PoolSpec(SpecBase):
    """A TFMM pool run. Field names and defaults follow QuantAMM's run fingerprint, so an existing
    fingerprint works unchanged. Whether `rule` names a pool and `parameters` fit it is checked by the
    pool's tunable (quant_core.runspec.load_run_spec)."""

    kind: ClassVar[str] = "pool"
    rule: str = "mean_reversion_channel"
    freq: Literal["minute", "hour", "day"] = "minute"
    initial_pool_value: float = Field(1_000_000.0, gt=0)
    numeraire: str | None = None
    # timing (minutes)
    chunk_period: int = Field(1440, ge=1)
    weight_interpolation_period: int = Field(1440, ge=1)
    bout_offset: int = Field(10080, ge=0)
    # weights
    maximum_change: float = Field(3e-4, gt=0)
    minimum_weight: float | None = Field(None, gt=0, lt=1)
    weight_interpolation_method: Literal["linear", "optimal"] = "linear"
    weight_calculation_method: Literal["auto", "vectorized", "scan"] = "auto"
    ste_max_change: bool = False
    ste_min_max_weight: bool = False
    use_alt_lamb: bool = False
    use_pre_exp_scaling: bool = True
    use_fused_reserves: bool = True
    checkpoint_fused: str = "scan"
    # market
    fees: float = Field(0.0, ge=0, lt=1)
    protocol_fee_split: float = Field(0.0, ge=0, le=1)
    arb_fees: float = Field(0.0, ge=0, lt=1)
    gas_cost: float = Field(0.0, ge=0)
    do_arb: bool = True
    arb_frequency: int = Field(1, ge=1)
    arb_quality: float = Field(1.0, ge=0, le=1)
    noise_trader_ratio: float = Field(0.0, ge=0, le=1)
    # trad_hodling_index_market_cap: the yearly management fee its CEX portfolio pays (the reference's 4%)
    annual_streaming_fee: float = Field(0.04, ge=0, lt=1)
    do_trades: bool = False
    # initial values (training starts here)
    initial_memory_length: float = Field(10.0, gt=0)
    initial_memory_length_delta: float = 0.0
    initial_k_per_day: float = 20.0
    initial_weights_logits: float | list[float] = 1.0
    initial_log_amplitude: float = 0.0
    initial_raw_width: float = 0.0
    initial_raw_exponents: float = 0.0
    initial_pre_exp_scaling: float = 0.5
    subsidary_pools: list[dict[str, Any]] = Field(default_factory=list)
    # objective and robustness
    price_noise_sigma: float = Field(0.0, ge=0)
    turnover_penalty: float = Field(0.0, ge=0)
    include_flipped_training_data: bool = False
    # additions (see docs/run-spec.md)
    initial_weights: list[float] | None = None

    @property
    def ensemble(self) -> bool:
        return self.rule.startswith("ensemble__") or "__ensemble__" in self.rule

    @model_validator(mode="after")
    def _pool(self) -> PoolSpec:
        n = len(self.tokens)
        if self.weight_interpolation_period > self.chunk_period:
            raise ValueError(
                f"weight_interpolation_period ({self.weight_interpolation_period}) must be <= chunk_period "
                f"({self.chunk_period}): lower weight_interpolation_period or raise chunk_period"
            )
        if self.numeraire is not None and self.numeraire not in self.tokens:
            raise ValueError(f"numeraire {self.numeraire!r} is not one of tokens {self.tokens}")
        if isinstance(self.initial_weights_logits, list) and len(self.initial_weights_logits) != n:
            raise ValueError(f"initial_weights_logits has {len(self.initial_weights_logits)} values for {n} tokens")
        if self.initial_weights is not None:
            w = self.initial_weights
            if len(w) != n:
                raise ValueError(f"initial_weights has {len(w)} values for {n} tokens")
            if any(x <= 0 for x in w) or abs(sum(w) - 1.0) > 1e-9:
                raise ValueError(f"initial_weights {w} must be positive and sum to 1")
        members = self.optimisation_settings.n_ensemble_members
        if members > 1 and not self.ensemble:
            raise ValueError(f"optimisation_settings.n_ensemble_members is {members}, which needs an ensemble__ "
                             f"rule: use rule 'ensemble__{self.rule}' or set n_ensemble_members: 1")
        if self.minimum_weight is not None and self.minimum_weight * n >= 1:
            raise ValueError(f"minimum_weight {self.minimum_weight} x {n} tokens must be < 1")
        for name, value in (self.parameters or {}).items():
            if isinstance(value, list) and value and isinstance(value[0], list):
                if any(len(v) != n for v in value) or not self.ensemble:
                    raise ValueError(
                        f"parameters.{name}: a list of lists gives one value per token for each ensemble "
                        f"member; it needs an ensemble__ rule and {n} values in each inner list"
                    )
            elif isinstance(value, list) and len(value) != n:
                raise ValueError(
                    f"parameters.{name} has {len(value)} values for {n} tokens: give one number or "
                    f"one value per token in alphabetical token order {sorted(self.tokens)}"
                )
        return self

    @property
    def effective_minimum_weight(self) -> float:
        return self.minimum_weight if self.minimum_weight is not None else 0.1 / len(self.tokens)


def _strategy_optimisation() -> OptimisationSettings:
    return OptimisationSettings(method="random")  # gradient descent cannot train discrete signals


class StrategySpec(SpecBase):
    """A CEX strategy trading one market's candles (`strategy: liquidity_sweep`). Whether `strategy` exists
    and `parameters` / search ranges fit its schema is checked by its tunable (quant_core.runspec)."""

    kind: ClassVar[str] = "strategy"
    tokens: list[str] = Field(default_factory=lambda: ["ASSET"], description="the traded market's base asset "
                              "(one token; on the platform it names the universe's market)")
    strategy: str = Field(description="the CEX strategy (e.g. liquidity_sweep, donchian_breakout)")
    strategy_settings: StrategySettings = Field(default_factory=StrategySettings)
    optimisation_settings: OptimisationSettings = Field(default_factory=_strategy_optimisation)

    @field_validator("optimisation_settings", mode="before")
    @classmethod
    def _random_by_default(cls, v: Any) -> Any:
        """A strategy's default method is random search, also when other optimisation settings are given."""
        if isinstance(v, dict) and "method" not in v:
            return {**v, "method": "random"}
        return v

    @model_validator(mode="after")
    def _strategy(self) -> StrategySpec:
        if len(self.tokens) != 1:
            raise ValueError(f"strategy {self.strategy!r} trades one market: list one token in tokens, got "
                             f"{self.tokens}")
        if self.optimisation_settings.method == "gradient_descent":
            raise ValueError(f"strategy {self.strategy!r} trades discrete signals, which gradient descent cannot "
                             "train: set optimisation_settings.method to grid, random or optuna")
        return self


def spec_kind(value: Any) -> str:
    """Which section a spec is: a CEX strategy when it names one (`strategy:`), else a pool."""
    if isinstance(value, SpecBase):
        return value.kind
    return "strategy" if isinstance(value, dict) and value.get("strategy") is not None else "pool"


# a run spec: the common part plus the section of its kind, told apart by `strategy:`
RunSpec = Annotated[Annotated[PoolSpec, Tag("pool")] | Annotated[StrategySpec, Tag("strategy")],
                    Discriminator(spec_kind)]
_ADAPTER: TypeAdapter = TypeAdapter(RunSpec)


def _format_errors(exc: ValidationError, known: dict[str, list[str]]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][1:]) or "spec"  # loc[0] is the kind's tag
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            parent = ".".join(str(p) for p in err["loc"][1:-1])
            close = difflib.get_close_matches(key, known.get(parent, []), n=1)
            fix = f"did you mean {close[0]!r}?" if close else "remove it (see docs/run-spec.md for valid keys)"
            other = _OTHER_KIND.get(err["loc"][0], (None, set()))
            if not parent and key in other[1]:
                fix = f"{key} belongs to {other[0]} specs; remove it"
            lines.append(f"- {loc}: unknown key; {fix}")
        else:
            lines.append(f"- {loc}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid run spec:\n" + "\n".join(lines)


_OTHER_KIND = {"pool": ("CEX strategy", set(StrategySpec.model_fields) - set(SpecBase.model_fields)),
               "strategy": ("pool", set(PoolSpec.model_fields) - set(SpecBase.model_fields))}


def _known_keys(kind: str) -> dict[str, list[str]]:
    return {
        "": list((StrategySpec if kind == "strategy" else PoolSpec).model_fields),
        "optimisation_settings": list(OptimisationSettings.model_fields),
        "optimisation_settings.optuna_settings": list(OptunaSettings.model_fields),
        "optimisation_settings.search_settings": list(SearchSettings.model_fields),
        "strategy_settings": list(StrategySettings.model_fields),
    }


def parse_run_spec(source: dict[str, Any] | str | Path | SpecBase) -> RunSpec:
    """A fingerprint dict, a YAML/JSON file or a spec, validated as its kind's model (field types, ranges,
    consistency). What a pool rule or a strategy accepts is checked on top by quant_core.runspec."""
    if isinstance(source, SpecBase):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise RunSpecError(f"run spec file {path} does not exist")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise RunSpecError(f"run spec file {path} must hold a mapping of settings, got {type(data).__name__}")
        source = data
    try:
        return _ADAPTER.validate_python(source)
    except ValidationError as exc:
        raise RunSpecError(_format_errors(exc, _known_keys(spec_kind(source)))) from None
