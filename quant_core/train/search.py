"""Gradient-free search with Optuna, evaluating trials in batches.

Optuna proposes trials one by one, but the simulator is fastest scoring many parameter sets in
one vmapped call, so we ask `n_jobs` trials, score them together and tell Optuna the results.
Batches are padded to a fixed size so one compiled function serves the whole study.

Search ranges come from the rule's parameter schema, overridden per parameter by
`optuna_settings.parameter_config` (low, high, log_scale, scalar). `scalar: true` searches one
value shared by all tokens. With `expand_around: true` the range narrows to a window around the
initial value: [initial/4, initial*4] on log-scale parameters, initial +- a quarter of the range
otherwise, intersected with [low, high].
The score of a trial: the training metric on the training part (all of [start, end) when
val_fraction = 0). With overfitting_penalty > 0 (needs val_fraction > 0) it is
validation - penalty * max(0, train - validation). With multi_objective the training part is cut
into n_sub_periods equal sub-periods and the study maximises the mean and minimises the standard
deviation of the metric over them (Optuna multi-objective); the worst sub-period is recorded too,
and the chosen trial is the Pareto-optimal one with the best worst sub-period.
Samplers: tpe (default), cmaes, gp (Bayesian optimisation with a Gaussian process:
`quant_core.train.gp_sampler`) and random.
Studies persist in `storage.url` (sqlite:///..., postgresql://...) under `study_name`, so a rerun
continues the study and optuna-dashboard shows it. A study can also be shared by several workers
(`run_study_worker`, each with its own sampler seed, all asking and telling through one storage), its
outcome then read back from the storage (`shared_study_result`): quant_core.train.parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna

from quant_core.signs import maximised
from quant_core.spec import OptunaSettings, RunSpec
from quant_core.train.gp_sampler import GaussianProcessSampler
from quant_core.train.problem import NoFiniteCandidate, SearchAxis, SearchProblem

TOP_CANDIDATES = 16  # trials kept as candidates for the overfitting statistics
PROPOSAL_ATTR = "proposal"  # the user attribute holding a trial's parameters (user units, per token)


@dataclass
class SearchResult:
    best_params: dict[str, list[float]]  # user units, alphabetical token order
    best_value: float
    n_trials: int
    history: list[dict] = field(default_factory=list)  # per trial: number, value, train (validation), params
    stopped_early: bool = False
    seconds: float = 0.0
    study_name: str | None = None
    candidates: list[dict] = field(default_factory=list)  # the best trials' parameters, best first


def _sampler(settings: OptunaSettings, seed: int) -> optuna.samplers.BaseSampler:
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    if settings.sampler == "gp":
        return GaussianProcessSampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def _trial_values(row: np.ndarray, settings: OptunaSettings, has_val: bool) -> dict[str, float]:
    """The numbers one trial reports, from its [segments] scores."""
    train = float(row[0])
    out = {"train": train}
    if has_val:
        out["validation"] = float(row[-1])
    value = train
    if settings.overfitting_penalty > 0:
        val = out["validation"]
        value = val - settings.overfitting_penalty * max(0.0, train - val)
    if settings.multi_objective:
        subs = row[1 : 1 + settings.n_sub_periods]
        out.update(sub_mean=float(np.mean(subs)), sub_std=float(np.std(subs)), sub_worst=float(np.min(subs)))
        value = out["sub_mean"]
        if settings.overfitting_penalty > 0:
            value -= settings.overfitting_penalty * max(0.0, train - out["validation"])
    out["value"] = value
    return out


def score_label(metric: str, settings: OptunaSettings, has_val: bool) -> str:
    """What a trial's score is (see _trial_values), for progress lines: the score is not the metric over the whole
    training window, and a risk measure is maximised negated."""
    what = maximised(metric)
    score = f"{what} on the train part"
    if settings.multi_objective:
        score = f"mean {what} over {settings.n_sub_periods} sub-periods of the train part"
    if settings.overfitting_penalty > 0 and has_val:
        score = (score if settings.multi_objective else f"{what} on the validation part") + \
            f" - {settings.overfitting_penalty:g} x max(0, train - validation)"
    return score + ", maximised"


def _suggest(trial: optuna.Trial, a: SearchAxis) -> float:
    if a.values is not None:
        return float(trial.suggest_categorical(a.label, [float(v) for v in a.values]))
    if a.kind == "int":
        return float(trial.suggest_int(a.label, int(a.low), int(a.high), log=a.log_scale))
    return trial.suggest_float(a.label, a.low, a.high, log=a.log_scale)


def _open_study(settings: OptunaSettings, seed: int, storage: str | None, study_name: str | None,
                load: bool) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        directions=["maximize", "minimize"] if settings.multi_objective else ["maximize"],
        sampler=_sampler(settings, seed),
        storage=storage,
        study_name=study_name,
        load_if_exists=load,
    )


def _check(problem: SearchProblem, spec: RunSpec) -> None:
    settings = spec.optimisation_settings.optuna_settings
    if settings.overfitting_penalty > 0 and not problem.has_validation:
        raise ValueError("optuna_settings.overfitting_penalty needs a validation part: set "
                         "optimisation_settings.val_fraction > 0 (e.g. 0.2) or overfitting_penalty: 0")
    if settings.multi_objective and settings.sampler == "cmaes":
        raise ValueError("optuna_settings.multi_objective does not work with the cmaes sampler: use tpe, gp or random")


def _ask_score_tell(study: optuna.Study, problem: SearchProblem, spec: RunSpec, n_trials: int,
                    log: Callable[[str], None] | None) -> tuple[list[dict], bool]:
    """Ask up to n_trials trials in batches of n_jobs, score each batch in one call, tell the study; each trial
    keeps its numbers and proposal as user attributes (so a study shared by several workers can be reported from
    its storage). Returns the trials' history rows and whether early stopping or the timeout ended the loop."""
    settings = spec.optimisation_settings.optuna_settings
    has_val = problem.has_validation
    evaluator = problem.evaluator((spec.return_val,), settings.n_sub_periods if settings.multi_objective else 0)
    n_tokens = len(problem.tokens)
    axes = problem.axes("optuna")
    batch = max(1, min(settings.n_jobs, n_trials))
    base = problem.base
    scored = score_label(spec.return_val, settings, has_val)
    began = time.monotonic()
    history: list[dict] = []
    best, since_best, stopped = -math.inf, 0, False
    while len(history) < n_trials:
        trials, proposals = [], []
        for _ in range(min(batch, n_trials - len(history))):
            trial = study.ask()
            proposal: dict[str, list[float]] = {}
            for a in axes:
                v = _suggest(trial, a)
                if a.token is None:
                    proposal[a.name] = [v] * n_tokens
                else:
                    proposal.setdefault(a.name, [0.0] * n_tokens)[a.token] = v
            trials.append(trial)
            proposals.append(proposal)
        padded = proposals + [proposals[0]] * (batch - len(proposals))
        batch_params = {k: np.broadcast_to(v, (batch, *v.shape)).copy() for k, v in base.items()}
        for name in proposals[0]:
            batch_params[name] = np.array([p[name] for p in padded])
        scores = evaluator.scores(batch_params)[:, 0, :]
        for trial, proposal, row in zip(trials, proposals, scores[: len(proposals)], strict=True):
            numbers = _trial_values(row, settings, has_val)
            value = numbers["value"]
            for k, v in {**numbers, PROPOSAL_ATTR: proposal}.items():
                trial.set_user_attr(k, v)
            if math.isfinite(value):
                study.tell(trial, [value, numbers["sub_std"]] if settings.multi_objective else value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            history.append({"number": trial.number, **numbers, "params": proposal})
            margin = settings.early_stopping.min_improvement * abs(best) if math.isfinite(best) else 0.0
            if value > best + margin:
                best, since_best = value, 0
            else:
                since_best += 1
        if log:
            log(f"trials {len(history)}/{n_trials}: best {settings.sampler} score {best:.4f} ({scored})")
        if settings.early_stopping.enabled and since_best >= settings.early_stopping.patience:
            stopped = True
            break
        if settings.timeout and time.monotonic() - began > settings.timeout:
            stopped = True
            break
    return history, stopped


def _result(study: optuna.Study, problem: SearchProblem, spec: RunSpec, history: list[dict], stopped: bool,
            seconds: float) -> SearchResult:
    """The study's outcome from its history rows: the best finite trial (multi-objective: the Pareto-optimal one
    with the best worst sub-period) and the best TOP_CANDIDATES as candidates."""
    settings = spec.optimisation_settings.optuna_settings
    finite = [h for h in history if math.isfinite(h["value"])]
    if not finite:
        raise NoFiniteCandidate("every trial produced a non-finite objective; check the prices and search ranges"
                                + (" (or lower strategy_settings.min_trades)" if spec.kind == "strategy" else ""))
    if settings.multi_objective:
        front = {t.number for t in study.best_trials}
        top = max((h for h in finite if h["number"] in front), key=lambda h: h["sub_worst"], default=None)
        top = top or max(finite, key=lambda h: h["value"])
    else:
        top = max(finite, key=lambda h: h["value"])
    base = problem.base

    def full(proposal: dict) -> dict:
        return {**{k: v.tolist() for k, v in base.items()}, **proposal}

    ranked = sorted(finite, key=lambda h: -h["value"])[:TOP_CANDIDATES]
    return SearchResult(
        best_params=full(top["params"]),
        candidates=[full(h["params"]) for h in ranked],
        best_value=top["value"],
        n_trials=len(history),
        history=history,
        stopped_early=stopped,
        seconds=seconds,
        study_name=study.study_name,
    )


def run_study(
    problem: SearchProblem,
    spec: RunSpec,
    *,
    seed: int | None = None,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """The batched ask/score/tell loop over the problem's dimensions (module docstring)."""
    settings = spec.optimisation_settings.optuna_settings
    seed = spec.optimisation_settings.initial_random_key if seed is None else seed
    _check(problem, spec)
    storage = settings.storage.url if settings.storage.url else None
    study = _open_study(settings, seed, storage, settings.study_name, load=bool(storage and settings.study_name))
    began = time.monotonic()
    history, stopped = _ask_score_tell(study, problem, spec, n_trials or settings.n_trials, log)
    return _result(study, problem, spec, history, stopped, time.monotonic() - began)


def create_shared_study(spec: RunSpec, *, storage: str, study_name: str, seed: int) -> None:
    """Create (or find, on a retried step) the study that several workers share in `storage`."""
    _open_study(spec.optimisation_settings.optuna_settings, seed, storage, study_name, load=True)


def run_study_worker(problem: SearchProblem, spec: RunSpec, *, storage: str, study_name: str, seed: int,
                     n_trials: int, log: Callable[[str], None] | None = None) -> int:
    """One of several workers of a shared study: asks, scores and tells n_trials trials (fewer when its own early
    stopping or the timeout ends it) against the study in `storage`; its sampler sees every worker's trials.
    Returns how many trials it ran. Give each worker its own seed, or they propose the same first trials."""
    _check(problem, spec)
    study = _open_study(spec.optimisation_settings.optuna_settings, seed, storage, study_name, load=True)
    history, _ = _ask_score_tell(study, problem, spec, n_trials, log)
    return len(history)


def shared_study_result(problem: SearchProblem, spec: RunSpec, *, storage: str, study_name: str,
                        stopped: bool, seconds: float) -> SearchResult:
    """The outcome of a shared study, read back from its storage (every worker's trials, in trial order)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    history = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if PROPOSAL_ATTR not in t.user_attrs:  # asked by a worker that died before telling it
            continue
        numbers = {k: v for k, v in t.user_attrs.items() if k != PROPOSAL_ATTR}
        history.append({"number": t.number, **numbers, "params": t.user_attrs[PROPOSAL_ATTR]})
    return _result(study, problem, spec, history, stopped, seconds)
