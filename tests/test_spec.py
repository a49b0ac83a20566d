import pytest

from quant_core.runspec import load_run_spec
from quant_core.spec import PoolSpec, RunSpecError


def test_defaults_follow_the_reference_fingerprint():
    assert PoolSpec.model_fields["rule"].default == "mean_reversion_channel"  # (arrives with issue 3)
    s = PoolSpec(rule="momentum")
    assert (s.chunk_period, s.weight_interpolation_period, s.bout_offset) == (1440, 1440, 10080)
    assert (s.maximum_change, s.max_memory_days, s.initial_memory_length, s.initial_k_per_day) == (3e-4, 365, 10, 20)
    o = s.optimisation_settings
    assert (o.optimiser, o.base_lr, o.weight_decay, o.batch_size, o.n_parameter_sets) == ("adamw", 0.1, 0.01, 8, 4)
    assert (o.n_iterations, o.clip_norm, o.val_fraction, o.early_stopping_patience) == (1000, 10, 0.2, 200)
    assert s.effective_minimum_weight == pytest.approx(0.1 / 3)


def test_existing_fingerprint_is_accepted_unchanged():
    fp = {
        "startDateString": "2024-02-03 00:00:00", "endDateString": "2024-06-03 00:00:00",
        "endTestDateString": "2024-07-03 00:00:00", "tokens": ["BTC", "ETH", "USDC"], "rule": "momentum",
        "initial_pool_value": 1000000.0, "chunk_period": 60, "weight_interpolation_period": 60,
        "optimisation_settings": {"method": "optuna", "base_lr": 0.01, "optimiser": "adam",
                                  "optuna_settings": {"n_trials": 20, "parameter_config": {
                                      "memory_length": {"low": 1, "high": 200, "log_scale": True}}}},
    }
    s = load_run_spec(fp)
    assert s.end_test.isoformat() == "2024-07-03T00:00:00+00:00"


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"chunk_perid": 60}, "chunk_perid: unknown key; did you mean 'chunk_period'"),
        ({"optimisation_settings": {"optimizer": "adam"}}, "did you mean 'optimiser'"),
        ({"chunk_period": 60, "weight_interpolation_period": 120}, "weight_interpolation_period (120) must be <="),
        ({"startDateString": "2024-05-01", "endDateString": "2024-04-01"}, "must be before endDateString"),
        ({"startDateString": "yesterday"}, "write it as 'YYYY-MM-DD HH:MM:SS'"),
        ({"rule": "momentun"}, "did you mean 'momentum'"),
        ({"tokens": ["BTC", "BTC"]}, "duplicate tokens"),
        ({"numeraire": "SOL"}, "numeraire 'SOL' is not one of tokens"),
        ({"initial_weights": [0.5, 0.6, -0.1]}, "must be positive and sum to 1"),
        ({"parameters": {"k_per_day": [1, 2]}}, "alphabetical token order"),
        ({"maximum_change": 0}, "maximum_change"),
    ],
)
def test_bad_specs_name_the_field_and_fix(bad, needle):
    with pytest.raises(RunSpecError) as err:
        load_run_spec({"rule": "momentum", **bad})
    assert needle in str(err.value)


def test_yaml_file(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("rule: balancer\ntokens: [ETH, USDC]\n")
    assert load_run_spec(p).tokens == ["ETH", "USDC"]
    with pytest.raises(RunSpecError, match="does not exist"):
        load_run_spec(tmp_path / "missing.yaml")


STRATEGY = {"strategy": "liquidity_sweep", "tokens": ["BTC"], "startDateString": "2024-01-01",
            "endDateString": "2024-02-01"}


def test_one_section_per_kind():
    pool, strategy = load_run_spec({"rule": "momentum"}), load_run_spec(STRATEGY)
    assert (type(pool).__name__, pool.kind, type(strategy).__name__, strategy.kind) == (
        "PoolSpec", "pool", "StrategySpec", "strategy")
    assert strategy.optimisation_settings.method == "random"  # a strategy's default trainer
    assert load_run_spec({**STRATEGY, "optimisation_settings": {"val_fraction": 0}}).optimisation_settings.method \
        == "random"


@pytest.mark.parametrize("bad,needle", [
    ({**STRATEGY, "fees": 0.003}, "fees: unknown key; fees belongs to pool specs; remove it"),
    ({"rule": "momentum", "strategy_settings": {"taker_fee_bps": 5}}, "strategy_settings belongs to CEX strategy"),
    ({**STRATEGY, "strategy": "liquidity_swep"}, "did you mean 'liquidity_sweep'"),
    ({**STRATEGY, "return_val": "net_proft"}, "did you mean 'net_profit'"),
    ({"rule": "momentum", "return_val": "sharp"}, "return_val 'sharp' is not a metric"),
    ({**STRATEGY, "tokens": ["BTC", "ETH"]}, "trades one market"),
    ({**STRATEGY, "optimisation_settings": {"method": "gradient_descent"}}, "gradient descent cannot train"),
])
def test_each_kind_refuses_what_it_cannot_honour(bad, needle):
    """A key of the other kind is refused, never accepted and ignored; names are checked by the tunable."""
    with pytest.raises(RunSpecError) as err:
        load_run_spec(bad)
    assert needle in str(err.value)


def test_spec_module_imports_neither_the_simulator_nor_the_strategies():
    from test_import_graph import import_graph

    graph = import_graph()
    seen, todo = set(), ["quant_core.spec"]
    while todo:  # everything importing quant_core.spec runs, transitively
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert not {m for m in seen if m.startswith(("quant_core.sim", "quant_core.strategies"))}
