"""The seeds' entry points accept fingerprint dicts and return plain, JSON-serialisable results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quant_core.data.panel import panel_from_long_prices
from quant_core.data.price_file import shipped_prices_path
from quant_core.runspec import load_run_spec
from quant_core.sim.simulate import simulate
from quant_core.train.api import do_run_on_historic_data, train_on_historic_data

FINGERPRINT = {
    "rule": "momentum", "tokens": ["BTC", "ETH", "USDC"], "startDateString": "2022-06-01 00:00:00",
    "endDateString": "2023-06-01 00:00:00", "endTestDateString": "2023-09-01 00:00:00",
    "optimisation_settings": {"method": "gradient_descent", "n_iterations": 5, "n_parameter_sets": 2,
                              "batch_size": 2},
}


def test_train_on_historic_data_reports_start_train_and_test(capsys):
    result = train_on_historic_data(FINGERPRINT, iterations_per_print=5, verbose=True)
    assert "iteration 5/5" in capsys.readouterr().out
    d = json.loads(result.to_json())
    assert d["method"] == "gradient_descent" and d["seed"] == 0 and d["objective"] == "daily_log_sharpe"
    assert set(d["parameters"]) == {"memory_days", "k_per_day"}  # memory_days_2 is unused without use_alt_lamb
    assert set(d["metrics"]) == {"initial_train", "train", "test"}
    for part in d["metrics"].values():
        assert part["objective"] == part["daily_log_sharpe"] and "returns_over_hodl" in part
    assert len(d["history"]) == 6 and d["timings"]["compile_s"] > 0 and d["timings"]["per_iteration_s"] > 0
    # the test metrics are those of the trained parameters on [end, end_test)
    spec = load_run_spec(FINGERPRINT)
    panel = panel_from_long_prices(shipped_prices_path(), spec.tokens)
    test = simulate(panel, spec, d["parameters"], start=spec.end, end=spec.end_test).summary()
    assert d["metrics"]["test"]["daily_log_sharpe"] == pytest.approx(test["daily_log_sharpe"], rel=1e-12)


def test_do_run_on_historic_data_is_one_forward_pass():
    params = {"memory_days": 12.0, "k_per_day": [5.0, 10.0, 15.0]}
    run = do_run_on_historic_data(FINGERPRINT, params)
    spec = load_run_spec(FINGERPRINT)
    sim = simulate(spec=spec, panel=panel_from_long_prices(shipped_prices_path(), spec.tokens), params=params)
    np.testing.assert_allclose(run.result.values, sim.values, rtol=1e-12)
    d = run.to_dict()
    assert d["parameters"]["k_per_day"] == [5.0, 10.0, 15.0] and len(d["value"]) == len(sim.values)
    json.dumps(d, allow_nan=False)
    with pytest.raises(KeyError, match="its parameters are"):
        do_run_on_historic_data(FINGERPRINT, {"memroy_days": 3})
