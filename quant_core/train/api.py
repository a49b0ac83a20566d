"""The seeds' entry points: `train_on_historic_data` and `do_run_on_historic_data`.

Both take a run fingerprint (a dict, a YAML/JSON file or a RunSpec) and prices passed in (a
PricePanel, a long-format frame or file) or, by default, the daily BTC/ETH/USDC prices shipped with
the package. Results are plain objects with `to_dict()` (JSON-safe: non-finite numbers become null);
training returns the one report every tunable gives (`quant_core.report.TrainingResult`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_core.data.panel import PricePanel, panel_from_long_prices
from quant_core.data.price_file import shipped_prices_path
from quant_core.jsonsafe import json_safe
from quant_core.report import TrainingResult, train_report
from quant_core.runspec import load_run_spec
from quant_core.sim.resolve import resolve_params
from quant_core.sim.simulate import SimResult, simulate
from quant_core.spec import RunSpec

PriceData = PricePanel | pl.DataFrame | str | Path | None


def price_panel(spec: RunSpec, price_data: PriceData = None) -> PricePanel:
    """The prices a run reads: passed in, or the shipped daily prices."""
    if isinstance(price_data, PricePanel):
        return price_data
    if price_data is None:
        price_data = shipped_prices_path()
    return panel_from_long_prices(price_data, spec.tokens)


def train_on_historic_data(
    run_fingerprint: dict | str | Path | RunSpec,
    *,
    price_data: PriceData = None,
    iterations_per_print: int | None = None,
    verbose: bool = False,
    log=None,
) -> TrainingResult:
    """Train the fingerprint's parameters on [startDateString, endDateString) with its method and report
    the starting point, the trained point and (with endTestDateString) the test window's metrics."""
    spec = load_run_spec(run_fingerprint)
    if log is None and verbose:
        log = print
    every = iterations_per_print if iterations_per_print is not None else (1 if verbose else None)
    return train_report(price_panel(spec, price_data), spec, iterations_per_print=every, log=log)


def _metrics(result: SimResult, objective: str) -> dict[str, float]:
    out = result.summary()
    out["objective"] = out[objective]
    return out


@dataclass
class HistoricRun:
    result: SimResult
    metrics: dict[str, float]
    parameters: dict[str, list]

    def to_dict(self) -> dict:
        r = self.result
        return json_safe({
            "tokens": list(r.tokens), "parameters": self.parameters, "metrics": self.metrics,
            "timestamps": [str(t) for t in r.timestamps.astype("datetime64[ms]")],
            "value": r.values, "weights": r.weights, "reserves": r.reserves,
        })


def do_run_on_historic_data(
    run_fingerprint: dict | str | Path | RunSpec,
    params: dict | None = None,
    *,
    price_data: PriceData = None,
) -> HistoricRun:
    """One forward pass over [startDateString, endDateString) with `params` (user units; default: the
    fingerprint's `parameters` / initial values), with every return metric."""
    spec = load_run_spec(run_fingerprint)
    panel = price_panel(spec, price_data)
    resolved = {k: v.tolist() for k, v in resolve_params(spec, params).items()}
    result = simulate(panel, spec, resolved)
    return HistoricRun(result, _metrics(result, spec.return_val), resolved)
