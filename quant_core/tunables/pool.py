"""A TFMM pool rule (hooks included) as a tunable: a price panel in, the simulator underneath.

Its benchmark is HODL of the pool's initial token amounts ("hodl"); the static pool at equal weights
("uniform") is a second one. Evaluations of one parameter set run `simulate` (every metric); several
run in one vmapped pass (`batched_values`). Daily log returns are those of the value path sampled once a
day (`quant_core.metrics.daily_log_returns`).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from quant_core import metrics
from quant_core.contract import Evaluation
from quant_core.data.panel import PricePanel, build_numeraire_panel
from quant_core.data.schema import Market
from quant_core.params import Param
from quant_core.plots import pool_plot
from quant_core.sim.pool import get_pool
from quant_core.sim.resolve import resolve_params
from quant_core.sim.simulate import simulate
from quant_core.sim.window import plan_window
from quant_core.spec import PoolSpec, RunSpec
from quant_core.train.force_scalar import check_force_scalar, shared_params
from quant_core.train.objective import PoolEvaluator, batched_values
from quant_core.train.problem import NoFiniteCandidate, SearchProblem, check_overrides
from quant_core.train.split import plan_split

TABLE_METRICS = ("daily_log_sharpe", "sharpe", "returns", "returns_over_hodl", "greatest_draw_down", "calmar")


def _daily_log_returns(values: np.ndarray, steps_per_day: int) -> np.ndarray:
    return np.asarray(metrics.daily_log_returns(values, steps_per_day))


def _days(timestamps: np.ndarray, steps_per_day: int) -> list[str]:
    """The day each daily return belongs to: the dates of the window's day boundaries after the first."""
    return [str(np.datetime64(t, "D")) for t in timestamps[::steps_per_day][1:]]


