"""Walk-forward validation of any tunable: retrain on each fold's training window, evaluate on its test window.

Folds from (train, gap, test, step) in days over [start, end):
    rolling:  train [start + i step, + train), test [train_end + gap, + test)
    anchored: train [start, start + train + i step), test as above
Each test window is evaluated from its own start with warm-up taken from the data *before* that start
(never from inside the test window): a fresh pool at the initial weights, a strategy starting flat. The
out-of-sample daily log returns of all folds are concatenated into one equity curve; its Sharpe
(daily_log_sharpe formula) and its sample size (days for a pool, trades for a strategy: the tunable's
`sample_unit`) are the evidence the lifecycle stage is decided from. A fold whose training finds no
admissible parameter set stays out of the market where the tunable can (`Tunable.stay_out`).

Walk-forward efficiency (Pardo; as the reference simulator reports it): per fold, the annualised out-of-sample
Sharpe over the annualised in-sample Sharpe (the `sharpe` metric), undefined (NaN) where the in-sample Sharpe is
<= 0; the report gives the mean and the worst over folds, NaN when any fold is undefined (as the reference), and
how many folds were undefined. 0.5 or more is read as a robust transfer from training to unseen data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from quant_core import metrics
from quant_core.spec import RunSpec
from quant_core.train.problem import NoFiniteCandidate
from quant_core.train.trainer import TrainedParameters, train
from quant_core.tunables import tunable_for
from quant_core.validate import significance as sig
from quant_core.validate.folds import Fold, WalkForwardSettings, make_folds


@dataclass
class FoldResult:
    fold: Fold
    params: dict[str, Any]
    in_sample: dict[str, float]
    out_of_sample: dict[str, float]
    oos_benchmark: dict[str, float]  # the tunable's benchmark (HODL / buy-and-hold) over the test window
    oos_log_returns: list[float]
    walk_forward_efficiency: float = float("nan")  # this fold's OOS / IS Sharpe (NaN when IS Sharpe <= 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fold"] = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self.fold).items()}
        return d


@dataclass
class WalkForwardReport:
    metric: str
    folds: list[FoldResult]
    oos_sharpe: float
    benchmark: str  # what oos_benchmark_* hold: "hodl" (pools), "buy_and_hold" (CEX strategies)
    oos_benchmark_sharpe: float
    mean_is_sharpe: float
    mean_oos_sharpe: float
    oos_is_ratio: float
    sample_size: int  # counted in sample_unit
    sample_unit: str  # "out-of-sample days" (pools) or "out-of-sample trades" (CEX strategies)
    oos_equity: list[float] = field(default_factory=list)
    oos_benchmark_equity: list[float] = field(default_factory=list)
    oos_dates: list[str] = field(default_factory=list)
    # further benchmarks over the same folds (pools: "uniform", the static pool at equal weights)
    other_benchmarks: dict[str, dict] = field(default_factory=dict)  # name -> {"sharpe", "equity"}
    significance: dict = field(default_factory=dict)  # see quant_core.validate.significance / evidence()
    trades: list[dict] = field(default_factory=list)  # tunables that trade: the out-of-sample trades, fold by fold
    mean_walk_forward_efficiency: float = float("nan")  # mean over folds (NaN if any fold's is undefined)
    worst_walk_forward_efficiency: float = float("nan")
    undefined_efficiency_folds: int = 0  # folds whose in-sample Sharpe was <= 0

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "folds"}
        d["folds"] = [f.to_dict() for f in self.folds]
        return d


@dataclass
class FoldOutcome:
    """Everything one fold's retrain and evaluation give `combine_folds` (picklable: a fold can run in its own
    process or on another machine). `n_configurations` and `candidates` are None where the fold stayed out."""

    result: FoldResult
    oos_log_returns: np.ndarray
    benchmark_log_returns: dict[str, np.ndarray]  # the tunable's benchmarks over the test window
    dates: list[str]
    trades: list[dict]  # the out-of-sample trades, each tagged with the fold's index
    n_configurations: int | None = None
    candidates: list[dict] | None = None  # the trained result's candidates (user units), best first

    @property
    def stayed_out(self) -> bool:
        return self.n_configurations is None


def walk_forward_span(spec: RunSpec, start: datetime | None = None,
                      end: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) of a walk-forward: by default startDateString .. endTestDateString (or endDateString)."""
    return start or spec.start, end or spec.end_test or spec.end


def plan_folds(data: Any, spec: RunSpec, settings: WalkForwardSettings, start: datetime,
               end: datetime) -> list[Fold]:
    """The folds over [start, end), once the data are checked to cover them (with warm-up)."""
    folds = make_folds(start, end, settings)
    tunable_for(spec).validate_data(data, folds[0].train_start, folds[-1].test_end)
    return folds


