"""Every key of the reference simulator's default run fingerprint is accepted (docs/fingerprint-keys.md): keys
that change results are honoured, execution-only ones print a one-line notice when set, features not built
yet are refused by name, and one-element lists broadcast as in the reference."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from quant_core.runspec import load_run_spec
from quant_core.sim.registry import available_rules, get_rule
from quant_core.sim.resolve import resolve_params
from quant_core.spec import PoolSpec, RunSpecError, SpecNotice

# quantammsim's default run fingerprint (runners/default_run_fingerprint.py): its keys and values
OPTUNA_RANGES = {  # name: (low, high, log_scale)
    "memory_length": (1, 200, True), "memory_length_delta": (0.1, 100, True), "log_k": (-10.0, 10.0, False),
    "k_per_day": (0.1, 1000, True), "weights_logits": (-10, 10, False), "log_amplitude": (-10, 10, False),
    "raw_width": (-10, 10, False), "raw_exponents": (0, 10, False), "raw_pre_exp_scaling": (-10, 10, False),
    "memory_days_1": (0.5, 200, True), "memory_days_2": (0.5, 200, True), "logit_lamb": (-10, 10, False),
}
REFERENCE_DEFAULT = {
    "freq": "minute",
    "startDateString": "2023-01-01 00:00:00",
    "endDateString": "2023-06-01 00:00:00",
    "endTestDateString": None,
    "tokens": ["BTC", "ETH", "USDC"],
    "rule": "mean_reversion_channel",
    "optimisation_settings": {
        "base_lr": 0.1, "optimiser": "adamw", "weight_decay": 0.01, "decay_lr_ratio": 0.8, "decay_lr_plateau": 100,
        "batch_size": 8, "train_on_hessian_trace": False, "min_lr": 1e-6, "n_iterations": 1000, "n_cycles": 5,
        "sample_method": "uniform", "n_parameter_sets": 4, "noise_scale": 0.1, "parameter_init_method": "gaussian",
        "training_data_kind": "historic", "max_mc_version": 9, "include_flipped_training_data": False,
        "initial_random_key": 0, "method": "gradient_descent", "force_scalar": False, "use_plateau_decay": False,
        "use_gradient_clipping": True, "clip_norm": 10.0, "lr_schedule_type": "constant", "lr_decay_ratio": 1000,
        "warmup_steps": 100, "early_stopping": True, "early_stopping_patience": 200,
        "early_stopping_metric": "daily_log_sharpe", "val_fraction": 0.2, "use_swa": False, "swa_start_frac": 0.75,
        "swa_freq": 10, "track_checkpoints": False, "checkpoint_interval": 10,
        "optuna_settings": {
            "study_name": None, "storage": {"type": "sqlite", "url": None}, "n_trials": 20, "n_jobs": 4,
            "timeout": 7200, "n_startup_trials": 10,
            "early_stopping": {"enabled": False, "patience": 100, "min_improvement": 0.001},
            "multi_objective": False, "make_scalar": False, "expand_around": True, "overfitting_penalty": 0.2,
            "parameter_config": {name: {"low": lo, "high": hi, "log_scale": log, "scalar": False}
                                 for name, (lo, hi, log) in OPTUNA_RANGES.items()},
        },
        "bfgs_settings": {"maxiter": 100, "tol": 1e-6, "n_evaluation_points": 20, "compute_dtype": "float32"},
        "cma_es_settings": {"population_size": None, "memory_budget": None, "n_generations": 300, "sigma0": 0.5,
                            "tol": 1e-8, "n_evaluation_points": 20, "compute_dtype": "float32"},
    },
    "n_ensemble_members": 1,
    "ensemble_init_method": "gaussian",
    "ensemble_init_scale": 0.5,
    "ensemble_init_seed": 42,
    "initial_memory_length": 10.0,
    "initial_memory_length_delta": 0.0,
    "initial_k_per_day": 20,
    "bout_offset": 10080,
    "initial_weights_logits": 1.0,
    "initial_log_amplitude": 0.0,
    "initial_raw_width": 0.0,
    "initial_raw_exponents": 0.0,
    "initial_pre_exp_scaling": 0.5,
    "subsidary_pools": [],
    "maximum_change": 3e-4,
    "chunk_period": 1440,
    "weight_interpolation_period": 1440,
    "turnover_penalty": 0.0,
    "price_noise_sigma": 0.0,
    "return_val": "daily_log_sharpe",
    "initial_pool_value": 1000000.0,
    "fees": 0.0,
    "protocol_fee_split": 0.0,
    "arb_fees": 0.0,
    "gas_cost": 0.0,
    "use_alt_lamb": False,
    "use_pre_exp_scaling": True,
    "weight_interpolation_method": "linear",
    "arb_frequency": 1,
    "arb_quality": 1.0,
    "do_trades": False,
    "numeraire": None,
    "do_arb": True,
    "reclamm_interpolation_method": "geometric",
    "reclamm_arc_length_speed": None,
    "reclamm_centeredness_scaling": False,
    "reclamm_learn_arc_length_speed": False,
    "reclamm_use_shift_exponent": False,
    "reclamm_learn_fees": False,
    "initial_arc_length_speed": 1e-4,
    "initial_shift_exponent": 1.0,
    "initial_price_ratio": 4.0,
    "initial_centeredness_margin": 0.2,
    "initial_daily_price_shift_base": 1.0 - 1.0 / 124000.0,
    "max_memory_days": 365,
    "noise_trader_ratio": 0.0,
    "minimum_weight": None,
    "ste_max_change": False,
    "ste_min_max_weight": False,
    "use_fused_reserves": True,
    "checkpoint_fused": "scan",
    "weight_calculation_method": "auto",
    "learnable_bounds_settings": {"freeze_bounds": False, "min_weights_per_asset": None,
                                  "max_weights_per_asset": None},
}


def _fingerprint(**changes) -> dict:
    import copy

    fp = copy.deepcopy(REFERENCE_DEFAULT)
    fp.update(changes)
    return fp


def _load_quietly(fp: dict):
    """The spec and the notices its loading printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = load_run_spec(fp)
    return spec, [str(w.message) for w in caught if issubclass(w.category, SpecNotice)]


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict) and key != "parameter_config":
            out += _flat_keys(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


RULES = [*available_rules(), "bounded__momentum", "ensemble__mean_reversion_channel", "lvr__momentum"]


@pytest.mark.parametrize("rule", RULES)
def test_the_reference_default_fingerprint_loads_unchanged_for_every_rule(rule):
    n = get_rule(rule.split("__")[-1]).n_tokens
    fp = _fingerprint(rule=rule, tokens=["ETH", "USDC"] if n == 2 else REFERENCE_DEFAULT["tokens"])
    spec, notices = _load_quietly(fp)
    assert spec.rule == rule
    assert notices == []  # bounded__ too: freeze_bounds false trains the bounds (quant_core.train.learnable_bounds)


def test_the_default_fingerprint_means_what_it_means_in_the_reference():
    spec, _ = _load_quietly(_fingerprint(rule="momentum"))
    o = spec.optimisation_settings
    # the top-level ensemble keys land where this model keeps them
    assert (o.n_ensemble_members, o.ensemble_init_method, o.ensemble_init_scale, o.ensemble_init_seed) == (
        1, "gaussian", 0.5, 42)
    # lr_decay_ratio wins over min_lr, as in the reference: base_lr / 1000
    assert (o.min_lr, o.lr_decay_ratio) == (pytest.approx(1e-4), 1000)
    assert (o.swa_freq, o.checkpoint_interval, o.optuna_settings.overfitting_penalty) == (10, 10, 0.2)
    assert spec.include_flipped_training_data is False
    # default search ranges naming no parameter of momentum are dropped; those naming one are kept
    assert set(o.optuna_settings.parameter_config) <= {"memory_length", "k_per_day", "memory_days_2"}
    again, _ = _load_quietly(spec.model_dump())  # a loaded spec round-trips
    assert again == spec


def test_the_docs_page_names_every_key_of_the_default_fingerprint():
    page = (Path(__file__).parents[1] / "docs" / "fingerprint-keys.md").read_text()
    named = set(re.findall(r"^\| `([^`]+)`", page, flags=re.M))
    opt = "optimisation_settings."
    shortened = {k.removeprefix(opt + "optuna_settings.").removeprefix(opt) for k in _flat_keys(REFERENCE_DEFAULT)}
    assert shortened - named == set()
    for name in OPTUNA_RANGES:
        assert f"`{name}`" in page


def test_size_one_lists_broadcast_to_every_token():
    three = ["BTC", "ETH", "USDC"]
    one, scalar, full = (load_run_spec({"rule": "momentum", "tokens": three, "parameters": {"k_per_day": v}})
                         for v in ([5], 5, [5, 5, 5]))
    for spec in (one, scalar):
        np.testing.assert_array_equal(resolve_params(spec)["k_per_day"], resolve_params(full)["k_per_day"])
    spec = load_run_spec({"rule": "momentum", "initial_k_per_day": [30], "initial_memory_length": [12, 12, 12],
                          "initial_weights_logits": [0.5]})
    assert (spec.initial_k_per_day, spec.initial_memory_length, spec.initial_weights_logits) == (30, 12, 0.5)
    np.testing.assert_array_equal(resolve_params(spec)["k_per_day"], [30, 30, 30])
    members = load_run_spec({"rule": "ensemble__momentum", "optimisation_settings": {"n_ensemble_members": 2},
                             "parameters": {"k_per_day": [[5], [6, 7, 8]]}})
    np.testing.assert_array_equal(resolve_params(members)["k_per_day"], [[5, 5, 5], [6, 7, 8]])
    bounded = load_run_spec({"rule": "bounded__momentum", "learnable_bounds_settings": {
        "freeze_bounds": True, "min_weights_per_asset": [0.05], "max_weights_per_asset": [0.6, 0.7, 0.8]}})
    p = resolve_params(bounded)
    np.testing.assert_array_equal(p["min_weights_per_asset"], [0.05] * 3)
    np.testing.assert_array_equal(p["max_weights_per_asset"], [0.6, 0.7, 0.8])
    with pytest.raises(RunSpecError, match="parameters.k_per_day has 2 values for 3 tokens"):
        load_run_spec({"rule": "momentum", "parameters": {"k_per_day": [5, 6]}})


@pytest.mark.parametrize("key,value,needle", [
    ("use_fused_reserves", False, "use_fused_reserves = False has no effect on results here"),
    ("checkpoint_fused", "vmap", "checkpoint_fused = 'vmap' has no effect on results here"),
    ("freq", "hour", "freq = 'hour' has no effect on results here"),
    ("initial_price_ratio", 3.0, "initial_price_ratio = 3.0 has no effect on results here"),
    ("optimisation_settings", {"n_cycles": 2}, "optimisation_settings.n_cycles = 2 has no effect"),
])
def test_an_execution_only_key_set_prints_one_notice_naming_it(key, value, needle):
    with pytest.warns(SpecNotice) as caught:
        load_run_spec({"rule": "momentum", key: value})
    lines = [str(w.message) for w in caught if needle in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0]


def test_protocol_fee_split_is_kept_and_its_no_effect_cases_print_a_notice():
    spec = load_run_spec({"rule": "momentum", "fees": 0.003, "protocol_fee_split": 0.3})
    assert spec.protocol_fee_split == 0.3
    with pytest.warns(SpecNotice, match="rule 'balancer' is neither a TFMM"):
        load_run_spec({"rule": "balancer", "fees": 0.003, "protocol_fee_split": 0.3})
    with pytest.warns(SpecNotice, match="protocol_fee_split = 0.3 has no effect on results here while fees is 0"):
        load_run_spec({"rule": "momentum", "protocol_fee_split": 0.3})


def test_make_scalar_searches_every_listed_range_as_one_value():
    spec = load_run_spec({"rule": "momentum", "optimisation_settings": {"method": "optuna", "optuna_settings": {
        "make_scalar": True, "parameter_config": {"k_per_day": {"low": 1, "high": 50, "scalar": False}}}}})
    assert spec.optimisation_settings.optuna_settings.parameter_config["k_per_day"].scalar is True


def test_where_the_reference_and_this_model_keep_a_key_both_places_work_and_must_agree():
    top = PoolSpec(rule="ensemble__momentum", n_ensemble_members=3, ensemble_init_method="sobol")
    assert (top.optimisation_settings.n_ensemble_members, top.optimisation_settings.ensemble_init_method) == (
        3, "sobol")
    flipped = load_run_spec({"rule": "momentum", "optimisation_settings": {"include_flipped_training_data": True}})
    assert flipped.include_flipped_training_data is True
    assert load_run_spec({"rule": "momentum", "weight_interpolation_method": "approx_optimal"}
                         ).weight_interpolation_method == "optimal"
    with pytest.raises(RunSpecError, match=r"n_ensemble_members \(2\) and optimisation_settings.n_ensemble_members"):
        load_run_spec({"rule": "ensemble__momentum", "n_ensemble_members": 2,
                       "optimisation_settings": {"n_ensemble_members": 3}})


@pytest.mark.parametrize("bad,needle", [
    ({"optimisation_settings": {"training_data_kind": "mc"}}, "optimisation_settings.training_data_kind: 'mc'"),
    ({"subsidary_pools": [{"tokens": ["ETH", "DAI"], "rule": "momentum"}]}, "subsidary_pools: composite pools"),
    ({"initial_k_per_day": [10, 20]}, "initial_k_per_day: 2 values for 3 tokens"),
    ({"optimisation_settings": {"min_lr": 1e-5, "lr_decay_ratio": 100}}, "min_lr (1e-05) and lr_decay_ratio (100)"),
    ({"rule": "bounded__momentum", "learnable_bounds_settings": {"min_weights_per_asset": 0.05},
      "parameters": {"min_weights_per_asset": 0.1}}, "learnable_bounds_settings.min_weights_per_asset (0.05) and"),
])
def test_a_reference_feature_not_built_yet_is_refused_by_name(bad, needle):
    with pytest.raises(RunSpecError) as err:
        load_run_spec({"rule": "momentum", **bad})
    assert needle in str(err.value)
    if "not implemented" in str(err.value):
        assert "issue 17" in str(err.value)


def test_the_reference_methods_and_pools_built_since_load_and_check_what_they_need():
    assert load_run_spec({"rule": "reclamm", "tokens": ["ETH", "USDC"]}).rule == "reclamm"
    for method in ("bfgs", "cma_es"):
        assert load_run_spec({"rule": "momentum", "optimisation_settings": {"method": method}}
                             ).optimisation_settings.method == method
    with pytest.raises(RunSpecError, match="is not differentiable in its parameters: use cma_es"):
        load_run_spec({"strategy": "liquidity_sweep", "tokens": ["BTC"], "optimisation_settings": {"method": "bfgs"}})
    with pytest.raises(RunSpecError, match="cma_es_settings.sigma0"):
        load_run_spec({"rule": "momentum", "optimisation_settings": {"method": "cma_es",
                                                                     "cma_es_settings": {"sigma0": -1}}})
    with pytest.raises(RunSpecError, match="price_noise_sigma"):
        load_run_spec({"rule": "momentum", "price_noise_sigma": 0.01, "optimisation_settings": {"method": "bfgs"}})


def test_per_token_initial_values_start_each_token_from_its_own_raw_value():
    """The reference's size-n_assets initial vectors: each token's starting value converted from its own raw value
    (2^initial_raw_width, 2^initial_log_amplitude x memory, ...), in alphabetical token order."""
    from quant_core.sim.pool import get_pool

    spec = load_run_spec({"rule": "mean_reversion_channel", "tokens": ["ETH", "BTC", "USDC"],
                          "initial_k_per_day": [10, 20, 30], "initial_raw_width": [0, 1, 2],
                          "initial_memory_length": [5, 10, 20], "initial_log_amplitude": 1})
    start = get_pool(spec.rule).initial_params(spec)
    np.testing.assert_allclose(start["k_per_day"], [10, 20, 30])
    np.testing.assert_allclose(start["width"], [1, 2, 4])
    np.testing.assert_allclose(start["memory_days"], [5, 10, 20])
    np.testing.assert_allclose(start["amplitude"], [10, 20, 40])
    same = load_run_spec({"rule": "momentum", "tokens": ["ETH", "BTC"], "initial_k_per_day": [7, 7]})
    assert same.initial_k_per_day == 7
