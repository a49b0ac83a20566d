"""Significance statistics on worked examples (numbers derived by hand in the comments)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from quant_core.validate.significance import (
    SharpeMoments,
    benjamini_hochberg,
    bonferroni,
    deflated_sharpe_from_moments,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    pbo_cscv,
    probabilistic_sharpe_ratio,
    rademacher_bound,
    sharpe_t_test,
)


def test_sharpe_t_test_worked_example():
    # mean 0.01, squared deviations sum 1e-3 -> std (ddof 1) sqrt(2.5e-4); SR = 0.6325, t = SR sqrt(5) = sqrt(2)
    t, p = sharpe_t_test(np.array([0.01, 0.02, -0.01, 0.03, 0.0]))
    assert t == pytest.approx(math.sqrt(2))
    # Student t, 4 dof: F(t) = 1/2 + 3/8 u (1 - t^2 / (12 (1 + t^2/4))), u = t / sqrt(1 + t^2/4)
    u = math.sqrt(2) / math.sqrt(1.5)
    assert p == pytest.approx(1 - (0.5 + 0.375 * u * (1 - 2 / 18)), rel=1e-9)


def test_probabilistic_sharpe_ratio_worked_example():
    # SR 0.1, n 101, normal: Phi(0.1 * 10 / sqrt(1 + 2/4 * 0.01)) = Phi(0.997509) = 0.84074
    assert probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0) == pytest.approx(0.84074, abs=2e-5)
    assert probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0, benchmark=0.1) == pytest.approx(0.5)


def test_deflated_sharpe_ratio_reproduces_bailey_lopez_de_prado_2014():
    # the paper's example: annualised SR 2.5 over 1250 daily returns (250 a year), skew -3, kurtosis 10,
    # 100 trials whose annualised SRs have variance 0.5: SR0 = 0.1132 per day and DSR = 0.90
    m = SharpeMoments(sharpe=2.5 / math.sqrt(250), n=1250, skew=-3.0, kurtosis=10.0)
    d = deflated_sharpe_from_moments(m, n_trials=100, variance=0.5 / 250)
    assert d.benchmark == pytest.approx(0.1132, abs=5e-4)
    assert d.dsr == pytest.approx(0.90, abs=3e-3) and d.p_value == pytest.approx(1 - d.dsr)
    assert expected_max_sharpe(1, 0.5) == 0.0  # one honest trial: no deflation
    # more trials, higher bar
    r = np.random.default_rng(0).normal(0.05, 1.0, 500)
    assert deflated_sharpe_ratio(r, 1000).dsr < deflated_sharpe_ratio(r, 10).dsr < deflated_sharpe_ratio(r, 1).dsr


def test_pbo_worked_examples():
    # two blocks; A leads in block 0 and trails in block 1, C the reverse: each split's IS winner ranks last
    # of 3 out of sample -> w = 1/4, logit ln(1/3) < 0 in both splits -> PBO = 1
    a = [0.03, 0.01, -0.02, -0.01]
    b = [0.01, 0.0, 0.0, 0.01]
    c = [-0.01, -0.02, 0.02, 0.03]
    r = pbo_cscv(np.array([a, b, c]).T, n_blocks=2)
    assert r["pbo"] == 1.0 and r["n_splits"] == 2 and r["logit_mean"] == pytest.approx(math.log(1 / 3))
    # a configuration that beats the other by a constant in every row wins everywhere: w = 2/3, PBO = 0
    x = np.random.default_rng(1).normal(0, 0.01, 64)
    r = pbo_cscv(np.stack([x + 0.002, x], axis=1), n_blocks=8)
    assert r["pbo"] == 0.0 and r["n_splits"] == math.comb(8, 4) and r["logit_mean"] == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="at least 2"):
        pbo_cscv(np.ones((10, 1)))


def _pbo_by_row_passes(m: np.ndarray, s: int) -> tuple[float, float]:
    """The definition, one split at a time over the rows (the implementation before the block sums)."""
    from scipy import stats

    def sharpe(block):
        sd = block.std(axis=0, ddof=1)
        return np.where(sd > 0, block.mean(axis=0) / np.where(sd > 0, sd, 1.0), 0.0)

    blocks = np.array_split(np.arange(len(m)), s)
    logits = []
    for chosen in itertools.combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[i] for i in chosen])
        oos_rows = np.concatenate([blocks[i] for i in range(s) if i not in chosen])
        best = int(np.argmax(sharpe(m[is_rows])))
        w = stats.rankdata(sharpe(m[oos_rows]))[best] / (m.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
    return float(np.mean(np.asarray(logits) <= 0)), float(np.mean(logits))


@pytest.mark.parametrize("seed", range(6))
def test_pbo_from_block_sums_equals_the_split_by_split_definition(seed):
    rng = np.random.default_rng(seed)
    t, n = int(rng.integers(40, 400)), int(rng.integers(2, 40))
    m = rng.normal(0.0005, 0.01, (t, n)) + rng.normal(0, 0.0005, n)  # skill differs a little per column
    if seed % 2:
        m[:, 0] = m[:, 1]  # a duplicated configuration: exact ties
        m[:, -1] = 0.0  # a flat one: no spread, SR 0
    s = 16 if seed < 3 else 8
    r = pbo_cscv(m, n_blocks=s)
    assert (r["pbo"], r["logit_mean"]) == pytest.approx(_pbo_by_row_passes(m, s), rel=0, abs=1e-12)


def test_rademacher_complexity_worked_example():
    # r = [1, -1, 1, -1] and its mirror: x = +-sqrt(3)/2 after dividing by std (ddof 1) sqrt(4/3);
    # max(s.x, -s.x)/T = |sum of 4 random signs| sqrt(3)/2 / 4, and E|sum| = (8*2 + 2*4)/16 = 1.5
    r = np.array([1.0, -1.0, 1.0, -1.0])
    out = rademacher_bound(np.stack([r, -r], axis=1), n_draws=20000, seed=3)
    assert out["complexity"] == pytest.approx(1.5 * math.sqrt(3) / 2 / 4, abs=0.01)
    assert out["slack"] == pytest.approx(math.sqrt(2 * math.log(40) / 4))
    assert out["lower_bound"][0] == pytest.approx(0 - 2 * out["complexity"] - out["slack"])


def test_multiple_testing_corrections_worked_example():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x m/rank: 0.02, 0.02, 0.04, 0.04 -> running min from the top
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(benjamini_hochberg([0.5, 0.9]), [0.9, 0.9])
