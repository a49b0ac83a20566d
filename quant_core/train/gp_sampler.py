"""A Gaussian-process (Bayesian optimisation) sampler for Optuna that needs only numpy.

Optuna's own GPSampler runs on PyTorch, a multi-gigabyte install for one sampler; this one plugs
into the same sampler API (`optuna.samplers.BaseSampler`), so studies, storage and the dashboard
work unchanged. After `n_startup_trials` random trials, each proposal:
1. maps the finished trials' parameters to [0, 1] (log scale where the distribution is log),
   standardises the values, and fits a zero-mean GP with a Matern-5/2 kernel; the length scale and
   noise are the pair on a small grid with the highest log marginal likelihood;
2. treats trials still running (asked in the same batch, not yet told) as observed at the worst
   value seen (the "constant liar"), so a batch of asks spreads out instead of repeating one point;
3. returns the candidate with the largest expected improvement over the best value, among random
   points and small perturbations of the best trials.
Maximisation and minimisation follow the study's direction; multi-objective studies use the
random fallback (they are meant for TPE).
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

_LENGTHS = (0.05, 0.1, 0.2, 0.4, 0.8)
_NOISES = (1e-6, 1e-3, 1e-2, 1e-1)
_CANDIDATES = 2048


def _matern52(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0)) / length
    s5 = math.sqrt(5.0) * d
    return (1.0 + s5 + 5.0 / 3.0 * d * d) * np.exp(-s5)


def _normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


class GaussianProcessSampler(optuna.samplers.BaseSampler):
    def __init__(self, seed: int | None = None, n_startup_trials: int = 10) -> None:
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._n_startup = n_startup_trials

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        if study._is_multi_objective():
            return {}
        space = optuna.search_space.intersection_search_space(study.get_trials(deepcopy=False))
        return {k: d for k, d in space.items() if isinstance(d, FloatDistribution | IntDistribution)}

    def _to_unit(self, d, v: float) -> float:
        lo, hi, x = (math.log(d.low), math.log(d.high), math.log(v)) if d.log else (d.low, d.high, v)
        return (x - lo) / (hi - lo) if hi > lo else 0.5

    def _from_unit(self, d, u: float) -> float:
        lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
        x = lo + float(np.clip(u, 0.0, 1.0)) * (hi - lo)
        x = math.exp(x) if d.log else x
        if isinstance(d, IntDistribution):
            return int(np.clip(round(x), d.low, d.high))
        return float(np.clip(x, d.low, d.high))

    def sample_relative(self, study, trial, search_space: dict[str, BaseDistribution]) -> dict:
        if not search_space:
            return {}
        names = sorted(search_space)
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(n in t.params for n in names)]
        if len(done) < max(self._n_startup, 2):
            return {}
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        x = np.array([[self._to_unit(search_space[n], t.params[n]) for n in names] for t in done])
        y = sign * np.array([t.value for t in done], dtype=float)
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number != trial.number and all(n in t.params for n in names)]
        if running:
            x = np.vstack([x, [[self._to_unit(search_space[n], t.params[n]) for n in names] for t in running]])
            y = np.concatenate([y, np.full(len(running), y.min())])
        mu, sd = y.mean(), y.std() or 1.0
        z = (y - mu) / sd
        length, noise = self._fit(x, z)
        k = _matern52(x, x, length) + noise * np.eye(len(x))
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        best = x[np.argsort(-z)[:5]]
        cand = np.vstack([
            self._rng.random((_CANDIDATES, len(names))),
            np.clip(best[self._rng.integers(0, len(best), _CANDIDATES)]
                    + self._rng.normal(0, 0.05, (_CANDIDATES, len(names))), 0, 1),
        ])
        ks = _matern52(cand, x, length)
        mean = ks @ alpha
        v = np.linalg.solve(chol, ks.T)
        std = np.sqrt(np.maximum(1.0 - (v * v).sum(0), 1e-12))
        gap = (mean - z.max()) / std
        ei = std * (gap * _normal_cdf(gap) + _normal_pdf(gap))
        pick = cand[int(np.argmax(ei))]
        return {n: self._from_unit(search_space[n], u) for n, u in zip(names, pick, strict=True)}

    @staticmethod
    def _fit(x: np.ndarray, z: np.ndarray) -> tuple[float, float]:
        """The (length, noise) on the grid with the highest log marginal likelihood."""
        best, best_ll = (0.2, 1e-3), -np.inf
        for length in _LENGTHS:
            base = _matern52(x, x, length)
            for noise in _NOISES:
                try:
                    chol = np.linalg.cholesky(base + noise * np.eye(len(x)))
                except np.linalg.LinAlgError:
                    continue
                a = np.linalg.solve(chol, z)
                ll = -0.5 * a @ a - np.log(np.diag(chol)).sum()
                if ll > best_ll:
                    best, best_ll = (length, noise), ll
        return best

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution) -> object:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)
