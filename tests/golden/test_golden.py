"""Behaviour stays the same: seeded retrains equal what was recorded (1e-12): before the contract refactor in that
refactor's format, or since, for an intended change, in today's (golden.runs)."""

from __future__ import annotations

import json
import math

import pytest

from golden.runs import RUNS, golden_run, path
from quant_core.signs import NATURAL, natural_signs

# keys renamed on purpose by the contract refactor (numbers unchanged): old -> new; None = no longer stored
RENAMED = {"oos_hodl_sharpe": "oos_benchmark_sharpe"}
DROPPED_WHEN_NONE = {"oos_uniform_sharpe"}  # strategies stored NaN (None) for the pools' uniform benchmark
ADDED = {"benchmark", "signs"}  # metrics.benchmark: which benchmark oos_benchmark_sharpe is; signs: "natural"
# issue 18 item 14: stored metrics carry natural signs; the recordings hold risk measures negated (numbers unchanged)
NATURAL_PARTS = ("in_sample", "holdout")
# issue 16: the live gate reads the walk-forward's total returns; stages come from forward data, so a new version
# is written DISCOVERY (its walk-forward evidence is kept in the metrics, unchanged)
ADDED_WALK_FORWARD = {"oos_return", "oos_benchmark_return"}
# issue 17: walk-forward efficiency (Pardo), from the recorded folds' in- and out-of-sample Sharpe
ADDED_EFFICIENCY = {"walk_forward_efficiency", "worst_walk_forward_efficiency"}
RESTAGED = ("stage", "stage_reason", "stage_evidence")


def _recorded(obj):
    """The recorded result under today's key names."""
    if isinstance(obj, dict):
        return {RENAMED.get(k, k): _recorded(v) for k, v in obj.items() if not (k in DROPPED_WHEN_NONE and v is None)}
    return obj


def _compare(got, want, where: str = "") -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"]
        return [m for k in want for m in _compare(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: {got!r} != {want!r}"]
        return [m for i, (g, w) in enumerate(zip(got, want, strict=True)) for m in _compare(g, w, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, int | float):
        ok = math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12)
        return [] if ok else [f"{where}: {got!r} != {want!r}"]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_golden_run(name):
    got = json.loads(json.dumps(golden_run(name)))
    want = json.loads(path(name).read_text())
    if want["metrics"].get("signs") == NATURAL:  # recorded in today's format (re-recorded since): as it is
        diffs = _compare(got, want)
        assert not diffs, f"{len(diffs)} differences, first: " + "; ".join(diffs[:5])
        return
    want = _recorded(want)
    want["metrics"].update({p: natural_signs(want["metrics"][p]) for p in NATURAL_PARTS})
    for key in ADDED:
        got["metrics"].pop(key)
    added = {k: got["metrics"]["walk_forward"].pop(k) for k in ADDED_WALK_FORWARD}
    wfe = {k: got["metrics"]["walk_forward"].pop(k) for k in ADDED_EFFICIENCY}
    if None not in wfe.values():  # NaN (stored as None) where a fold's in-sample Sharpe is <= 0
        assert wfe["worst_walk_forward_efficiency"] <= wfe["walk_forward_efficiency"]
    equity = want["oos_equity"]
    assert added["oos_return"] == equity[-1] - 1  # from the recorded equity (growth of 1)
    restaged = {k: (got.pop(k), want.pop(k)) for k in RESTAGED}
    assert restaged["stage"][0] == "DISCOVERY"
    assert restaged["stage_reason"][0] == "no forward data yet: sample size 0 < 30"
    assert restaged["stage_evidence"][0]["p_value"] == restaged["stage_evidence"][1]["p_value"]
    diffs = _compare(got, want)
    assert not diffs, f"{len(diffs)} differences, first: " + "; ".join(diffs[:5])