class PoolTunable:
    kind = "pool"
    data_name = "price_panel"  # what its data is called on the platform (the Dagster asset)
    benchmark = "hodl"
    sample_unit = "out-of-sample days"
    trades = False
    table_metrics = TABLE_METRICS
    metric_names = tuple(metrics.METRICS)

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.pool = get_pool(spec.rule)
        self.name = spec.rule
        self.differentiable = self.pool.rule.differentiable

    def check(self) -> None:
        """What the pool accepts: its token count, `parameters` (names and shapes), the search ranges, a
        metric to train on. Raises naming the field and the fix."""
        spec = self.spec
        if self.pool.rule.n_tokens is not None and len(spec.tokens) != self.pool.rule.n_tokens:
            raise ValueError(f"rule {spec.rule!r} is a {self.pool.rule.n_tokens}-token pool; tokens lists "
                             f"{len(spec.tokens)}: {spec.tokens}")
        if spec.return_val not in self.metric_names:
            raise ValueError(f"return_val {spec.return_val!r} is not a metric; use one of {sorted(self.metric_names)}")
        check_force_scalar(spec, self.pool, self.initial())
        check_overrides(self.params(), spec, self.initial(), len(spec.tokens), f"rule {spec.rule!r}")

    def params(self) -> tuple[Param, ...]:
        """The pool's schema; under force_scalar the rule's parameters are pool-wide (one search axis each)."""
        return shared_params(self.pool, self.spec)

    def initial(self) -> dict[str, np.ndarray]:
        return resolve_params(self.spec)

    def problem(self, data: PricePanel, start: datetime, end: datetime) -> SearchProblem:
        """Segments (train / sub-periods / validation) of one continuous pass over [start, end)."""
        spec = self.spec
        split = plan_split(data, spec, start, end)

        def evaluator(names: tuple[str, ...], n_sub_periods: int) -> PoolEvaluator:
            return PoolEvaluator(data, spec, split.start, split.end, metrics=names,
                                 segments=split.scored_segments(n_sub_periods))

        return SearchProblem(base=self.initial(), tokens=spec.sorted_tokens, params=self.params(), spec=spec,
                             owner=f"rule {spec.rule!r}", has_validation=split.val_steps > 0, evaluator=evaluator,
                             table_metrics=TABLE_METRICS)

    def _benchmark_specs(self) -> dict[str, RunSpec]:
        """The gates' and reports' benchmarks: one per universe, the same for every candidate, so HODL holds the
        spec's initial weights. (The training objective's returns_over_hodl instead starts HODL where each
        candidate's pool starts, its first target on first_target rules, as the reference scores it.)"""
        n = len(self.spec.tokens)
        return {
            "hodl": self.spec.model_copy(update={"rule": "hodl", "parameters": None}),
            "uniform": self.spec.model_copy(update={"rule": "balancer", "parameters": None,
                                                    "initial_weights": [1 / n] * n}),
        }

    def evaluate(self, data: PricePanel, params: list[dict], start: datetime, end: datetime, *, summary: bool = True,
                 benchmarks: bool = True, trades: bool = False) -> Evaluation:
        window = plan_window(data, self.spec, start, end)
        spd = window.steps_per_day
        dates = _days(data.timestamps[window.start_row : window.end_row], spd)
        if len(params) == 1:
            sim = simulate(data, self.spec, params[0], start=start, end=end)
            values = sim.values[None]
            summaries = [sim.summary()] if summary else None
        else:
            values = batched_values(data, self.spec, params, start, end)
            summaries = ([simulate(data, self.spec, p, start=start, end=end).summary() for p in params] if summary
                         else None)
        out = Evaluation(dates=dates, log_returns=np.stack([_daily_log_returns(v, spd) for v in values]),
                         daily_values=np.stack([v[::spd] for v in values]), metrics=summaries)
        if benchmarks:
            for name, spec in self._benchmark_specs().items():
                sim = simulate(data, spec, start=start, end=end)
                out.benchmark_log_returns[name] = _daily_log_returns(sim.values, sim.steps_per_day)
                out.benchmark_metrics[name] = sim.summary()
        return out

    def stay_out(self, data: PricePanel, start: datetime, end: datetime) -> Evaluation:
        raise NoFiniteCandidate(f"rule {self.name!r}: a pool cannot stay out of the market; no parameter set of "
                                "the search scored a finite objective (check the prices and the search ranges)")

    def user_params(self, params: dict) -> dict:
        """Only what the pool reads under this spec (e.g. memory_days_2 only with use_alt_lamb)."""
        active = {p.name for p in self.params() if p.active(self.spec)}
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items() if k in active}

    def stored_params(self, params: dict) -> dict:
        """{parameter: {token: value}}: unambiguous for live trading (ensemble__ members: {token: [members]})."""
        out = {}
        for name, vals in params.items():
            arr = np.asarray(vals, dtype=np.float64)
            per_token = arr.T.tolist() if arr.ndim == 2 else arr.tolist()
            out[name] = dict(zip(self.spec.sorted_tokens, per_token, strict=True))
        return out

    def params_from_stored(self, stored: dict) -> dict:
        """The inverse of stored_params: {parameter: {token: value}} -> {parameter: [n]} (ensembles: [members, n])."""
        out = {}
        for name, by_token in stored.items():
            arr = np.asarray([by_token[t] for t in self.spec.sorted_tokens], dtype=np.float64)
            out[name] = arr.T if arr.ndim == 2 else arr
        return out

    def scored_parts(self, data: PricePanel, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """[training part, (validation part)] a search scores over [start, end)."""
        split = plan_split(data, self.spec, start, end)
        return [(start, split.train_end), (split.train_end, end)] if split.val_steps else [(start, end)]

    def load_data(self, markets: dict[str, Market], frames: dict[str, pl.DataFrame]) -> PricePanel:
        """The panel of the spec's tokens from their markets' candles, priced in USD: pairs quoted in another
        asset are converted through the other markets, USD stablecoin quotes pinned at 1 (stated in the
        panel's `pricing` metadata)."""
        timeframe = next(iter(markets.values())).timeframe
        return build_numeraire_panel({markets[t]: frames[markets[t].key] for t in self.spec.tokens},
                                     self.spec.tokens, timeframe)

    def describe_data(self, data: PricePanel) -> dict:
        return {"rows": int(data.prices.shape[0]), "first": str(data.timestamps[0]), "last": str(data.timestamps[-1]),
                "tokens": list(data.tokens), "step_minutes": data.step_minutes,
                "pricing": data.metadata.get("pricing", {}),
                "last_prices": {t: float(p) for t, p in zip(data.tokens, data.prices[-1], strict=True)}}

    def plot(self, data: PricePanel, params: dict, start: datetime, end: datetime, title: str,
             split: datetime | None = None) -> bytes:
        """Pool value vs HODL (top) and its weights (bottom) over [start, end); `split` marks end of training."""
        sim = simulate(data, self.spec, params, start=start, end=end)
        hodl = simulate(data, self._benchmark_specs()["hodl"], start=start, end=end)
        return pool_plot(sim.timestamps, sim.values, hodl.values, sim.weights, sim.tokens, title,
                         split=split.replace(tzinfo=None) if split else None)

    def data_hash(self, data: PricePanel) -> str:
        return data.data_hash

    def validate_data(self, data: PricePanel, start: datetime, end: datetime) -> None:
        plan_window(data, self.spec, start, end)
