"""Eight simulated weeks of the living lifecycle over three universes (a TFMM pool, a liquidity sweep and a
Donchian breakout), through a real Dagster instance whose schedules and sensors are evaluated at given times,
with candles landing day by day from seeded synthetic markets with a planted crash, and planted challengers.

Scenario A runs in order. Scenario B backfills the same period out of order (weeks shuffled, days shuffled) into
a fresh instance and store, with one retrain killed (SIGKILL) mid-run and resumed; its timeline must equal A's.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from scenario import (
    BETTER_WEEK,
    CRASH_DAY,
    LAST_DAY,
    UNIVERSES,
    Platform,
    day,
    days,
    run_in_order,
    store_of,
    ymd,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

def timeline(p: Platform) -> dict:
    """The store's state with database ids replaced by each version's natural key, for comparing two runs."""
    store = store_of(p)
    try:
        out = {}
        for u in UNIVERSES:
            versions = store.list_configurations(universe_key=u)
            key = {v.id: f"{ymd(v.available)}#r{v.revision}" for v in versions}

            def norm(text: str, key=key) -> str:
                return re.sub(r"(configuration|challenger|champion) (\d+)", lambda m: f"{m[1]} {key[int(m[2])]}", text)

            def norm_ev(ev: dict, key=key) -> dict:
                return {k: (key[v] if k in ("champion", "challenger") and isinstance(v, int) else v)
                        for k, v in ev.items()}

            out[u] = {
                "versions": sorted((key[v.id], json.dumps(v.parameters, sort_keys=True)) for v in versions),
                "events": [(ymd(e.day), key[e.configuration_id], e.kind, str(e.from_stage), str(e.to_stage),
                            norm(e.reason), json.dumps(norm_ev(e.evidence), sort_keys=True))
                           for e in store.timeline_events(u) if e.kind != "created"],
                "records": sorted((ymd(r.day), key[r.configuration_id], r.role, r.log_return, r.value, r.n_trades,
                                   json.dumps(r.readings, sort_keys=True)) for r in store.forward_records(u)),
            }
        return out
    finally:
        store.dispose()


@pytest.fixture(scope="module", autouse=True)
def _own_environment():
    """The platforms set QUANT_REGISTRY / QUANT_HOME / QUANT_DATABASE_URL for their runs: restore them after."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def scenario_a(tmp_path_factory, postgres_server):
    url = postgres_server.create_database()
    yield run_in_order(tmp_path_factory.mktemp("a"), url)
    postgres_server.drop_database(url)


def test_every_universe_retrained_exactly_once_a_week(scenario_a):
    mondays = [day(d) + timedelta(days=1) for d in days() if (day(d) + timedelta(days=1)).weekday() == 0]
    assert len(mondays) == 8
    for u in UNIVERSES:
        weeks = [part for job, part in scenario_a.runs if job == f"retrain_{u}"]
        assert weeks == [ymd(m - timedelta(days=7)) for m in mondays]


def expected_live_days(events) -> list[str]:
    """The days a live record must exist: each live period from its first day to the day it came off (a breaker
    or a retirement: that day's close was still live) or to the day before a challenger replaced it."""
    from quant_core.live.status import live_periods

    out = []
    for p in live_periods(events):
        if p.until is None:
            out += days(p.since, LAST_DAY)
        elif p.ended_because.startswith("replaced by"):
            out += [d for d in days(p.since, p.until) if d < p.until]
        else:
            out += days(p.since, p.until)
    return out


def test_forward_records_for_every_day_none_twice(scenario_a):
    store = store_of(scenario_a)
    try:
        for u in UNIVERSES:
            forward_runs = [part for job, part in scenario_a.runs if job == f"forward_{u}"]
            # each landed day once, from the forward partitions' first day (the pool's history backfill included)
            first = "2024-03-25" if u == "pool" else "2024-04-22"
            assert forward_runs == days(first), u
            records = store.forward_records(u)
            pairs = [(r.configuration_id, r.day) for r in records]
            assert len(pairs) == len(set(pairs))
            live_days = sorted(ymd(r.day) for r in records if r.role == "live")
            assert len(live_days) == len(set(live_days))  # one live configuration a day at most
            assert live_days == sorted(expected_live_days(store.timeline_events(u))), u
            assert live_days and live_days[0] >= "2024-04-22"  # not before the first version
    finally:
        store.dispose()


def test_planted_crash_trips_max_daily_loss_and_takes_the_pool_off_that_day(scenario_a):
    store = store_of(scenario_a)
    try:
        live = [r for r in store.forward_records("pool") if ymd(r.day) == CRASH_DAY and r.role == "live"]
        assert len(live) == 1, "a pool configuration is live on the crash day"
        record = live[0]
        reading = record.readings["max_daily_loss"]
        assert reading["tripped"] and reading["value"] > reading["limit"] == 0.02
        events = [e for e in store.timeline_events("pool") if ymd(e.day) == CRASH_DAY
                  and e.configuration_id == record.configuration_id]
        kinds = [e.kind for e in events]
        assert "trip" in kinds and "off" in kinds and str(events[kinds.index("stage")].to_stage) == "RETIRED"
        trip = events[kinds.index("trip")]
        assert "max_daily_loss" in trip.reason and trip.evidence["limit"] == 0.02
        # nothing trades that configuration after the crash day
        later = [r for r in store.forward_records("pool", configuration_id=record.configuration_id)
                 if ymd(r.day) > CRASH_DAY]
        assert later == []
    finally:
        store.dispose()


