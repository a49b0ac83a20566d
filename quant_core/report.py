"""One training report for every tunable: what `quant train` writes and `train_on_historic_data` returns.

`train_report(data, spec)` trains the spec's tunable on [startDateString, endDateString) with its method,
then evaluates the starting parameters and the trained ones over the training window and, with
endTestDateString, the trained ones over the test window [endDateString, endTestDateString) (a fresh pool
or a flat start, warmed up on the data before it). `TrainingResult.to_json()` writes NaN and infinities as
null and trade times as ISO UTC strings. Metrics, and the per-metric columns of `top` and `history`, are in
their natural signs (quant_core.signs); `search_objective` and the `objective`/`value` entries of the history
are the method's own scores, as it maximised them (a risk measure negated), and `summary()` says which.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quant_core.jsonsafe import json_safe
from quant_core.signs import MONITORING_METHODS, better, maximised
from quant_core.spec import RunSpec
from quant_core.train.trainer import train
from quant_core.tunables import tunable_for
from quant_core.units import iso_utc

FMT = "%Y-%m-%d"


def trade_rows(trades: list[dict]) -> list[dict]:
    """The backtester's trade dicts with their entry/exit times as ISO UTC strings."""
    return [{**t, "entry_time": iso_utc(t["entry_time"]), "exit_time": iso_utc(t["exit_time"])} for t in trades]


