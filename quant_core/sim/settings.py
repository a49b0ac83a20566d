"""The compile key of a forward pass: every setting that fixes array shapes or control flow.

One compiled function exists per `StaticSettings` value (`quant_core.sim.simulate.compiled_forward`), so
folds of equal length and runs with equal settings share a compilation.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from quant_core.sim.pool import Pool, get_pool
from quant_core.sim.registry import RuleContext
from quant_core.sim.window import SimWindow
from quant_core.spec import RunSpec


@dataclass(frozen=True)
class StaticSettings:
    """Everything that fixes array shapes or control flow: one compiled function per value."""

    rule: str  # the full name, hooks included
    n_tokens: int
    warmup_rows: int
    n_steps: int
    stride: int
    step_minutes: int
    chunk_period: int
    interpolation_period: int
    minimum_weight: float
    maximum_change: float
    max_memory_days: float
    numeraire_index: int | None
    weight_method: str = "scan"  # "scan" | "vectorized" (auto resolved)
    interpolation_method: str = "linear"
    ste_max_change: bool = False
    ste_min_max_weight: bool = False
    use_pre_exp_scaling: bool = True
    use_alt_lamb: bool = False
    # target-weight rules: "first_target" starts at the guardrailed first target with no first-chunk hold
    # (the reference); "initial_weights" starts at the initial weights and holds them a chunk (see engines)
    target_weights_start: str = "first_target"
    momentum_fee_timing: str = "causal"
    momentum_fee_reference_constants: bool = False
    # reCLAMM (quant_core.sim.amm.reclamm)
    reclamm_interpolation_method: str = "geometric"
    reclamm_arc_length_speed: float | None = None
    reclamm_centeredness_scaling: bool = False
    reclamm_use_shift_exponent: bool = False
    reclamm_learn_arc_length_speed: bool = False
    reclamm_learn_fees: bool = False
    # market: any cost or arb spacing selects the sequential minute scan
    fees: float = 0.0
    # the protocol's share of each swap fee, taken out of the pool (TFMM G3M pools; docs/fingerprint-keys.md)
    protocol_fee_split: float = 0.0
    gas_cost: float = 0.0
    arb_fees: float = 0.0
    arb_frequency: int = 1
    noise_trader_ratio: float = 0.0
    do_arb: bool = True
    do_trades: bool = False
    arb_quality: float = 1.0
    annual_streaming_fee: float = 0.04
    invariant_tolerance: float = 1e-9
    report: bool = False  # also compute the reporting extras (fee revenue, LVR benchmark)
    gyro_numeraire_first: bool = False  # gyroscope: the numeraire is the first token, so swap the pair
    # gyroscope: target value shares at the first price (alphabetical; `initial_weights`), from which the engine
    # solves lam and phi (quant_core.sim.amm.gyroscope_fit); None: parameters.lam/phi
    gyro_weights: tuple[float, ...] | None = None

    @property
    def pool(self) -> Pool:
        return get_pool(self.rule)

    @property
    def with_costs(self) -> bool:
        return (self.fees > 0 or self.pool.has("momentum_fee")
                or self.gas_cost > 0 or self.arb_fees > 0 or self.arb_frequency > 1
                or self.noise_trader_ratio > 0 or not self.do_arb or self.do_trades)

    @property
    def minute_grid(self) -> bool:
        """Step through every minute (prices interpolated between data rows) rather than summing the
        zero-fee closed form per data step."""
        p = self.pool
        return self.with_costs or p.rebalancer is not None or (
            p.engine in ("cow", "hodling", "trad_hodling", "reclamm")) or (
            self.interpolation_method != "linear" and p.engine == "g3m")

    @property
    def rule_context(self) -> RuleContext:
        return RuleContext(self.chunk_period, self.max_memory_days, self.weight_method,
                           self.use_pre_exp_scaling, self.use_alt_lamb)


def protocol_fee_applies(pool: Pool) -> bool:
    """Whether protocol_fee_split acts on this pool: the reference takes it out of TFMM (dynamic-weight G3M)
    pools' swap fees and reCLAMM's only; balancer, CoW, Gyroscope, HODL, the hodling index pools and lvr__/rvr__
    ignore it."""
    tfmm = pool.rule.kind == "dynamic" and pool.engine == "g3m" and pool.rebalancer is None
    return pool.engine == "reclamm" or tfmm


def resolve_weight_method(spec: RunSpec) -> str:
    """`auto` picks the faster estimator path for the backend: on a GPU the vectorised one (blocked
    solves, parallel over time: 50-200x faster there), on a CPU the scan (5-25x faster there, and
    quicker to compile). Both give the same numbers (tested to 1e-10)."""
    method = spec.weight_calculation_method
    rule = get_pool(spec.rule).rule
    if method == "vectorized" and not rule.supports_vectorized:
        raise ValueError(f"weight_calculation_method 'vectorized' is not available for rule {rule.name!r}; "
                         "use 'scan' or 'auto'")
    if method == "auto":
        return "vectorized" if rule.supports_vectorized and jax.default_backend() != "cpu" else "scan"
    return method


def static_settings(spec: RunSpec, window: SimWindow, *, report: bool = False) -> StaticSettings:
    tokens = spec.sorted_tokens
    st = StaticSettings(
        rule=spec.rule,
        n_tokens=len(tokens),
        warmup_rows=window.warmup_rows,
        n_steps=window.n_steps,
        stride=window.stride,
        step_minutes=window.step_minutes,
        chunk_period=spec.chunk_period,
        interpolation_period=spec.weight_interpolation_period,
        minimum_weight=spec.effective_minimum_weight,
        maximum_change=spec.maximum_change,
        max_memory_days=window.max_memory_days,
        numeraire_index=tokens.index(spec.numeraire) if spec.numeraire else None,
        weight_method=resolve_weight_method(spec),
        interpolation_method=spec.weight_interpolation_method,
        ste_max_change=spec.ste_max_change,
        ste_min_max_weight=spec.ste_min_max_weight,
        use_pre_exp_scaling=spec.use_pre_exp_scaling,
        use_alt_lamb=spec.use_alt_lamb,
        target_weights_start=spec.target_weights_start,
        momentum_fee_timing=spec.momentum_fee_timing,
        momentum_fee_reference_constants=spec.momentum_fee_reference_constants,
        reclamm_interpolation_method=spec.reclamm_interpolation_method,
        reclamm_arc_length_speed=spec.reclamm_arc_length_speed,
        reclamm_centeredness_scaling=spec.reclamm_centeredness_scaling,
        reclamm_use_shift_exponent=spec.reclamm_use_shift_exponent,
        reclamm_learn_arc_length_speed=spec.reclamm_learn_arc_length_speed,
        reclamm_learn_fees=spec.reclamm_learn_fees,
        fees=spec.fees,
        protocol_fee_split=spec.protocol_fee_split if protocol_fee_applies(get_pool(spec.rule)) else 0.0,
        gas_cost=spec.gas_cost,
        arb_fees=spec.arb_fees,
        arb_frequency=spec.arb_frequency,
        noise_trader_ratio=spec.noise_trader_ratio,
        do_arb=spec.do_arb,
        do_trades=spec.do_trades,
        arb_quality=spec.arb_quality,
        annual_streaming_fee=spec.annual_streaming_fee,
        report=report,
        gyro_numeraire_first=(spec.numeraire or tokens[-1]) == tokens[0],
        gyro_weights=(tuple(spec.initial_weights) if spec.initial_weights is not None
                      and get_pool(spec.rule).engine == "gyroscope" else None),
    )
    return st


def required_series(st: StaticSettings) -> tuple[list[str], list[str]]:
    """The extra series a run needs besides prices: per price row (rule inputs such as market caps)
    and per minute (rvr__'s spreads, do_trades' trades)."""
    per_minute = [k for h in st.pool.name.hooks for k in h.minute_series] + (["trades"] if st.do_trades else [])
    return list(st.pool.rule.required_aux), per_minute