def test_worse_challenger_stays_a_candidate_better_one_goes_live(scenario_a):
    store = store_of(scenario_a)
    try:
        events = store.timeline_events("breakout")
        worse_id, worse_diff = scenario_a.planted["worse"]
        better_id, better_diff = scenario_a.planted["better"]
        mine = [e for e in events if e.configuration_id == worse_id and e.kind in ("live", "candidate")]
        assert [e.kind for e in mine] == ["candidate"] and "does not beat the champion" in mine[0].reason
        assert mine[0].evidence["mean_difference"] == pytest.approx(worse_diff, rel=1e-9, abs=1e-15)
        mine = [e for e in events if e.configuration_id == better_id and e.kind in ("live", "candidate")]
        assert [(e.kind, ymd(e.day)) for e in mine] == [("live", BETTER_WEEK)]
        assert mine[0].evidence["mean_difference"] == pytest.approx(better_diff, rel=1e-9, abs=1e-15)
        champion = mine[0].evidence["champion"]
        replaced = [e for e in events if e.configuration_id == champion and ymd(e.day) == BETTER_WEEK]
        assert {e.kind for e in replaced} >= {"off", "stage"}
        # the comparison is stored once per pair and read back, never recomputed differently
        assert store.comparison(better_id, champion) is not None
    finally:
        store.dispose()


def test_live_overview_and_configuration_metadata_say_what_is_live(scenario_a):
    import dagster as dg

    from quant_core.live.status import live_status

    p = scenario_a
    p.activate()
    result = p.defs.get_job_def("refresh_live_configurations").execute_in_process(instance=p.instance)
    (mat,) = result.asset_materializations_for_node("live_configurations")
    table = mat.metadata["live"].value
    store = store_of(p)
    try:
        for u in UNIVERSES:
            s = live_status(store, u)
            row = next(line for line in table.splitlines() if line.startswith(f"| {u} |"))
            assert f"| {s.configuration_id or 'none'} |" in row
    finally:
        store.dispose()
    assert mat.metadata["n_live"].value == sum(1 for u in UNIVERSES if "| none |" not in
                                               next(x for x in table.splitlines() if x.startswith(f"| {u} |")))
    assert "data:image/png;base64," in mat.metadata["forward_equity"].value
    # every configuration materialisation says whether its version went live, and why
    records = p.instance.fetch_materializations(dg.AssetKey(["breakout", "configuration"]), limit=20).records
    metas = [r.asset_materialization.metadata for r in records]
    assert len(metas) == 8 and all("live" in m and "live_reason" in m for m in metas)


def _killed_then_resumed(p: Platform, job: str, partition: str) -> None:
    """Run `job` for `partition` in a child process, SIGKILL it once its training has started, then run it again
    here (what a user does from the UI after a worker died)."""
    code = ("import sys; sys.path.insert(0, 'tests/live'); import dagster as dg; "
            "from quant_assets.definitions import build_definitions; "
            "from dagster._core.instance.ref import InstanceRef; "
            f"inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir({str(p.home / 'dagster')!r})); "
            f"build_definitions().get_job_def({job!r}).execute_in_process(instance=inst, partition_key={partition!r})")
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), cwd=Path(__file__).parents[2],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    universe = job.removeprefix("retrain_")
    store = store_of(p)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and child.poll() is None:
            if any(j.status == "running" for j in store.list_training_jobs(universe_key=universe)):
                break
            time.sleep(0.2)
        assert child.poll() is None, "the child finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        week_end = ymd(day(partition) + timedelta(days=7))
        assert not [v for v in store.list_configurations(universe_key=universe) if ymd(v.available) == week_end], \
            "a killed retrain wrote nothing"
    finally:
        store.dispose()
    p.execute(job, partition)


def test_out_of_order_backfill_with_a_killed_run_gives_the_same_timeline(scenario_a, tmp_path_factory,
                                                                          postgres_server):
    url = postgres_server.create_database()
    try:
        b = Platform(tmp_path_factory.mktemp("b"), url)
        b.activate()
        # the same candles, backfilled at once (one single-run backfill per market)
        b.backfill_candles("2024-01-01", LAST_DAY)
        weeks = [(f"retrain_{u}", ymd(day(m) - timedelta(days=7)))
                 for u in UNIVERSES for m in days() if day(m).weekday() == 0]
        random.Random(3).shuffle(weeks)
        killed = weeks[len(weeks) // 2]
        for job, part in weeks:
            if (job, part) == killed:
                _killed_then_resumed(b, job, part)
            else:
                b.execute(job, part)
        plant_challengers_like(scenario_a, b)
        forward = [(f"forward_{u}", d) for u in UNIVERSES for d in days("2024-04-22")]
        random.Random(4).shuffle(forward)
        for job, d in forward:
            b.execute(job, d)
        a_state, b_state = timeline(scenario_a), timeline(b)
        scenario_a.activate()
        for u in UNIVERSES:
            assert b_state[u]["versions"] == a_state[u]["versions"], u
            assert b_state[u]["events"] == a_state[u]["events"], u
            assert b_state[u]["records"] == a_state[u]["records"], u
    finally:
        postgres_server.drop_database(url)


def plant_challengers_like(a: Platform, b: Platform) -> None:
    """Scenario A's planted versions, written into B (same parameters; revision 2 of the same windows)."""
    import dataclasses

    from quant_core.store import NewConfiguration

    sa, sb = store_of(a), store_of(b)
    try:
        for planted_id, _ in a.planted.values():
            v = sa.get_configuration(planted_id)
            sb.add_version(NewConfiguration(**{f.name: getattr(v, f.name)
                                               for f in dataclasses.fields(NewConfiguration)}))
    finally:
        sa.dispose()
        sb.dispose()
