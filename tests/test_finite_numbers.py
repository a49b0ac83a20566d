"""Issue 18 item 4: non-finite or impossible numbers in a run spec, its parameters or a registry entry are refused
at load, naming the field, instead of running to NaN/inf output (or crashing definitions loading)."""

from __future__ import annotations

import pytest

from quant_core.runspec import load_run_spec
from quant_core.spec import RunSpecError
from quant_core.universe import RegistryError, load_registry

BASE = {"rule": "momentum", "tokens": ["BTC", "ETH"], "startDateString": "2024-01-01",
        "endDateString": "2024-03-01"}
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("extra,needle", [
    ({"parameters": {"memory_days": NAN}}, "- parameters.memory_days: Input should be a finite number"),
    ({"parameters": {"k_per_day": [NAN, 1.0]}}, "- parameters.k_per_day.0: Input should be a finite number"),
    ({"initial_weights_logits": NAN}, "- initial_weights_logits: Input should be a finite number"),
    ({"initial_pool_value": INF}, "- initial_pool_value: Input should be a finite number"),
    ({"parameters": {"memory_days": -5}}, "- parameters.memory_days: -5 is impossible; it must be above 0"),
    ({"parameters": {"k_per_day": 0}}, "- parameters.k_per_day: 0 is impossible; it must be above 0"),
    ({"gas_cost": INF}, "- gas_cost: Input should be a finite number"),
    ({"max_memory_days": INF}, "- max_memory_days: Input should be a finite number"),
    ({"fees": NAN}, "- fees: Input should be a finite number"),
    ({"initial_k_per_day": INF}, "- initial_k_per_day: Input should be a finite number"),
    ({"optimisation_settings": {"base_lr": NAN}}, "- optimisation_settings.base_lr: Input should be a finite number"),
    ({"optimisation_settings": {"bfgs_settings": {"tol": INF}}}, "optimisation_settings.bfgs_settings.tol"),
])
def test_non_finite_or_impossible_numbers_are_refused_naming_the_field(extra, needle):
    with pytest.raises(RunSpecError) as err:
        load_run_spec({**BASE, **extra})
    assert needle in str(err.value)
    assert str(err.value).count("\n- ") == 1, "one line per bad field, not one per union alternative"


def test_a_registry_spec_with_an_infinite_memory_is_refused_at_load(tmp_path):
    """`max_memory_days: .inf` used to load and crash definitions loading with OverflowError."""
    p = tmp_path / "r.yaml"
    p.write_text("""markets:
  - {exchange: shipped, symbol: BTC/USD, timeframe: 1d}
universes:
  - {name: u, markets: {BTC: shipped.BTC-USD.1d}, spec: {rule: hodl, tokens: [BTC], max_memory_days: .inf}}
""")
    with pytest.raises(RegistryError, match="universes.0.spec.max_memory_days: Input should be a finite number"):
        load_registry(p)
