"""Natural signs of reported metrics, apart from quant_core.metrics so that the store and the CLI read them
without importing JAX.

Training maximises every metric, so the metric functions return risk measures negated (quant_core.metrics).
That negation belongs to the optimiser: reports, stored versions and exports carry each metric's natural
sign (volatility, drawdowns, durations, the ulcer index and downside capture positive, lower is better).

Versions stored before this rule hold their in-sample and hold-out risk measures (and a training objective
on one) negated. Versions are immutable rows, so they are not rewritten: `natural_stored_metrics` converts
them when they are read, and says so in their ``signs`` entry; versions written since carry
``signs: natural``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Metrics the metric functions return negated so that training can maximise them (a risk: less is better),
#: plus the backtester's trade metric max_drawdown (quant_core.strategies.backtest), negated for the same reason.
NEGATED: frozenset[str] = frozenset({
    "greatest_draw_down", "weekly_max_drawdown", "annualised_volatility", "max_drawdown_duration", "ulcer",
    "downside_capture", "max_drawdown",
})
#: Methods whose best score is the monitored early_stopping_metric (their selection), not the trained metric.
MONITORING_METHODS = ("gradient_descent", "bfgs", "cma_es")
#: The marker a stored version's metrics carry: their signs are natural.
SIGNS_KEY, NATURAL = "signs", "natural"
CONVERTED = "natural (converted on read: this version was stored with its risk measures negated)"
_STORED_PARTS = ("in_sample", "holdout")


def natural_value(name: str, value: Any) -> Any:
    """`value` of metric `name` as reported: an objective-signed risk measure flipped back to positive.
    (0.0 - v, not -v, so that a flat path reads 0.0 rather than -0.0; None stays None; a numpy array of one
    metric's values is flipped as a whole.)"""
    if value is None or name not in NEGATED:
        return value
    return 0.0 - value


def natural_signs(values: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics dict (objective-signed, as training sees it) in natural signs, for reports and the store."""
    return {name: natural_value(name, v) for name, v in values.items()}


def maximised(name: str) -> str:
    """What a search maximises when it trains on `name`: the metric, or its negation for a risk measure."""
    return f"-{name}" if name in NEGATED else name


def better(name: str) -> str:
    """Which way is good for `name` in its natural sign, for labels next to reported numbers."""
    return "lower is better" if name in NEGATED else "higher is better"


def scored_metric(method: str, return_val: str, early_stopping_metric: str) -> str:
    """The metric a method's best score (TrainedParameters.objective) is a value of: searches score the metric
    trained on; gradient descent, BFGS and CMA-ES select on the monitored early_stopping_metric."""
    return early_stopping_metric if method in MONITORING_METHODS else return_val


def natural_stored_metrics(metrics: dict, run_spec: Mapping[str, Any] | None = None) -> dict:
    """A stored version's metrics in natural signs (module docstring). Versions with the marker are returned
    as they are; one without it is converted only where it holds a negated risk measure, so metrics that
    never had one (hand-written rows, tests) read back exactly as written."""
    if not isinstance(metrics, dict) or SIGNS_KEY in metrics:
        return metrics
    parts = {p: metrics[p] for p in _STORED_PARTS if isinstance(metrics.get(p), dict)}
    if not any(NEGATED & set(values) for values in parts.values()):
        return metrics
    out = {**metrics, **{p: natural_signs(values) for p, values in parts.items()}, SIGNS_KEY: CONVERTED}
    opt = (run_spec or {}).get("optimisation_settings") or {}
    scored = scored_metric(opt.get("method", ""), (run_spec or {}).get("return_val", ""),
                           opt.get("early_stopping_metric", "daily_log_sharpe"))
    if isinstance(out.get("training_objective"), int | float):
        out["training_objective"] = natural_value(scored, out["training_objective"])
    return out
