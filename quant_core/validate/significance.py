"""Is an out-of-sample Sharpe ratio evidence of skill? Significance and overfitting statistics.

Sharpe ratios here are per period (not annualised) unless a name says otherwise: SR = mean(r) / std(r)
of n returns (std with ddof 1); gamma3 is the skewness and gamma4 the (non-excess) kurtosis of r.

- t-test:   t = SR sqrt(n); one-sided p = 1 - F_t(t; n - 1)  (H0: the mean return is 0)
- PSR (Bailey & Lopez de Prado 2012): the probability that the true SR exceeds SR*,
      PSR(SR*) = Phi( (SR - SR*) sqrt(n - 1) / sqrt(1 - gamma3 SR + (gamma4 - 1)/4 SR^2) )
- Expected maximum SR of N unskilled trials whose SR estimates vary with variance V:
      SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))),  g = 0.5772... (Euler-Mascheroni)
- DSR (Bailey & Lopez de Prado 2014): PSR(SR0), the PSR against the best SR luck alone would give
  after N trials; its p-value is 1 - DSR. Without the trials' own SRs, V is the sampling variance
  of the SR estimator, (1 - gamma3 SR + (gamma4 - 1)/4 SR^2) / (n - 1).
- PBO by CSCV (Bailey, Borwein, Lopez de Prado & Zhu 2015): the T x N matrix of N configurations'
  returns is cut into S row blocks; for every way of choosing S/2 blocks as in-sample (the rest out of
  sample), the in-sample best configuration's out-of-sample relative rank w = rank / (N + 1) gives the
  logit l = ln(w / (1 - w)); PBO = the fraction of splits with l <= 0 (the IS winner no better than the
  OOS median).
- Rademacher bound (Paleologo 2024, "Rademacher anti-serum"): for N strategies' standardised returns
  x_t,k = r_t,k / std_k, the empirical Rademacher complexity R = E_sigma[max_k (1/T) sum_t sigma_t x_t,k]
  (sigma_t = +-1 at random; Monte Carlo). With probability 1 - delta every strategy's true per-period
  SR >= its sample SR - 2 R - sqrt(2 ln(2/delta) / T); the bound is a Hoeffding-style one, exact for
  bounded returns and approximate otherwise.
- Multiple testing across m configurations: Bonferroni p_adj = min(1, m p); Benjamini-Hochberg
  q_(i) = min_{j >= i} min(1, m p_(j) / j) over the p-values sorted ascending.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class SharpeMoments:
    sharpe: float  # per period
    n: int
    skew: float
    kurtosis: float  # non-excess (normal = 3)


def sharpe_moments(returns: np.ndarray) -> SharpeMoments:
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 3:
        raise ValueError(f"significance needs at least 3 returns, got {r.size}")
    sd = r.std(ddof=1)
    sr = float(r.mean() / sd) if sd > 0 else 0.0
    skew = float(stats.skew(r)) if sd > 0 else 0.0
    kurt = float(stats.kurtosis(r, fisher=False)) if sd > 0 else 3.0
    return SharpeMoments(sr, int(r.size), skew, kurt)


def sharpe_t_test(returns: np.ndarray) -> tuple[float, float]:
    """(t, one-sided p) for H0: mean return 0."""
    m = sharpe_moments(returns)
    t = m.sharpe * math.sqrt(m.n)
    return t, float(stats.t.sf(t, m.n - 1))


def _sr_denominator(sr: float, skew: float, kurtosis: float) -> float:
    return math.sqrt(max(1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr, 1e-12))


def probabilistic_sharpe_ratio(sr: float, n: int, skew: float, kurtosis: float, benchmark: float = 0.0) -> float:
    return float(stats.norm.cdf((sr - benchmark) * math.sqrt(n - 1) / _sr_denominator(sr, skew, kurtosis)))


def expected_max_sharpe(n_trials: int, variance: float, mean: float = 0.0) -> float:
    """The expected best per-period SR among n_trials unskilled trials (0 for one trial)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1:
        return mean
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(mean + math.sqrt(variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


@dataclass(frozen=True)
class DeflatedSharpe:
    sharpe: float  # per period
    benchmark: float  # SR0
    dsr: float
    p_value: float
    n_trials: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def deflated_sharpe_ratio(returns: np.ndarray, n_trials: int, trial_sharpes: np.ndarray | None = None
                          ) -> DeflatedSharpe:
    """DSR of a return series chosen as the best of n_trials (module docstring); `trial_sharpes` are the
    per-period SRs of the trials, when known, for their variance."""
    m = sharpe_moments(returns)
    variance = None
    if trial_sharpes is not None and len(trial_sharpes) > 1:
        variance = float(np.var(np.asarray(trial_sharpes, dtype=np.float64), ddof=1))
    return deflated_sharpe_from_moments(m, n_trials, variance)


def deflated_sharpe_from_moments(m: SharpeMoments, n_trials: int, variance: float | None = None) -> DeflatedSharpe:
    if variance is None:
        variance = _sr_denominator(m.sharpe, m.skew, m.kurtosis) ** 2 / (m.n - 1)
    sr0 = expected_max_sharpe(n_trials, variance)
    dsr = probabilistic_sharpe_ratio(m.sharpe, m.n, m.skew, m.kurtosis, sr0)
    return DeflatedSharpe(m.sharpe, sr0, dsr, 1.0 - dsr, n_trials)


class _Blocks:
    """Per-block statistics of the returns [T, N] cut into row blocks: count, mean, centred sum of squares
    (two passes within the block), min and max. A split's SR per configuration combines its blocks' (Chan et
    al.'s pairwise variance update), so all C(16, 8) = 12,870 splits cost matrix products over 16 blocks instead
    of 12,870 passes over T rows; min/max make a split without spread exact (SR 0, as a row pass gives for a
    configuration that does not trade there) instead of a rounding residue divided by itself."""

    def __init__(self, m: np.ndarray, blocks: list[np.ndarray]) -> None:
        self.count = np.array([len(b) for b in blocks], dtype=np.float64)
        self.mean = np.stack([m[b].mean(axis=0) for b in blocks])
        self.m2 = np.stack([np.square(m[b] - m[b].mean(axis=0)).sum(axis=0) for b in blocks])
        self.low = np.stack([m[b].min(axis=0) for b in blocks])
        self.high = np.stack([m[b].max(axis=0) for b in blocks])

    def sharpes(self, weights: np.ndarray) -> np.ndarray:
        """Per-period SR (std ddof 1) of every configuration over each split's blocks (weights [C, S] of 0/1)."""
        k = weights @ self.count
        mean = (weights @ (self.count[:, None] * self.mean)) / k[:, None]
        spread = (self.mean[None] - mean[:, None, :]) ** 2 * (weights * self.count)[:, :, None]
        var = (weights @ self.m2 + spread.sum(axis=1)) / (k[:, None] - 1)
        chosen = weights[:, :, None] > 0
        flat = (np.where(chosen, self.high[None], -np.inf).max(axis=1)
                == np.where(chosen, self.low[None], np.inf).min(axis=1))
        sd = np.sqrt(var)
        return np.where(flat | (sd <= 0), 0.0, mean / np.where(sd > 0, sd, 1.0))


def pbo_cscv(returns: np.ndarray, n_blocks: int = 16) -> dict:
    """Probability of backtest overfitting of N configurations' returns [T, N] (module docstring)."""
    m = np.asarray(returns, dtype=np.float64)
    t, n = m.shape
    if n < 2:
        raise ValueError("PBO compares configurations: pass returns of at least 2 ([T, N], N >= 2)")
    s = n_blocks - n_blocks % 2
    if s < 2 or t < 2 * s:
        raise ValueError(f"PBO with {n_blocks} blocks needs an even block count >= 2 and >= 2 rows per block "
                         f"(T = {t}); lower n_blocks")
    stats_ = _Blocks(m, np.array_split(np.arange(t), s))
    chosen = np.array(list(itertools.combinations(range(s), s // 2)))
    step = max(1, 2**22 // (s * n))  # splits per batch: [batch, S, N] temporaries of ~32 MB
    logits = []
    for lo in range(0, len(chosen), step):
        part = chosen[lo:lo + step]
        in_sample = np.zeros((len(part), s))
        in_sample[np.arange(len(part))[:, None], part] = 1.0
        best = np.argmax(stats_.sharpes(in_sample), axis=1)
        oos = stats_.sharpes(1.0 - in_sample)
        value = oos[np.arange(len(part)), best][:, None]
        rank = (oos < value).sum(axis=1) + ((oos == value).sum(axis=1) + 1) / 2  # 1 = worst; ties averaged
        w = rank / (n + 1)
        logits.append(np.log(w / (1 - w)))
    logits = np.concatenate(logits)
    return {"pbo": float(np.mean(logits <= 0)), "n_splits": len(logits), "n_blocks": s, "n_configurations": n,
            "logit_mean": float(logits.mean())}


def rademacher_bound(returns: np.ndarray, delta: float = 0.05, n_draws: int = 2000, seed: int = 0) -> dict:
    """Per-period Sharpe lower bounds of N strategies [T, N] from their Rademacher complexity."""
    m = np.asarray(returns, dtype=np.float64)
    t, n = m.shape
    sd = m.std(axis=0, ddof=1)
    x = (m - 0.0) / np.where(sd > 0, sd, 1.0)
    rng = np.random.default_rng(seed)
    sigma = rng.choice([-1.0, 1.0], size=(n_draws, t))
    complexity = float(np.mean(np.max(sigma @ x / t, axis=1)))
    sample = x.mean(axis=0)
    slack = math.sqrt(2 * math.log(2 / delta) / t)
    lower = sample - 2 * complexity - slack
    return {"complexity": complexity, "slack": slack, "delta": delta, "sample_sharpe": sample.tolist(),
            "lower_bound": lower.tolist(), "best_lower_bound": float(lower.max())}


def bonferroni(p_values) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(1.0, p * p.size)


def benjamini_hochberg(p_values) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = q
    return out
