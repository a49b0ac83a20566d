"""Champion vs challenger: does the challenger earn more per day than the live champion, beyond chance?

Test: one-sided paired t-test on the daily log-return differences d_i = challenger_i - champion_i over the same
days. H0: mean(d) <= margin; H1: mean(d) > margin.

    t = (mean(d) - margin) / (std(d, ddof=1) / sqrt(n)),   p = P(T_{n-1} > t)   (Student t, n - 1 dof)

The challenger is `better` when p < alpha and mean(d) > margin.

Why paired: both configurations face the same market each day, so the market's day-to-day noise, which
dominates either series, cancels in the difference; an unpaired test would need far more days to see the same
edge. Daily log returns add up over days, so mean(d) is the challenger's edge in log growth per day.

Edge cases: fewer than `min_days` paired days -> not better, p = 1 (too little evidence, t_stat NaN);
std(d) == 0 (all differences equal) -> p = 0 when mean(d) - margin > 0 (t = +inf), else p = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedResult:
    """The paired test's outcome; `reason()` says it in one line for people."""

    n: int
    mean_difference: float
    t_stat: float
    p_value: float
    margin: float
    better: bool
    alpha: float
    min_days: int = 20

    def reason(self) -> str:
        """One line: by how much the challenger beats the champion, or why it does not."""
        if self.n < self.min_days:
            return f"too few paired days to compare: {self.n} < {self.min_days} needed"
        edge = f"{self.mean_difference * 100:.3g}%/day"
        margin = f" (margin {self.margin * 100:.3g}%/day)" if self.margin else ""
        test = f"one-sided paired t-test p={self.p_value:.3g}"
        if self.better:
            return f"beats the champion by {edge}{margin} over {self.n} paired days ({test} < {self.alpha:g})"
        if self.mean_difference <= self.margin:
            return (f"does not beat the champion: mean difference {edge} is not above the margin "
                    f"{self.margin * 100:.3g}%/day over {self.n} paired days")
        return (f"does not beat the champion: mean difference {edge}{margin} over {self.n} paired days "
                f"is not significant ({test} >= {self.alpha:g})")


def _series(name: str, x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, dtype=float)
    if out.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of daily log returns, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: contains NaN or infinite values; daily log returns must be finite")
    return out


def paired_test(challenger: np.ndarray, champion: np.ndarray, *, margin: float = 0.0, alpha: float = 0.05,
                min_days: int = 20) -> PairedResult:
    """One-sided paired t-test of challenger over champion daily log returns (see the module docstring)."""
    a, b = _series("challenger", challenger), _series("champion", champion)
    if a.shape != b.shape:
        raise ValueError(f"challenger has {a.size} days but champion has {b.size}; pass the same paired days")
    if not math.isfinite(margin):
        raise ValueError(f"margin: {margin!r} must be finite")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: {alpha!r} must be in (0, 1)")
    if min_days < 2:
        raise ValueError(f"min_days: {min_days!r} must be >= 2 (a t-test needs 2 days)")
    d = a - b
    n = int(d.size)
    mean = float(np.mean(d)) if n else math.nan
    if n < min_days:
        return PairedResult(n, mean, math.nan, 1.0, margin, False, alpha, min_days)
    excess = mean - margin
    sd = float(np.std(d, ddof=1))
    if np.ptp(d) == 0 or sd == 0.0:  # every difference equal (or denormal spread): no noise to test against
        t, p = (math.inf, 0.0) if excess > 0 else (-math.inf if excess < 0 else 0.0, 1.0)
    else:
        t = excess / (sd / math.sqrt(n))
        p = float(stats.t.sf(t, n - 1))
    return PairedResult(n, mean, t, p, margin, p < alpha and mean > margin, alpha, min_days)
