"""The seeds' entry points: `train_on_historic_data` and `do_run_on_historic_data`.

Both take a run fingerprint (a dict, a YAML/JSON file or a RunSpec) and prices passed in (a
PricePanel, a long-format frame or file) or, by default, the daily BTC/ETH/USDC prices shipped with
the package. Results are plain objects with `to_dict()` (JSON-safe: non-finite numbers become null).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_core.data.panel import PricePanel, panel_from_long_prices
from quant_core.data.price_file import shipped_prices_path
from quant_core.sim.simulate import SimResult, resolve_params, simulate
from quant_core.spec import RunSpec, load_run_spec
from quant_core.train.pool import TrainedPool, train_pool

PriceData = PricePanel | pl.DataFrame | str | Path | None


def json_safe(obj: Any) -> Any:
    """Nested dicts/lists/numbers with NaN and infinities as None and numpy scalars as Python ones."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def price_panel(spec: RunSpec, price_data: PriceData = None) -> PricePanel:
    """The prices a run reads: passed in, or the shipped daily prices."""
    if isinstance(price_data, PricePanel):
        return price_data
    if price_data is None:
        price_data = shipped_prices_path()
    return panel_from_long_prices(price_data, spec.tokens)


@dataclass
class TrainingResult:
    rule: str
    tokens: list[str]  # alphabetical: the order of per-token parameter values
    parameters: dict[str, list]  # user units
    metrics: dict[str, dict[str, float]]  # initial_train, train, (test): metric name -> value, "objective" too
    method: str
    seed: int
    objective: str  # the metric trained on (return_val)
    history: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    windows: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return json_safe(self.__dict__)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _metrics(result: SimResult, objective: str) -> dict[str, float]:
    out = result.summary()
    out["objective"] = out[objective]
    return out


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
    began = time.perf_counter()
    spec = load_run_spec(run_fingerprint)
    panel = price_panel(spec, price_data)
    if log is None and verbose:
        log = print
    every = iterations_per_print if iterations_per_print is not None else (1 if verbose else None)
    trained: TrainedPool = train_pool(panel, spec, iterations_per_print=every, log=log)
    trained_s = time.perf_counter() - began
    initial = {k: v.tolist() for k, v in resolve_params(spec).items()}
    metrics = {
        "initial_train": _metrics(simulate(panel, spec, initial), spec.return_val),
        "train": _metrics(simulate(panel, spec, trained.params), spec.return_val),
    }
    if spec.end_test is not None:
        metrics["test"] = _metrics(simulate(panel, spec, trained.params, start=spec.end, end=spec.end_test),
                                   spec.return_val)
    timings = {"training_s": trained_s, "total_s": time.perf_counter() - began,
               **{k: v for k, v in trained.details.get("timings", {}).items() if k != "total_s"}}
    return TrainingResult(
        rule=spec.rule, tokens=spec.sorted_tokens, parameters=trained.params, metrics=metrics,
        method=trained.method, seed=trained.seed, objective=spec.return_val, history=trained.history,
        timings=timings, details={k: v for k, v in trained.details.items() if k != "timings"},
        windows={"train_start": spec.startDateString, "train_end": spec.endDateString,
                 "test_end": spec.endTestDateString},
    )


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