@dataclass
class TrainingResult:
    kind: str  # "pool" or "strategy"
    name: str  # the pool rule (hooks included) or the CEX strategy
    tokens: list[str]  # alphabetical: the order of per-token parameter values (a strategy: its one market)
    method: str
    seed: int
    objective: str  # the metric trained on (return_val)
    search_objective: float  # the method's best score, as it maximised it (risk measures negated): search_label()
    parameters: dict[str, Any]  # user units: pools one value per token, strategies one number each
    metrics: dict[str, dict[str, float]]  # initial_train, train, (test): every metric, "objective" too; natural signs
    n_evaluations: int
    seconds: float
    trades: dict[str, list[dict]] = field(default_factory=dict)  # tunables that trade: per part, ISO times
    timeframe: str | None = None  # CEX strategies: the candles' timeframe
    top: list[dict] = field(default_factory=list)  # grid/random: top-k table rows; optuna: the best trials
    evaluations_per_second: float | None = None  # grid / random
    history: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    windows: dict[str, str | None] = field(default_factory=dict)
    run_spec: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["rule" if self.kind == "pool" else "strategy"] = d.pop("name")  # the run spec's own key
        for key in ("timeframe", "evaluations_per_second"):
            if d[key] is None:
                del d[key]
        if self.kind == "pool":
            del d["trades"]
        return json_safe(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def summary(self) -> str:
        """A few lines for people, each number labelled: the metric trained on (natural sign) over the training
        window with the starting and the trained parameters and over the test window, then the search's own best
        score (what it maximised, on the part of the window it scored), trades, parameters."""
        def num(v: float) -> str:
            return f"{v:.4f}" if math.isfinite(v) else "n/a"

        m, parts = self.objective, [p for p in ("initial_train", "train", "test") if p in self.metrics]
        budget = f"{self.n_evaluations} {'trials' if self.method == 'optuna' else 'evaluations'}"
        speed = f", {self.evaluations_per_second:.0f}/s" if self.evaluations_per_second else ""
        what = f"{self.name}{f' ({self.timeframe})' if self.timeframe else ''}"
        w = {k: _day(v) for k, v in self.windows.items() if v}
        lines = [f"{what}, {self.method} (seed {self.seed}): trained on {m} ({better(m)})"]
        if "train" in self.metrics:
            start = (f"starting parameters {num(self.metrics['initial_train']['objective'])} -> "
                     if "initial_train" in self.metrics else "")
            lines.append(f"  {m} over the training window {w.get('train_start')}..{w.get('train_end')}: {start}"
                         f"trained {num(self.metrics['train']['objective'])}")
        if "test" in self.metrics:
            lines.append(f"  {m} over the test window {w.get('train_end')}..{w.get('test_end')} (after training, "
                         f"never searched): trained {num(self.metrics['test']['objective'])}")
        lines.append(f"  {self.search_label()}: best score {num(self.search_objective)} ({budget} in "
                     f"{self.seconds:.1f} s{speed})")
        if self.trades:
            def each(key: str, fmt: Callable[[float], str]) -> str:
                return ", ".join(f"{p} {fmt(self.metrics[p][key])}" for p in parts if p != "initial_train")

            lines.append(f"trades: {each('n_trades', lambda v: f'{v:.0f}')}; net profit: {each('net_profit', num)}; "
                         f"win rate: {each('win_rate', lambda v: f'{100 * v:.1f}%' if math.isfinite(v) else 'n/a')}")
        lines.append("parameters: " + json.dumps(json_safe(self.parameters)))
        return "\n".join(lines)

    def search_label(self) -> str:
        """What `search_objective` is: the quantity the method maximised (risk measures negated), on which part
        of the training window. It differs from the training-window metric when the method scored only a part
        (val_fraction), a penalised or sub-period score, or selected on early_stopping_metric."""
        opt = self.run_spec.get("optimisation_settings", {})
        scored = self.details.get("scored_on") or {}
        train = "the train part" + (f" {scored['train'][0]}..{scored['train'][1]}" if scored.get("train") else "")
        val = ("the validation part " + f"{scored['validation'][0]}..{scored['validation'][1]}"
               if scored.get("validation") else None)
        if self.method in MONITORING_METHODS:
            monitored = opt.get("early_stopping_metric", self.objective)
            return (f"{self.method} maximised {maximised(self.objective)} and kept the parameter set with the best "
                    f"{maximised(monitored)} on {val or train}")
        mx = maximised(self.objective)
        if self.method != "optuna":
            return f"{self.method} search maximised {mx} on {train}"
        optuna = opt.get("optuna_settings", {})
        sampler, penalty = optuna.get("sampler", "tpe"), optuna.get("overfitting_penalty", 0.0)
        score = f"{mx} on {train}"
        if optuna.get("multi_objective"):
            score = f"the mean of {mx} over {optuna.get('n_sub_periods')} sub-periods of {train}"
        if penalty and val:
            base = score if optuna.get("multi_objective") else f"{mx} on {val}"
            score = f"{base} - {penalty:g} x max(0, train - validation {mx})"
        return f"{sampler} search maximised {score}"


def _day(text: str) -> str:
    """A window bound for a label: the date alone at midnight, else date and time."""
    return text[:10] if text.endswith("00:00:00") else text[:16]


def _optuna_top(history: list[dict], k: int, user: Callable[[dict], dict]) -> list[dict]:
    finite = [h for h in history if math.isfinite(h["value"])]
    rows = []
    for h in sorted(finite, key=lambda h: -h["value"])[:k]:
        rows.append({**{key: v for key, v in h.items() if key != "params"}, **user(h["params"])})
    return rows


def train_report(data: Any, spec: RunSpec, *, iterations_per_print: int | None = None,
                 log: Callable[[str], None] | None = None) -> TrainingResult:
    """Train the spec's tunable on its training window and evaluate it (module docstring). Raises ValueError /
    RuntimeError naming the problem and the fix."""
    began = time.perf_counter()
    tunable = tunable_for(spec)
    tunable.validate_data(data, spec.start, spec.end_test or spec.end)  # every window, before any work
    trained = train(data, spec, iterations_per_print=iterations_per_print, log=log)
    trained_s = time.perf_counter() - began
    windows = {"initial_train": (spec.start, spec.end), "train": (spec.start, spec.end)}
    if spec.end_test is not None:
        windows["test"] = (spec.end, spec.end_test)
    initial = tunable.user_params(tunable.initial())
    metrics, trades = {}, {}
    for part, (a, b) in windows.items():
        ev = tunable.evaluate(data, [initial if part == "initial_train" else trained.params], a, b, benchmarks=False,
                              trades=tunable.trades)
        metrics[part] = {**ev.metrics[0], "objective": ev.metrics[0][spec.return_val]}
        if ev.trades is not None:
            trades[part] = trade_rows(ev.trades[0])
    opt = spec.optimisation_settings
    details = {k: v for k, v in trained.details.items() if k not in ("top", "evaluations_per_second", "timings")}
    parts = tunable.scored_parts(data, spec.start, spec.end)
    details.update(n_configurations=trained.n_configurations,
                   scored_on={"train": [f"{parts[0][0]:{FMT}}", f"{parts[0][1]:{FMT}}"],
                              "validation": [f"{parts[1][0]:{FMT}}", f"{parts[1][1]:{FMT}}"] if len(parts) > 1
                              else None})
    if trained.method == "optuna":
        top, speed = _optuna_top(trained.history, opt.search_settings.top_k, tunable.user_params), None
    else:
        top, speed = trained.details.get("top", []), trained.details.get("evaluations_per_second")
    timings = {"training_s": trained_s, "total_s": time.perf_counter() - began,
               **{k: v for k, v in trained.details.get("timings", {}).items() if k != "total_s"}}
    return TrainingResult(
        kind=tunable.kind, name=tunable.name,
        tokens=spec.sorted_tokens, timeframe=tunable.describe_data(data).get("timeframe"), method=trained.method,
        seed=trained.seed, objective=spec.return_val, search_objective=float(trained.objective),
        parameters=trained.params, metrics=metrics, trades=trades, n_evaluations=trained.n_evaluations,
        seconds=trained.seconds, top=top, evaluations_per_second=speed, history=trained.history, timings=timings,
        details=details, windows={"train_start": spec.startDateString, "train_end": spec.endDateString,
                                  "test_end": spec.endTestDateString},
        run_spec=spec.model_dump(mode="json"),
    )