def run_fold(
    data: Any,
    spec: RunSpec,
    fold: Fold,
    *,
    seed: int | None = None,
    n_trials: int | None = None,
    trainer: Callable[..., TrainedParameters] = train,
    log: Callable[[str], None] | None = None,
) -> FoldOutcome:
    """Retrain on the fold's training window and evaluate in- and out-of-sample; a fold whose training finds no
    admissible parameter set stays out of the market where the tunable can (`Tunable.stay_out`)."""
    tunable = tunable_for(spec)
    n_configurations = candidates = None
    try:
        trained = trainer(data, spec, start=fold.train_start, end=fold.train_end, seed=seed, n_trials=n_trials)
    except NoFiniteCandidate as exc:
        oos = tunable.stay_out(data, fold.test_start, fold.test_end)  # raises where it cannot stay out
        if log:
            log(f"fold {fold.index}: no admissible parameter set ({exc}); the fold stays out of the market")
        params, in_sample = {}, tunable.stay_out(data, fold.train_start, fold.train_end).metrics[0]
    else:
        params = trained.params
        in_sample = tunable.evaluate(data, [params], fold.train_start, fold.train_end, benchmarks=False).metrics[0]
        oos = tunable.evaluate(data, [params], fold.test_start, fold.test_end, trades=tunable.trades)
        n_configurations, candidates = trained.n_configurations, trained.candidates
    r = oos.log_returns[0]
    trades = [{"fold": fold.index, **t} for t in oos.trades[0]] if oos.trades else []
    result = FoldResult(fold=fold, params=params, in_sample=in_sample, out_of_sample=oos.metrics[0],
                        oos_benchmark=oos.benchmark_metrics[tunable.benchmark], oos_log_returns=r.tolist(),
                        walk_forward_efficiency=walk_forward_efficiency(in_sample["sharpe"], oos.metrics[0]["sharpe"]))
    if log:
        f = result
        counts = (f" ({f.in_sample['n_trades']:.0f} trades)", f" ({f.out_of_sample['n_trades']:.0f} trades)") \
            if tunable.trades else ("", "")
        log(f"fold {fold.index}: train {fold.train_start:%Y-%m-%d}..{fold.train_end:%Y-%m-%d} IS "
            f"{f.in_sample['daily_log_sharpe']:.3f}{counts[0]}, test {fold.test_start:%Y-%m-%d}.."
            f"{fold.test_end:%Y-%m-%d} OOS {f.out_of_sample['daily_log_sharpe']:.3f}{counts[1]}")
    return FoldOutcome(result=result, oos_log_returns=r, benchmark_log_returns=dict(oos.benchmark_log_returns),
                       dates=oos.dates, trades=trades, n_configurations=n_configurations, candidates=candidates)


def combine_folds(
    data: Any,
    spec: RunSpec,
    outcomes: list[FoldOutcome],
    start: datetime,
    end: datetime,
    *,
    log: Callable[[str], None] | None = None,
) -> WalkForwardReport:
    """The report of the folds' outcomes (in fold order) over [start, end): the stitched out-of-sample returns,
    benchmarks, walk-forward efficiency, and the significance evidence, with the last trained fold's candidates
    evaluated over the whole span for PBO."""
    tunable = tunable_for(spec)
    outcomes = sorted(outcomes, key=lambda o: o.result.fold.index)
    results = [o.result for o in outcomes]
    returns = [o.oos_log_returns for o in outcomes]
    bench: dict[str, list[np.ndarray]] = {}
    dates: list[str] = []
    trades: list[dict] = []
    for o in outcomes:
        for name, b in o.benchmark_log_returns.items():
            bench.setdefault(name, []).append(b)
        dates.extend(o.dates)
        trades.extend(o.trades)
    n_configurations = [o.n_configurations for o in outcomes if not o.stayed_out]
    last = next((o for o in reversed(outcomes) if not o.stayed_out), None)
    r_all = np.concatenate(returns)
    candidates = None
    if last is not None and len(last.candidates) > 1:
        ev = tunable.evaluate(data, last.candidates, start, end, summary=False, benchmarks=False)
        candidates = ev.log_returns.T  # [days, K]
    significance = evidence(r_all, int(round(np.mean(n_configurations or [1]))), candidates)
    if log:
        log(f"significance: {significance}")
    b_all = {name: np.concatenate(parts) for name, parts in bench.items()}
    primary = b_all.pop(tunable.benchmark)
    sample = len(trades) if tunable.trades else int(r_all.size)
    others = {name: {"sharpe": float(metrics.sharpe_of_returns(b)), "equity": np.exp(np.cumsum(b)).tolist()}
              for name, b in b_all.items()}
    mean_is = float(np.mean([f.in_sample["daily_log_sharpe"] for f in results]))
    mean_oos = float(np.mean([f.out_of_sample["daily_log_sharpe"] for f in results]))
    wfe = np.array([f.walk_forward_efficiency for f in results])
    return WalkForwardReport(
        metric=spec.return_val,
        folds=results,
        oos_sharpe=float(metrics.sharpe_of_returns(r_all)),
        benchmark=tunable.benchmark,
        oos_benchmark_sharpe=float(metrics.sharpe_of_returns(primary)),
        mean_is_sharpe=mean_is,
        mean_oos_sharpe=mean_oos,
        oos_is_ratio=float(mean_oos / mean_is) if mean_is != 0 else float("nan"),
        sample_size=sample,
        sample_unit=tunable.sample_unit,
        oos_equity=np.exp(np.cumsum(r_all)).tolist(),
        oos_benchmark_equity=np.exp(np.cumsum(primary)).tolist(),
        oos_dates=dates,
        other_benchmarks=others,
        significance=significance,
        trades=trades,
        mean_walk_forward_efficiency=float(np.mean(wfe)),
        worst_walk_forward_efficiency=float(np.min(wfe)),
        undefined_efficiency_folds=int(np.sum(~np.isfinite(wfe))),
    )


