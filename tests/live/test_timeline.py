"""The live timeline's rules on hand-made inputs (the replay is pure: its data come through TimelineData)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS, LifecycleStage, StageThresholds
from quant_core.live.forward import ForwardDay
from quant_core.live.settings import LiveSettings
from quant_core.live.timeline import replay
from quant_core.store import StoredConfiguration

S = LifecycleStage
D0 = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday


def d(i: int) -> str:
    return (D0 + timedelta(days=i)).strftime("%Y-%m-%d")


def version(vid: int, arrives: int, oos_return: float = 0.1, revision: int = 1) -> StoredConfiguration:
    end = D0 + timedelta(days=arrives)
    return StoredConfiguration(
        universe_key="u", strategy="momentum", method="random", exchanges=["x"], symbols=["BTC/USD", "ETH/USD"],
        timeframe="1d", parameters={"k": {"BTC": float(vid)}},
        metrics={"walk_forward": {"oos_return": oos_return, "oos_benchmark_return": 0.05},
                 "significance": {"deflated_sharpe_p_value": 0.01, "pbo": 0.1}},
        lifecycle_stage=S.DISCOVERY, stage_reason="new", stage_evidence={}, sample_size=0,
        train_start=end - timedelta(days=60), train_end=end - timedelta(days=20), test_start=end - timedelta(days=20),
        test_end=end, data_hash="h", code_version="c", seed=0, run_spec={}, id=vid, created_at=end,
        updated_at=end, revision=revision)


class Data:
    """Returns per version and day; every day up to `last` has landed."""

    kind = "pool"

    def __init__(self, returns: dict[int, list[float]], last: int, versions, compare=None) -> None:
        self.returns, self.last, self.versions = returns, last, {v.id: v for v in versions}
        self.compared = compare or {}

    def complete(self, day: str) -> bool:
        return day <= d(self.last)

    def forward(self, v) -> dict[str, ForwardDay]:
        start = (v.available - D0).days
        out, value = {}, 100.0
        for i, r in enumerate(self.returns[v.id][: self.last - start + 1]):
            value *= math.exp(r)
            out[d(start + i)] = ForwardDay(log_return=r, value=value, benchmark_log_return=0.0)
        return out

    def holdout(self, v) -> np.ndarray:
        return np.tile([0.01, -0.005], 10)

    def market_returns(self, day: str, days: int) -> np.ndarray:
        return np.zeros((2, days))  # flat markets: the market breakers read nothing

    def compare(self, challenger, champion):
        diff = self.compared[(challenger.id, champion.id)]
        base = np.tile([0.01, -0.008, 0.004], 10)
        return base + diff + np.tile([0.0005, -0.0005, 0.0], 10), base


def calm(n: int, mean: float = 0.002) -> list[float]:
    return [mean + (0.004 if i % 2 else -0.003) for i in range(n)]


def run(versions, data, **settings):
    through = max([d(data.last)] + [v.available.strftime("%Y-%m-%d") for v in versions])  # as sync does
    return replay(versions, through, data, LiveSettings.model_validate(settings), StageThresholds(),
                  dict(DEFAULT_CIRCUIT_BREAKERS))


def kinds(t, vid=None):
    return [(e.day.strftime("%Y-%m-%d"), e.configuration_id, e.kind, e.to_stage.value if e.to_stage else None)
            for e in t.events if vid is None or e.configuration_id == vid]


def test_a_version_failing_the_gate_is_a_candidate_and_nothing_is_live():
    v = version(1, 0, oos_return=0.01)  # its benchmark made 5 %
    t = run([v], Data({1: calm(5)}, 4, [v]))
    assert kinds(t) == [(d(0), 1, "candidate", None)]
    assert "does not beat its benchmark" in t.events[0].reason and t.live is None
    assert [r.role for r in t.records] == ["candidate"] * 5  # still run forward, for the comparison


def test_first_passing_version_goes_live_and_is_run_every_day():
    v = version(1, 0)
    t = run([v], Data({1: calm(10)}, 9, [v]))
    assert kinds(t) == [(d(0), 1, "live", None)] and t.live == 1
    assert [(r.day.strftime("%Y-%m-%d"), r.role) for r in t.records] == [(d(i), "live") for i in range(10)]
    assert set(t.records[-1].readings) == set(DEFAULT_CIRCUIT_BREAKERS)


def test_a_better_challenger_replaces_and_retires_the_champion_a_worse_one_waits():
    a, b, c = version(1, 0), version(2, 7), version(3, 14)
    data = Data({1: calm(21), 2: calm(14), 3: calm(7)}, 20, [a, b, c], compare={(2, 1): 0.002, (3, 2): -0.002})
    t = run([a, b, c], data)
    assert kinds(t) == [(d(0), 1, "live", None), (d(7), 1, "stage", "RETIRED"), (d(7), 1, "off", None),
                        (d(7), 2, "live", None), (d(14), 3, "candidate", None)]
    assert "replaced by challenger 2" in t.events[1].reason and "one-sided paired t-test" in t.events[1].reason
    assert "against champion 2: does not beat the champion" in t.events[4].reason
    assert t.live == 2


def test_a_crash_day_trips_max_daily_loss_and_takes_it_off_that_day():
    v = version(1, 0)
    returns = calm(12)
    returns[6] = math.log(1 - 0.031)  # a 3.1 % loss
    t = run([v], Data({1: returns}, 11, [v]))
    assert kinds(t) == [(d(0), 1, "live", None), (d(6), 1, "trip", None), (d(6), 1, "stage", "RETIRED"),
                        (d(6), 1, "off", None)]
    assert t.events[1].evidence == {"reading": pytest.approx(0.031), "limit": 0.02}
    assert [r.day.strftime("%Y-%m-%d") for r in t.records][-1] == d(6)  # never run again
    assert t.records[-1].readings["max_daily_loss"]["tripped"] and t.live is None


def test_stages_follow_the_forward_sample_then_a_losing_streak_of_sharpe_retires():
    v = version(1, 0)
    returns = calm(30, mean=0.003) + [0.002, -0.010] * 20  # 30 good days, then 40 losing ones (no streaks)
    t = run([v], Data({1: returns}, 69, [v]))
    stages = [(day, stage) for day, _, kind, stage in kinds(t) if kind == "stage"]
    assert stages[0] == (d(29), "VALIDATION")  # 30 forward days
    first = next(e for e in t.events if e.kind == "stage")
    assert first.reason.startswith("forward (30 days): sample size 30 in [30, 100]")
    assert stages[1][1] == "RETIRED" and stages[1][0] > d(29)  # promoted, then forward Sharpe below 0
    assert t.live is None


def test_same_timeline_whatever_order_the_versions_come_in():
    vs = [version(1, 0), version(2, 7), version(3, 7, revision=2), version(4, 14, oos_return=0.0)]
    data = Data({1: calm(21), 2: calm(14), 3: calm(14), 4: calm(7)}, 20, vs,
                compare={(2, 1): 0.002, (3, 2): 0.001, (3, 1): 0.003, (4, 3): 0.1, (4, 2): 0.1})
    first = run(vs, data)
    for seed in range(5):
        shuffled = vs[:]
        random.Random(seed).shuffle(shuffled)
        again = run(shuffled, data)
        assert [e.key() for e in again.events] == [e.key() for e in first.events]
        assert again.records == first.records


def test_missing_candles_stop_the_timeline_but_a_days_arrivals_are_decided():
    a, b = version(1, 0), version(2, 5)
    data = Data({1: calm(10), 2: calm(5)}, 4, [a, b], compare={(2, 1): 0.002})
    t = run([a, b], data)
    assert t.pending == d(5) and t.last_day == d(4)
    assert (d(5), 2, "live", None) in kinds(t)  # decided at the start of day 5, before its candles land
