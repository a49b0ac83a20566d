"""Walk-forward validation: retrain on each fold's training window, evaluate on its test window.

Folds from (train, gap, test, step) in days over [start, end):
    rolling:  train [start + i step, + train), test [train_end + gap, + test)
    anchored: train [start, start + train + i step), test as above
Each test window is simulated from its own start with estimator warm-up taken from the data
*before* that start (never from inside the test window), and a fresh pool at the initial weights.
The out-of-sample daily log returns of all folds are concatenated into one equity curve; its
Sharpe (daily_log_sharpe formula) and length (the sample size) are the evidence the lifecycle
stage is decided from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quant_core import metrics
from quant_core.data.panel import PricePanel
from quant_core.sim.simulate import plan_window, simulate
from quant_core.spec import RunSpec
from quant_core.train.objective import batched_values
from quant_core.train.pool import TrainedPool, train_pool
from quant_core.validate import significance as sig


class WalkForwardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_days: int = Field(180, ge=2, description="length of each training window")
    test_days: int = Field(60, ge=2, description="length of each out-of-sample window")
    gap_days: int = Field(0, ge=0, description="days skipped between training and test")
    step_days: int | None = Field(None, ge=1, description="roll step (default: test_days)")
    anchored: bool = Field(False, description="expanding training window from the start")
    min_folds: int = Field(2, ge=1)


@dataclass(frozen=True)
class Fold:
    index: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime


def make_folds(start: datetime, end: datetime, s: WalkForwardSettings) -> list[Fold]:
    step = timedelta(days=s.step_days or s.test_days)
    train, gap, test = timedelta(days=s.train_days), timedelta(days=s.gap_days), timedelta(days=s.test_days)
    folds: list[Fold] = []
    i = 0
    while True:
        train_start = start if s.anchored else start + i * step
        train_end = start + train + i * step
        test_start = train_end + gap
        test_end = test_start + test
        if test_end > end:
            break
        folds.append(Fold(i, train_start, train_end, test_start, test_end))
        i += 1
    if len(folds) < s.min_folds:
        need = s.train_days + s.gap_days + s.test_days + (s.min_folds - 1) * (s.step_days or s.test_days)
        raise ValueError(
            f"walk-forward over {start:%Y-%m-%d}..{end:%Y-%m-%d} ({(end - start).days} days) gives {len(folds)} "
            f"fold(s), fewer than min_folds={s.min_folds}: it needs {need} days; shorten train_days/test_days "
            f"or extend the data window"
        )
    return folds


@dataclass
class FoldResult:
    fold: Fold
    params: dict[str, list[float]]
    in_sample: dict[str, float]
    out_of_sample: dict[str, float]
    oos_hodl: dict[str, float]
    oos_log_returns: list[float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fold"] = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self.fold).items()}
        return d


@dataclass
class WalkForwardReport:
    metric: str
    folds: list[FoldResult]
    oos_sharpe: float
    oos_hodl_sharpe: float
    mean_is_sharpe: float
    mean_oos_sharpe: float
    oos_is_ratio: float
    sample_size: int  # out-of-sample daily returns (CEX strategies: trades)
    oos_equity: list[float] = field(default_factory=list)
    oos_hodl_equity: list[float] = field(default_factory=list)
    oos_dates: list[str] = field(default_factory=list)
    oos_uniform_sharpe: float = float("nan")  # the static pool at equal weights, same folds
    oos_uniform_equity: list[float] = field(default_factory=list)
    significance: dict = field(default_factory=dict)  # see quant_core.validate.significance / evidence()
    trades: list[dict] = field(default_factory=list)  # CEX strategies: the out-of-sample trades, fold by fold
    sample_unit: str = "out-of-sample days"  # what sample_size counts (CEX strategies: out-of-sample trades)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "folds"}
        d["folds"] = [f.to_dict() for f in self.folds]
        return d


def _log_returns(values: np.ndarray, steps_per_day: int) -> np.ndarray:
    return np.asarray(metrics.daily_log_returns(values, steps_per_day))


def walk_forward(
    panel: PricePanel,
    spec: RunSpec,
    settings: WalkForwardSettings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_trials: int | None = None,
    trainer: Callable[..., TrainedPool] = train_pool,
    log: Callable[[str], None] | None = None,
) -> WalkForwardReport:
    """Retrain per fold over [start, end) (default: startDateString .. endTestDateString or end)."""
    start = start or spec.start
    end = end or spec.end_test or spec.end
    hodl_spec = spec.model_copy(update={"rule": "hodl", "parameters": None})
    n = len(spec.tokens)
    uniform_spec = spec.model_copy(update={"rule": "balancer", "parameters": None, "initial_weights": [1 / n] * n})
    results: list[FoldResult] = []
    all_r, all_hodl, all_uniform, dates = [], [], [], []
    n_configurations, last = [], None
    for fold in make_folds(start, end, settings):
        trained = trainer(panel, spec, start=fold.train_start, end=fold.train_end, seed=seed, n_trials=n_trials)
        is_sim = simulate(panel, spec, trained.params, start=fold.train_start, end=fold.train_end)
        oos_sim = simulate(panel, spec, trained.params, start=fold.test_start, end=fold.test_end)
        hodl_sim = simulate(panel, hodl_spec, start=fold.test_start, end=fold.test_end)
        uniform_sim = simulate(panel, uniform_spec, start=fold.test_start, end=fold.test_end)
        r = _log_returns(oos_sim.values, oos_sim.steps_per_day)
        all_r.append(r)
        all_hodl.append(_log_returns(hodl_sim.values, hodl_sim.steps_per_day))
        all_uniform.append(_log_returns(uniform_sim.values, uniform_sim.steps_per_day))
        n_configurations.append(trained.n_configurations)
        last = trained
        days = oos_sim.timestamps[:: oos_sim.steps_per_day][1:]
        dates.extend(str(np.datetime64(t, "D")) for t in days)
        results.append(
            FoldResult(
                fold=fold,
                params=trained.params,
                in_sample=is_sim.summary(),
                out_of_sample=oos_sim.summary(),
                oos_hodl=hodl_sim.summary(),
                oos_log_returns=r.tolist(),
            )
        )
        if log:
            log(
                f"fold {fold.index}: train {fold.train_start:%Y-%m-%d}..{fold.train_end:%Y-%m-%d} "
                f"IS {results[-1].in_sample['daily_log_sharpe']:.3f}, test {fold.test_start:%Y-%m-%d}.."
                f"{fold.test_end:%Y-%m-%d} OOS {results[-1].out_of_sample['daily_log_sharpe']:.3f}"
            )
    r_all = np.concatenate(all_r)
    h_all = np.concatenate(all_hodl)
    u_all = np.concatenate(all_uniform)
    candidates = candidate_returns(panel, spec, last.candidates, start, end) if len(last.candidates) > 1 else None
    significance = evidence(r_all, int(round(np.mean(n_configurations))), candidates)
    if log:
        log(f"significance: {significance}")
    u_extra = {"oos_uniform_sharpe": float(metrics.sharpe_of_returns(u_all)),
               "oos_uniform_equity": np.exp(np.cumsum(u_all)).tolist()}
    return fold_report(spec.return_val, results, r_all, h_all, dates, significance, int(r_all.size), **u_extra)


def fold_report(metric: str, folds: list[FoldResult], r_all: np.ndarray, h_all: np.ndarray, dates: list[str],
                significance: dict, sample_size: int, **extra) -> WalkForwardReport:
    """The report of concatenated out-of-sample daily log returns (strategy r_all, benchmark h_all)."""
    mean_is = float(np.mean([f.in_sample["daily_log_sharpe"] for f in folds]))
    mean_oos = float(np.mean([f.out_of_sample["daily_log_sharpe"] for f in folds]))
    return WalkForwardReport(
        metric=metric,
        folds=folds,
        oos_sharpe=float(metrics.sharpe_of_returns(r_all)),
        oos_hodl_sharpe=float(metrics.sharpe_of_returns(h_all)),
        mean_is_sharpe=mean_is,
        mean_oos_sharpe=mean_oos,
        oos_is_ratio=float(mean_oos / mean_is) if mean_is != 0 else float("nan"),
        sample_size=sample_size,
        oos_equity=np.exp(np.cumsum(r_all)).tolist(),
        oos_hodl_equity=np.exp(np.cumsum(h_all)).tolist(),
        oos_dates=dates,
        significance=significance,
        **extra,
    )


def candidate_returns(panel: PricePanel, spec: RunSpec, candidates: list[dict], start: datetime,
                      end: datetime) -> np.ndarray:
    """Daily log returns [days, K] of K candidate configurations over [start, end), one batched pass."""
    values = batched_values(panel, spec, candidates, start, end)
    spd = plan_window(panel, spec, start, end).steps_per_day
    return np.stack([_log_returns(v, spd) for v in values], axis=1)


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