def walk_forward(
    data: Any,
    spec: RunSpec,
    settings: WalkForwardSettings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    trainer: Callable[..., TrainedParameters] = train,
    log: Callable[[str], None] | None = None,
) -> WalkForwardReport:
    """Retrain per fold over [start, end) (default: startDateString .. endTestDateString or end) of `data`
    (a PricePanel for a pool, MarketCandles for a CEX strategy), one fold after the other in this process.
    (The Dagster retrain runs each fold as its own step: `plan_folds`, `run_fold`, `combine_folds`.)"""
    start, end = walk_forward_span(spec, start, end)
    folds = plan_folds(data, spec, settings, start, end)
    outcomes = [run_fold(data, spec, fold, seed=seed, n_trials=n_trials, trainer=trainer, log=log) for fold in folds]
    return combine_folds(data, spec, outcomes, start, end, log=log)


def walk_forward_efficiency(is_sharpe: float, oos_sharpe: float) -> float:
    """Pardo's walk-forward efficiency of one fold: annualised OOS Sharpe / annualised IS Sharpe; NaN where the
    in-sample Sharpe is not positive (a ratio to a losing fit means nothing)."""
    if not (np.isfinite(is_sharpe) and is_sharpe > 0):
        return float("nan")
    return float(oos_sharpe / is_sharpe)


def evidence(oos_returns: np.ndarray, n_configurations: int, candidates: np.ndarray | None,
             alpha: float = 0.05) -> dict:
    """The significance and overfitting statistics of a walk-forward run (JSON-ready).

    - on the concatenated out-of-sample daily returns: the Sharpe t-test, PSR against 0, and the
      deflated Sharpe ratio with N = the configurations each fold's training tried (mean over folds);
    - on the last fold's candidate configurations over the whole walk-forward period [T days, K]:
      PBO (CSCV; 16 blocks, fewer when the period is short), each candidate's t-test p-value with
      Bonferroni and Benjamini-Hochberg adjustments, and the Rademacher lower bound on their Sharpe."""
    out: dict = {}
    t, p = sig.sharpe_t_test(oos_returns)
    m = sig.sharpe_moments(oos_returns)
    dsr = sig.deflated_sharpe_ratio(oos_returns, max(n_configurations, 1))
    out.update(t_stat=t, t_p_value=p, psr=sig.probabilistic_sharpe_ratio(m.sharpe, m.n, m.skew, m.kurtosis),
               deflated_sharpe=dsr.dsr, deflated_sharpe_p_value=dsr.p_value, expected_max_sharpe=dsr.benchmark,
               n_configurations=n_configurations, daily_sharpe=m.sharpe, skew=m.skew, kurtosis=m.kurtosis)
    if candidates is not None and candidates.shape[1] > 1:
        blocks = min(16, (candidates.shape[0] // 4) // 2 * 2)
        if blocks >= 2:
            pbo = sig.pbo_cscv(candidates, n_blocks=blocks)
            out.update(pbo=pbo["pbo"], pbo_logit_mean=pbo["logit_mean"], pbo_blocks=pbo["n_blocks"])
        p_values = np.array([sig.sharpe_t_test(candidates[:, k])[1] for k in range(candidates.shape[1])])
        bh = sig.benjamini_hochberg(p_values)
        out.update(candidate_p_values=p_values.tolist(), candidate_p_bonferroni=sig.bonferroni(p_values).tolist(),
                   candidate_p_bh=bh.tolist(), n_significant_bh=int(np.sum(bh < alpha)),
                   n_candidates=int(candidates.shape[1]))
        rad = sig.rademacher_bound(candidates)
        out.update(rademacher_complexity=rad["complexity"], rademacher_best_lower_bound=rad["best_lower_bound"])
    return out
