"""The committed walk-forward example (docs/examples/walk_forward_momentum) reproduces from the shared prices."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import shared_data_dir

from quant_core.data.panel import panel_from_long_prices
from quant_core.runspec import load_run_spec
from quant_core.validate.walk_forward import walk_forward

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_committed_example_reproduces():
    prices = shared_data_dir() / "real_daily_prices.csv"
    spec_path = ROOT / "scripts" / "example_walk_forward.py"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("example_wf", spec_path))
    module.__spec__.loader.exec_module(module)
    committed = json.loads((module.OUT / "report.json").read_text())
    assert committed["spec"] == module.SPEC
    spec = load_run_spec(module.SPEC)
    report = walk_forward(panel_from_long_prices(prices, spec.tokens), spec, module.SETTINGS, seed=0)
    want = committed["report"]
    assert len(report.folds) == len(want["folds"]) and report.sample_size == want["sample_size"]
    assert report.oos_sharpe == pytest.approx(want["oos_sharpe"], rel=1e-6)
    assert report.significance["pbo"] == pytest.approx(want["significance"]["pbo"])
    assert report.significance["deflated_sharpe"] == pytest.approx(want["significance"]["deflated_sharpe"], rel=1e-5)
