import math

import pytest

from quant_core.lifecycle import LifecycleStage as S
from quant_core.lifecycle import StageEvidence, StageThresholds, assign_stage

CASES = [
    # sample, oos sharpe, p, overfit, breaker, previous -> stage
    (0, 3.0, None, False, False, None, S.DISCOVERY),
    (29, 3.0, None, False, False, None, S.DISCOVERY),
    (30, -1.0, None, False, False, None, S.VALIDATION),
    (100, 3.0, None, False, False, None, S.VALIDATION),
    (101, 1.5, None, False, False, None, S.VALIDATION),  # Sharpe must exceed 1.5
    (101, 1.51, None, False, False, None, S.MATURE),
    (500, 2.0, 0.04, False, False, None, S.MATURE),
    (500, 2.0, 0.05, False, False, None, S.VALIDATION),  # p must be < 0.05
    (500, 2.0, 0.01, True, False, None, S.VALIDATION),
    (500, math.nan, None, False, False, None, S.VALIDATION),
    (500, -0.1, None, False, False, S.MATURE, S.RETIRED),
    (500, 2.0, None, False, True, S.VALIDATION, S.RETIRED),
    (10, -0.1, None, False, False, S.DISCOVERY, S.DISCOVERY),  # never promoted: nothing to retire
]


@pytest.mark.parametrize("n,sharpe,p,overfit,breaker,prev,expected", CASES)
def test_stage_table(n, sharpe, p, overfit, breaker, prev, expected):
    d = assign_stage(StageEvidence(n, sharpe, p, overfit, breaker, prev))
    assert d.stage == expected
    assert d.reason and d.evidence["sample_size"] == n


def test_probability_of_backtest_overfitting_blocks_maturity():
    assert assign_stage(StageEvidence(500, 2.0, 0.01, pbo=0.3)).stage == S.MATURE
    d = assign_stage(StageEvidence(500, 2.0, 0.01, pbo=0.7))
    assert d.stage == S.VALIDATION and "overfitting 0.70 > 0.5" in d.reason and d.evidence["pbo"] == 0.7
    assert assign_stage(StageEvidence(500, 2.0, 0.01, pbo=0.7), StageThresholds(mature_max_pbo=0.8)).stage == S.MATURE


def test_thresholds_are_configurable():
    th = StageThresholds(discovery_below=5, mature_above=10, mature_min_oos_sharpe=0.5)
    assert assign_stage(StageEvidence(11, 0.6), th).stage == S.MATURE
    assert assign_stage(StageEvidence(4, 0.6), th).stage == S.DISCOVERY


def test_negative_sample_rejected():
    with pytest.raises(ValueError, match="sample_size"):
        assign_stage(StageEvidence(-1, 1.0))
