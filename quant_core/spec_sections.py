"""The sections of a run spec (optimisation settings and their method sections, search ranges, a CEX
strategy's costs, the bounded__ hook's starting bounds) and how the reference simulator's run fingerprint is
read into them: its layout and shapes, the values of features not built yet (refused by name), and the keys
that have no effect on results here (one `SpecNotice` line each). docs/fingerprint-keys.md lists every key of
the reference's default fingerprint and its status. quant_core.spec assembles the whole spec from these.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quant_core.train.method_settings import BfgsSettings, CmaEsSettings, HessianTraceSettings

# the training methods (quant_core.train.trainer); the CLI and the Dagster launchpad offer these
Method = Literal["gradient_descent", "optuna", "grid", "random", "bfgs", "cma_es"]
METHODS: tuple[str, ...] = get_args(Method)
# methods whose search can be cut into parts that run as separate steps (quant_core.train.parts)
SPLITTABLE_METHODS: tuple[str, ...] = ("grid", "random", "optuna")


class SpecNotice(UserWarning):
    """A key of the reference's run fingerprint that is accepted but has no effect on results here (an
    execution setting of the reference, or a setting of a feature this run does not use). Emitted once per
    message when a spec is loaded; docs/fingerprint-keys.md lists every key and its status."""


# Where a reference feature that is not built yet is tracked; refusals name it.
ISSUE = "issue 17"

_NOTICES_SHOWN: dict = {}  # warnings registry: each notice once per process (unless filters change)


def emit_notices(notices: list[str], where: str = "<run spec>") -> None:
    """Each notice as one `SpecNotice` warning line: '<where>:0: SpecNotice: <key> ...'."""
    for text in notices:
        warnings.warn_explicit(text, SpecNotice, filename=where, lineno=0, module="quant_core.spec",
                               registry=_NOTICES_SHOWN)


def _not_built(value: Any, what: str, fix: str) -> str:
    return f"{value!r}: {what} not implemented yet ({ISSUE}); {fix}"


def _refuse_values(value: Any, refused: dict[Any, str], fix: str) -> Any:
    """A field's before-validator body: a reference value whose feature is not built is refused, naming the
    feature (the error's location names the field); anything else goes on to the field's own validation."""
    if isinstance(value, str | bool) and value in refused:
        raise ValueError(_not_built(value, refused[value], fix))
    return value


def scalar_if_one(value: Any) -> Any:
    """A one-element list is one value for every token, as the reference broadcasts it (size-1 arrays)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


class StrictModel(BaseModel):
    # allow_inf_nan: NaN and infinities are refused by every float field ("Input should be a finite number")
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Range(StrictModel):
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


class OptunaStorage(StrictModel):
    type: Literal["sqlite", "mysql", "postgresql"] = "sqlite"
    url: str | None = None


class OptunaEarlyStopping(StrictModel):
    enabled: bool = False
    patience: int = Field(100, ge=1)
    min_improvement: float = Field(0.001, ge=0)


class OptunaSettings(StrictModel):
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

    @model_validator(mode="before")
    @classmethod
    def _make_scalar(cls, data: Any) -> Any:
        """make_scalar: every listed parameter_config range searches one value for all tokens (the reference
        sets `scalar: true` on each entry; parameters not listed keep their own per-token default)."""
        if isinstance(data, dict) and data.get("make_scalar") is True and isinstance(data.get("parameter_config"),
                                                                                     dict):
            config = {name: ({**entry, "scalar": True} if isinstance(entry, dict) else
                             entry.model_copy(update={"scalar": True}) if isinstance(entry, Range) else entry)
                      for name, entry in data["parameter_config"].items()}
            data = {**data, "parameter_config": config}
        return data


# The reference's default optuna_settings.parameter_config. It names parameters of every rule (several in the
# reference's unconstrained spaces), and the reference merges it into every fingerprint; a pasted entry equal
# to its default there and naming no parameter of the run's rule changes nothing, so the loader drops it
# (quant_core.runspec). Any other entry must name a parameter of the rule.
REFERENCE_PARAMETER_CONFIG: dict[str, tuple[float, float, bool]] = {  # name: (low, high, log_scale)
    "memory_length": (1, 200, True), "memory_length_delta": (0.1, 100, True), "log_k": (-10.0, 10.0, False),
    "k_per_day": (0.1, 1000, True), "weights_logits": (-10, 10, False), "log_amplitude": (-10, 10, False),
    "raw_width": (-10, 10, False), "raw_exponents": (0, 10, False), "raw_pre_exp_scaling": (-10, 10, False),
    "memory_days_1": (0.5, 200, True), "memory_days_2": (0.5, 200, True), "logit_lamb": (-10, 10, False),
}


def is_reference_default_range(name: str, entry: Range) -> bool:
    ref = REFERENCE_PARAMETER_CONFIG.get(name)
    return ref is not None and (entry.low, entry.high, entry.log_scale) == (float(ref[0]), float(ref[1]), ref[2])


# bfgs_settings / cma_es_settings / hessian_trace_settings: quant_core/train/method_settings.py (pydantic only)


class SearchSettings(StrictModel):
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


class StrategySettings(StrictModel):
    """Costs, sizing and guards of a CEX strategy backtest (`strategy: liquidity_sweep`)."""

    taker_fee_bps: float = Field(10.0, ge=0, lt=10_000, description="taker fee charged on entry and on exit")
    slippage_bps: float = Field(2.0, ge=0, lt=10_000, description="adverse fill vs the bar price, both sides")
    position_fraction: float = Field(1.0, gt=0, le=1, description="share of the equity each trade commits")
    initial_capital: float = Field(10_000.0, gt=0, description="starting equity in the quote currency")
    min_trades: int = Field(5, ge=0, description="training: candidates with fewer trades in the scored part "
                            "score -inf, so a handful of lucky trades cannot win the search")


class OptimisationSettings(StrictModel):
    method: Method = "gradient_descent"
    optimiser: Literal["adam", "adamw", "sgd"] = "adamw"
    base_lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(8, ge=1)
    n_iterations: int = Field(1000, ge=1)
    n_parameter_sets: int = Field(4, ge=1)
    noise_scale: float = Field(0.1, ge=0)
    parameter_init_method: Literal["gaussian", "sobol", "lhs", "centered_lhs"] = Field(
        "gaussian", description="how parameter sets 1.. are spread around set 0 (scale noise_scale): independent "
        "Gaussian noise, or a space-filling design through the normal quantile")
    sample_method: Literal["uniform", "exponential", "stratified"] = "uniform"
    training_data_kind: Literal["historic"] = "historic"
    max_mc_version: int = Field(9, description="the reference's Monte-Carlo data version (training_data_kind "
                                "'mc' only): no effect here")
    use_gradient_clipping: bool = True
    clip_norm: float = Field(10.0, gt=0)
    lr_schedule_type: Literal["constant", "cosine", "warmup_cosine", "exponential"] = "constant"
    warmup_steps: int = Field(100, ge=0)
    # the lowest learning rate of a decaying schedule: base_lr / lr_decay_ratio as in the reference (which
    # prefers lr_decay_ratio over min_lr); `lr_decay_ratio: null` uses min_lr as given (see _lowest_lr)
    lr_decay_ratio: float | None = Field(1000.0, gt=0)
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
    swa_freq: int = Field(10, ge=1)
    initial_random_key: int = 0
    force_scalar: bool = Field(False, description="train or search one value of each rule parameter, shared by "
                               "every token (momentum, anti_momentum, the channel rules)")
    n_cycles: int = Field(5, ge=1, description="read by nothing in the reference's training: no effect")
    train_on_hessian_trace: bool = Field(False, description="adds hessian_trace_settings.weight x the trace of the "
                                         "objective's Hessian (pools; gradient_descent, bfgs, cma_es)")
    # the reference reads these four at the top level of the fingerprint; both places are accepted
    n_ensemble_members: int = Field(1, ge=1)
    ensemble_init_method: Literal["lhs", "centered_lhs", "sobol", "grid", "gaussian"] = "lhs"
    ensemble_init_scale: float = Field(1.0, ge=0)
    ensemble_init_seed: int = 42
    track_checkpoints: bool = False
    checkpoint_interval: int = Field(10, ge=1)
    optuna_settings: OptunaSettings = Field(default_factory=OptunaSettings)
    search_settings: SearchSettings = Field(default_factory=SearchSettings)
    bfgs_settings: BfgsSettings = Field(default_factory=BfgsSettings)
    cma_es_settings: CmaEsSettings = Field(default_factory=CmaEsSettings)
    hessian_trace_settings: HessianTraceSettings = Field(default_factory=HessianTraceSettings)

    @field_validator("training_data_kind", mode="before")
    @classmethod
    def _data_kind(cls, v: Any) -> Any:
        return _refuse_values(v, {
            "mc": "training on the reference's Monte-Carlo price paths is",
            "step": "the reference's 'step' training data is"}, "use 'historic' (the price file)")

    @model_validator(mode="before")
    @classmethod
    def _lowest_lr(cls, data: Any) -> Any:
        """min_lr from lr_decay_ratio, as the reference: min_lr = base_lr / lr_decay_ratio whenever
        lr_decay_ratio is set (its default fingerprint sets 1000, so min_lr alone never counts there). Here
        min_lr given without lr_decay_ratio is used as given (lr_decay_ratio becomes null); both given must
        agree, unless min_lr is the reference's default 1e-6 (a pasted default fingerprint)."""
        if not isinstance(data, dict):
            return data
        if "min_lr" in data and "lr_decay_ratio" not in data:
            return {**data, "lr_decay_ratio": None}
        ratio, base_lr = data.get("lr_decay_ratio", 1000.0), data.get("base_lr", 0.1)
        if ratio is None or isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0 \
                or isinstance(base_lr, bool) or not isinstance(base_lr, int | float) or not base_lr > 0 \
                or not math.isfinite(ratio) or not math.isfinite(base_lr):
            return data  # the fields' own validation reports bad values
        lowest = base_lr / ratio
        given = data.get("min_lr")
        if isinstance(given, int | float) and not isinstance(given, bool) and given != 1e-6 \
                and not math.isclose(given, lowest, rel_tol=1e-9):
            raise ValueError(
                f"min_lr ({given}) and lr_decay_ratio ({ratio}) both set the lowest "
                f"learning rate, and the reference uses base_lr / lr_decay_ratio = {lowest:g}: remove min_lr, or "
                "set lr_decay_ratio: null to use min_lr")
        return {**data, "min_lr": lowest}

    @model_validator(mode="after")
    def _decay_goes_down(self) -> OptimisationSettings:
        """A decaying schedule must end below where it starts (the reference silently swaps in base_lr / 100)."""
        if self.lr_schedule_type != "constant" and self.min_lr >= self.base_lr:
            raise ValueError(f"lr_schedule_type {self.lr_schedule_type!r} decays from base_lr ({self.base_lr:g}) to "
                             f"min_lr ({self.min_lr:g}), which is not lower: lower min_lr or set lr_decay_ratio "
                             "above 1")
        return self


class LearnableBoundsSettings(StrictModel):
    """The reference's per-asset weight bounds of bounded__ rules."""

    freeze_bounds: bool = Field(False, description="false: gradient_descent, bfgs and cma_es train the bounds "
                                "(quant_core.train.learnable_bounds); optuna, grid and random search them when "
                                "listed in their ranges. true: training keeps them at their starting values (a "
                                "search still searches them where its ranges list them)")
    min_weights_per_asset: float | list[float] | None = None
    max_weights_per_asset: float | list[float] | None = None

    @field_validator("min_weights_per_asset", "max_weights_per_asset", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return scalar_if_one(v)


# the reference keeps these at the top level of the fingerprint; this model in optimisation_settings
TOP_LEVEL_ENSEMBLE_KEYS = ("n_ensemble_members", "ensemble_init_method", "ensemble_init_scale", "ensemble_init_seed")
# per-token starting values the reference broadcasts from one number (or a one-element list)
INITIAL_VALUE_KEYS = ("initial_memory_length", "initial_memory_length_delta", "initial_k_per_day",
                       "initial_log_amplitude", "initial_raw_width", "initial_raw_exponents", "initial_pre_exp_scaling")
# the rule's parameter each initial_* key starts, for the hint when per-token values are given
_INITIAL_VALUE_PARAMS = {"initial_memory_length": "memory_days", "initial_memory_length_delta": "memory_days_2",
                         "initial_k_per_day": "k_per_day", "initial_log_amplitude": "amplitude",
                         "initial_raw_width": "width", "initial_raw_exponents": "exponents",
                         "initial_pre_exp_scaling": "pre_exp_scaling"}


def initial_value(key: str, value: Any, n_tokens: int | None) -> Any:
    """An initial_* key as the reference reads it: one number for every token (a one-element list, or a list of
    equal values, is that number), or one value per token in alphabetical token order, each converted from the
    reference's raw units on its own (quant_core.sim.pool.Pool.initial_params)."""
    value = scalar_if_one(value)
    if isinstance(value, list) and value:
        if all(x == value[0] for x in value):
            return value[0]
        if n_tokens is not None and len(value) != n_tokens:
            raise ValueError(f"{key}: {len(value)} values for {n_tokens} tokens: give one number, or one value per "
                             f"token in alphabetical token order (or per-token values in user units as "
                             f"parameters.{_INITIAL_VALUE_PARAMS[key]})")
    return value


def has_hook(rule: Any, hook: str) -> bool:
    return isinstance(rule, str) and hook in rule.split("__")[:-1]


def learnable_bounds_as_parameters(data: dict, rule: Any) -> dict:
    """learnable_bounds_settings.min/max_weights_per_asset are where a bounded__ rule's bounds start: they
    become parameters.min_weights_per_asset / max_weights_per_asset (which must agree if also given)."""
    lbs = data.get("learnable_bounds_settings")
    if isinstance(lbs, BaseModel):
        lbs = lbs.model_dump()
    if not isinstance(lbs, dict) or not has_hook(rule, "bounded"):
        return data
    params = data.get("parameters")
    params = dict(params) if isinstance(params, dict) else {} if params is None else params
    if not isinstance(params, dict):
        return data
    for key in ("min_weights_per_asset", "max_weights_per_asset"):
        value = scalar_if_one(lbs.get(key))
        if value is None:
            continue
        given = scalar_if_one(params.get(key))
        if given is not None and given != value:
            raise ValueError(f"learnable_bounds_settings.{key} ({value!r}) and parameters.{key} ({given!r}) "
                             "disagree: give the bounds in one place")
        params[key] = value
    if params:
        data["parameters"] = params
    return data


_NO_EFFECT = "has no effect on results here"


def _changed(model: BaseModel, names: tuple[str, ...] | None = None) -> list[tuple[str, Any]]:
    """(field, value) of each field that differs from its default."""
    fields = type(model).model_fields
    return [(name, getattr(model, name)) for name in (names or tuple(fields))
            if getattr(model, name) != fields[name].get_default(call_default_factory=True)]


def spec_notices(spec: Any) -> list[str]:
    """One line per key of the reference's fingerprint that the spec sets to a non-default value and that has
    no effect on results here (docs/fingerprint-keys.md, status "no effect"). `spec` is a loaded run spec
    (quant_core.spec); notices that depend on the rule's pool are added by quant_core.runspec."""
    out = []
    opt = spec.optimisation_settings
    for name, value in _changed(opt, ("n_cycles",)):
        out.append(f"optimisation_settings.{name} = {value!r} {_NO_EFFECT} (the reference's training reads it "
                   "nowhere either)")
    if opt.max_mc_version != 9:
        out.append(f"optimisation_settings.max_mc_version = {opt.max_mc_version!r} {_NO_EFFECT} (it picks the "
                   "reference's Monte-Carlo data, training_data_kind 'mc', which is not implemented)")
    for section in ("bfgs_settings", "cma_es_settings"):
        method = section.removesuffix("_settings")
        if opt.method != method:
            for name, value in _changed(getattr(opt, section)):
                out.append(f"optimisation_settings.{section}.{name} = {value!r} {_NO_EFFECT}: only method "
                           f"{method!r} reads it, and the method is {opt.method!r}")
        elif getattr(opt, section).compute_dtype == "float32":
            out.append(f"optimisation_settings.{section}.compute_dtype = 'float32' {_NO_EFFECT}: simulations here "
                       "always run in float64")
    if not opt.train_on_hessian_trace:
        for name, value in _changed(opt.hessian_trace_settings):
            out.append(f"optimisation_settings.hessian_trace_settings.{name} = {value!r} {_NO_EFFECT}: it is read "
                       "only with train_on_hessian_trace: true")
    if opt.optuna_settings.storage.type != "sqlite":
        out.append(f"optimisation_settings.optuna_settings.storage.type = {opt.optuna_settings.storage.type!r} "
                   f"{_NO_EFFECT} (storage.url alone picks the database, as in the reference)")
    if spec.kind != "pool":
        return out
    if spec.freq != "minute":
        out.append(f"freq = {spec.freq!r} {_NO_EFFECT}: the step of the price data is inferred from the file "
                   "(the reference reads freq nowhere either)")
    if not spec.use_fused_reserves:
        out.append(f"use_fused_reserves = False {_NO_EFFECT}: it picks an execution path of the reference (fused "
                   "chunked zero-fee reserves, same numbers); this simulator has one path")
    if spec.checkpoint_fused != "scan":
        out.append(f"checkpoint_fused = {spec.checkpoint_fused!r} {_NO_EFFECT}: it tunes the memory use of the "
                   "reference's fused reserve path")
    if not spec.rule.split("__")[-1] == "reclamm":
        for name, value in _changed(spec, _RECLAMM_KEYS):
            out.append(f"{name} = {value!r} {_NO_EFFECT}: only reCLAMM pools (rule 'reclamm') read it; "
                       f"rule {spec.rule!r} does not")
    if spec.protocol_fee_split > 0 and spec.fees == 0:
        out.append(f"protocol_fee_split = {spec.protocol_fee_split!r} {_NO_EFFECT} while fees is 0: it splits the "
                   "swap fees, and there are none")
    lbs = spec.learnable_bounds_settings
    if not has_hook(spec.rule, "bounded"):
        for name, value in _changed(lbs):
            out.append(f"learnable_bounds_settings.{name} = {value!r} {_NO_EFFECT}: only bounded__ rules have "
                       f"per-asset bounds; rule {spec.rule!r} has none (use rule 'bounded__{spec.rule}')")
    return out


_RECLAMM_KEYS = ("reclamm_interpolation_method", "reclamm_arc_length_speed", "reclamm_centeredness_scaling",
                 "reclamm_learn_arc_length_speed", "reclamm_use_shift_exponent", "reclamm_learn_fees",
                 "initial_arc_length_speed", "initial_shift_exponent", "initial_price_ratio",
                 "initial_centeredness_margin", "initial_daily_price_shift_base")
