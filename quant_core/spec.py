"""The run spec: a validated QuantAMM-style run fingerprint, a common part plus one section per kind.

Users already write run fingerprints (plain dicts with keys such as `rule`, `tokens`,
`startDateString`, `chunk_period`, `optimisation_settings`). `PoolSpec` accepts them unchanged, with the
reference simulator's defaults; a spec that names a `strategy` is a `StrategySpec` (a CEX strategy on one
market's candles), and a key of the other kind is refused rather than ignored. `RunSpec` is the
discriminated union of the two. Unknown or inconsistent keys are rejected with a message that names the
key and the fix. Defaults live here and in the spec's sections (quant_core.spec_sections) and nowhere else.

Every key of the reference simulator's default fingerprint is accepted (docs/fingerprint-keys.md): keys that
change results are honoured; a key that has no effect on results here prints one `SpecNotice` line when set
to anything but its default; a value asking for a reference feature not built yet is refused by name.
One-element lists broadcast to every token, as in the reference.

This module checks what a spec can check alone; whether a rule or strategy exists and its `parameters`
and search ranges fit its schema is checked by its tunable (`quant_core.runspec.load_run_spec`), so this
module imports neither the simulator nor the strategies.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PositiveFloat,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from quant_core.spec_errors import merge_union_errors
from quant_core.spec_sections import (  # noqa: F401  (re-exported: the spec's sections live there)
    INITIAL_VALUE_KEYS,
    ISSUE,
    METHODS,
    REFERENCE_PARAMETER_CONFIG,
    TOP_LEVEL_ENSEMBLE_KEYS,
    BfgsSettings,
    CmaEsSettings,
    HessianTraceSettings,
    LearnableBoundsSettings,
    Method,
    OptimisationSettings,
    OptunaEarlyStopping,
    OptunaSettings,
    OptunaStorage,
    Range,
    SearchSettings,
    SpecNotice,
    StrategySettings,
    StrictModel,
    emit_notices,
    initial_value,
    is_reference_default_range,
    learnable_bounds_as_parameters,
    scalar_if_one,
    spec_notices,
)
from quant_core.train.method_settings import check_method_settings
from quant_core.yaml_files import YamlFileError, load_yaml_file


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


class SpecBase(StrictModel):
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

    @field_validator("parameters", mode="before")
    @classmethod
    def _broadcast_parameters(cls, v: Any, info: Any) -> Any:
        """A one-element list is one value for every token, as the reference broadcasts size-1 arrays
        (`k_per_day: [5]` for three tokens is 5 each); so is a one-element row of an ensemble member."""
        if not isinstance(v, dict):
            return v
        n = len(info.data.get("tokens") or [None])
        out = {}
        for name, value in v.items():
            value = scalar_if_one(value)
            if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
                value = [row * n if len(row) == 1 else row for row in value]
            out[name] = value
        return out

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
        check_method_settings(self)  # bfgs / cma_es / the Hessian-trace penalty against the rest of the spec
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
    # `optimal` is the reference's `approx_optimal` (accepted under both names)
    weight_interpolation_method: Literal["linear", "optimal"] = "linear"
    weight_calculation_method: Literal["auto", "vectorized", "scan"] = "auto"
    ste_max_change: bool = False
    ste_min_max_weight: bool = False
    # target-weight rules (min_variance, index_market_cap and its hodling variants): "first_target" is the
    # reference (start at the guardrailed first target, no first-chunk hold; min_variance then sees the price at
    # the end of the chunk it trades in); "initial_weights" starts at the initial weights, holds them one chunk and
    # follows each target a chunk later, as delta rules do (causal)
    target_weights_start: Literal["first_target", "initial_weights"] = "first_target"
    # momentum_fee__ hook: "causal" computes a chunk's fee from prices up to its start; "reference" uses the
    # reference hook's alignment (the price one minute after the chunk it is charged in: a look-ahead)
    momentum_fee_timing: Literal["causal", "reference"] = "causal"
    # momentum_fee__ hook: the reference's hard-coded parameters (fee_logit 10, scaling 1, logit_lamb 0.5)
    momentum_fee_reference_constants: bool = False
    use_alt_lamb: bool = False
    use_pre_exp_scaling: bool = True
    # execution settings of the reference's fused zero-fee reserve path: no effect on results here (notice)
    use_fused_reserves: bool = True
    checkpoint_fused: Literal["none", "vmap", "scan"] = "scan"
    # market
    fees: float = Field(0.0, ge=0, lt=1)
    # the share of each swap fee the protocol takes out of the pool (TFMM pools; see docs/fingerprint-keys.md)
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
    # one number, or one per token (alphabetical order) as the reference's size-n_assets initial vectors
    initial_memory_length: PositiveFloat | list[PositiveFloat] = 10.0
    initial_memory_length_delta: float | list[float] = 0.0
    initial_k_per_day: float | list[float] = 20.0
    initial_weights_logits: float | list[float] = 1.0
    initial_log_amplitude: float | list[float] = 0.0
    initial_raw_width: float | list[float] = 0.0
    initial_raw_exponents: float | list[float] = 0.0
    initial_pre_exp_scaling: float | list[float] = 0.5
    subsidary_pools: list[dict[str, Any]] = Field(default_factory=list)
    # bounded__ rules: the bounds' starting values (kept fixed during training here; see learnable_bounds_as_parameters)
    learnable_bounds_settings: LearnableBoundsSettings = Field(default_factory=LearnableBoundsSettings)
    # reCLAMM pools (rule reclamm; quant_core/sim/amm/reclamm.py): no effect on other rules (notice)
    reclamm_interpolation_method: Literal["geometric", "constant_arc_length"] = "geometric"
    reclamm_arc_length_speed: float | None = Field(None, gt=0)
    reclamm_centeredness_scaling: bool = False
    reclamm_learn_arc_length_speed: bool = False
    reclamm_use_shift_exponent: bool = False
    reclamm_learn_fees: bool = False
    initial_arc_length_speed: float = Field(1e-4, gt=0)
    initial_shift_exponent: float = 1.0
    initial_price_ratio: float = Field(4.0, gt=1)
    initial_centeredness_margin: float = Field(0.2, ge=0, le=1)
    initial_daily_price_shift_base: float = Field(1.0 - 1.0 / 124000.0, gt=0, le=1)
    # objective and robustness
    price_noise_sigma: float = Field(0.0, ge=0)
    turnover_penalty: float = Field(0.0, ge=0)
    include_flipped_training_data: bool = False
    # additions (see docs/run-spec.md)
    initial_weights: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _reference_layout(cls, data: Any) -> Any:
        """The reference fingerprint's layout and shapes, read as this model's (docs/fingerprint-keys.md):
        its top-level ensemble keys and optimisation_settings.include_flipped_training_data move to where this
        model keeps them (given in both places they must agree), one-element lists become one number, the
        bounded__ starting bounds of learnable_bounds_settings become `parameters`, and `approx_optimal` is
        `optimal`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        rule = data.get("rule", cls.model_fields["rule"].default)
        if data.get("subsidary_pools"):
            raise ValueError("subsidary_pools: composite pools (several rules over sub-pools) are not implemented yet "
                             f"({ISSUE}); remove subsidary_pools or set it to []")
        moved = {key: data.pop(key) for key in TOP_LEVEL_ENSEMBLE_KEYS if key in data}
        opt = data.get("optimisation_settings")
        if isinstance(opt, BaseModel) and moved:
            opt = opt.model_dump(exclude_unset=True)
        if opt is None and moved:
            opt = {}
        if isinstance(opt, dict):
            opt = dict(opt)
            for key, value in moved.items():
                if key in opt and opt[key] != value:
                    raise ValueError(f"{key} ({value!r}) and optimisation_settings.{key} ({opt[key]!r}) disagree: "
                                     "give it in one place")
                opt[key] = value
            if "include_flipped_training_data" in opt:
                value = opt.pop("include_flipped_training_data")
                top = data.get("include_flipped_training_data", value)
                if top != value:
                    raise ValueError(f"include_flipped_training_data ({top!r}) and optimisation_settings."
                                     f"include_flipped_training_data ({value!r}) disagree: give it in one place")
                data["include_flipped_training_data"] = value
            data["optimisation_settings"] = opt
        if data.get("weight_interpolation_method") == "approx_optimal":
            data["weight_interpolation_method"] = "optimal"
        tokens = data.get("tokens")
        for key in INITIAL_VALUE_KEYS:
            if key in data:
                data[key] = initial_value(key, data[key], len(tokens) if isinstance(tokens, list) else None)
        if "initial_weights_logits" in data:
            data["initial_weights_logits"] = scalar_if_one(data["initial_weights_logits"])
        return learnable_bounds_as_parameters(data, rule)

    @property
    def ensemble(self) -> bool:
        return self.rule.startswith("ensemble__") or "__ensemble__" in self.rule

    @model_validator(mode="after")
    def _pool(self) -> PoolSpec:
        n = len(self.tokens)
        for key in INITIAL_VALUE_KEYS:
            initial_value(key, getattr(self, key), n)  # a per-token list has one value per token
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
        self._gyroscope_shape_given_once()
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
    def lam_phi_from_parameters(self) -> bool:
        """Gyroscope pools: lam and phi are read from `parameters` (True), or solved from initial_weights, the
        pool's value shares at each run's first price (False; quant_core.sim.amm.gyroscope_fit)."""
        return self.initial_weights is None

    def _gyroscope_shape_given_once(self) -> None:
        """initial_weights and a lam/phi value or search range both fix a gyroscope's shape: refuse the pair
        rather than let one silently win (in the reference the weights do)."""
        if self.lam_phi_from_parameters or self.rule.split("__")[-1] != "gyroscope":
            return
        opt = self.optimisation_settings
        places = {"parameters": self.parameters or {},
                  "optimisation_settings.optuna_settings.parameter_config": opt.optuna_settings.parameter_config,
                  "optimisation_settings.search_settings.parameter_space": opt.search_settings.parameter_space}
        given = [f"{where}.{k}" for where, keys in places.items() for k in ("lam", "phi") if k in keys]
        if given:
            raise ValueError(f"{' and '.join(given)}: a gyroscope with initial_weights {self.initial_weights} "
                             "solves lam and phi from them (the value shares at each run's first price); remove "
                             f"{'these' if len(given) > 1 else 'it'}, or remove initial_weights to set lam and phi")

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
    for err in merge_union_errors(exc.errors()):
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
        "optimisation_settings.bfgs_settings": list(BfgsSettings.model_fields),
        "optimisation_settings.cma_es_settings": list(CmaEsSettings.model_fields),
        "optimisation_settings.hessian_trace_settings": list(HessianTraceSettings.model_fields),
        "learnable_bounds_settings": list(LearnableBoundsSettings.model_fields),
        "strategy_settings": list(StrategySettings.model_fields),
    }


def parse_run_spec(source: dict[str, Any] | str | Path | SpecBase) -> RunSpec:
    """A fingerprint dict, a YAML/JSON file or a spec, validated as its kind's model (field types, ranges,
    consistency). What a pool rule or a strategy accepts is checked on top by quant_core.runspec."""
    if isinstance(source, SpecBase):
        return source
    where = "<run spec>"
    if isinstance(source, (str, Path)):
        path = where = Path(source)
        if not path.exists():
            raise RunSpecError(f"run spec file {path} does not exist")
        try:  # a syntax error names the file, line and column instead of PyYAML's traceback
            data = load_yaml_file(path, "run spec file")
        except YamlFileError as exc:
            raise RunSpecError(str(exc)) from None
        if not isinstance(data, dict):
            raise RunSpecError(f"run spec file {path} must hold a mapping of settings, got {type(data).__name__}")
        source = data
    try:
        spec = _ADAPTER.validate_python(source)
    except ValidationError as exc:
        raise RunSpecError(_format_errors(exc, _known_keys(spec_kind(source)))) from None
    emit_notices(spec_notices(spec), str(where))
    return spec
