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

import numpy as np
import polars as pl
import pytest
from scenario import CRASH_DAY, Platform, day, ymd

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FIRST_DAY, LAST_DAY = "2024-04-21", "2024-06-16"  # 57 days: Mondays 04-22 .. 06-10 retrain the week before
UNIVERSES = ("pool", "sweep", "breakout")
WORSE_WEEK, BETTER_WEEK = "2024-05-06", "2024-05-20"  # planted breakout challengers arrive on these Mondays


def days(first: str = FIRST_DAY, last: str = LAST_DAY) -> list[str]:
    out, d = [], day(first)
    while ymd(d) <= last:
        out.append(ymd(d))
        d += timedelta(days=1)
    return out


def _store(p: Platform):
    from quant_core.store import ConfigurationStore

    return ConfigurationStore(p.store_url)


def _holdout_returns(p: Platform, version, params: dict) -> np.ndarray:
    """Daily log returns of `params` on `version`'s hold-out, computed here from the candle files (not through
    the platform's forward code)."""
    from quant_core.data.market_candles import MarketCandles
    from quant_core.runspec import load_run_spec
    from quant_core.tunables import tunable_for

    files = sorted((p.home / "ohlcv" / "market_data" / "ohlcv").glob("*/synthetic.BTC-USDT.4h.parquet"))
    data = MarketCandles(pl.read_parquet(files).sort("timestamp"), "4h")
    t = tunable_for(load_run_spec(version.run_spec))
    ev = t.evaluate(data, [t.params_from_stored(params)], version.test_start, version.test_end, benchmarks=False)
    return ev.log_returns[0]


def plant_challengers(p: Platform, monday: str, want: str) -> tuple[int, float]:
    """Add a second revision of the breakout's version of the week ending `monday` with parameters chosen to beat
    (want='better') or lose to (want='worse') the live champion on the hold-out; returns (its id, mean diff)."""
    import dataclasses

    from quant_core.live.status import live_status
    from quant_core.runspec import load_run_spec
    from quant_core.store import NewConfiguration
    from quant_core.tunables import tunable_for

    store = _store(p)
    try:
        base = next(v for v in store.list_configurations(universe_key="breakout") if ymd(v.available) == monday)
        champion = store.get_configuration(live_status(store, "breakout").configuration_id)
        t = tunable_for(load_run_spec(base.run_spec))
        rng = np.random.default_rng(7)
        champ_r = _holdout_returns(p, base, champion.parameters)
        scored = []
        for _ in range(64):
            params = {q.name: float(rng.choice(q.choices) if q.kind == "choice" else
                                    rng.integers(q.low, q.high + 1) if q.kind == "int" else rng.uniform(q.low, q.high))
                      for q in t.params()}
            try:
                diff = float(np.mean(_holdout_returns(p, base, params) - champ_r))
            except ValueError:  # outside the strategy's constraints (e.g. exit_period >= entry_period)
                continue
            scored.append((diff, params))
        diff, params = max(scored, key=lambda x: x[0]) if want == "better" else min(scored, key=lambda x: x[0])
        assert (diff > 0) if want == "better" else (diff < 0), f"no {want} parameter set among 64: {diff}"
        new = NewConfiguration(**{f.name: getattr(base, f.name) for f in dataclasses.fields(NewConfiguration)})
        planted = store.add_version(dataclasses.replace(new, parameters=params))
        assert planted.revision == 2
        return planted.id, diff
    finally:
        store.dispose()


def timeline(p: Platform) -> dict:
    """The store's state with database ids replaced by each version's natural key, for comparing two runs."""
    store = _store(p)
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


@pytest.fixture(scope="module")
def scenario_a(tmp_path_factory, postgres_server):
    url = postgres_server.create_database()
    p = Platform(tmp_path_factory.mktemp("a"), url)
    p.backfill_candles("2024-01-01", ymd(day(FIRST_DAY) - timedelta(days=1)))
    planted = {}
    for d in days():
        p.live_day(d)
        monday = ymd(day(d) + timedelta(days=1))
        if monday == WORSE_WEEK:
            planted["worse"] = plant_challengers(p, monday, "worse")
        if monday == BETTER_WEEK:
            planted["better"] = plant_challengers(p, monday, "better")
    p.planted = planted
    yield p
    postgres_server.drop_database(url)


def test_every_universe_retrained_exactly_once_a_week(scenario_a):
    mondays = [d for d in days() if day(d).weekday() == 0]
    assert len(mondays) == 8
    for u in UNIVERSES:
        weeks = [part for job, part in scenario_a.runs if job == f"retrain_{u}"]
        assert weeks == [f"{u}|{ymd(day(m) - timedelta(days=7))}" for m in mondays]


def test_forward_records_for_every_day_none_twice(scenario_a):
    store = _store(scenario_a)
    try:
        for u in UNIVERSES:
            forward_runs = [part for job, part in scenario_a.runs if job == f"forward_{u}"]
            first = "2024-04-21" if u == "pool" else "2024-04-22"  # the forward partitions' first day
            assert forward_runs == days(first), u  # each landed day once
            records = store.forward_records(u)
            pairs = [(r.configuration_id, r.day) for r in records]
            assert len(pairs) == len(set(pairs))
            live_days = [ymd(r.day) for r in records if r.role == "live"]
            assert len(live_days) == len(set(live_days))  # at most one live configuration a day
            events = store.timeline_events(u)
            on = {ymd(e.day) for e in events if e.kind == "live"}
            assert on and min(on) == "2024-04-22"
            # every day from the first live day on has a record of the live configuration, unless nothing was live
            from quant_core.live.status import live_periods
            for period in live_periods(events):
                last = period.until or LAST_DAY
                covered = [d for d in live_days if period.since <= d < last or (period.until is None and d == last)]
                assert covered == [d for d in days(period.since, last) if d < last or period.until is None]
    finally:
        store.dispose()


def test_planted_crash_trips_max_daily_loss_and_takes_the_pool_off_that_day(scenario_a):
    store = _store(scenario_a)
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
    store = _store(scenario_a)
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
    store = _store(p)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and child.poll() is None:
            if any(j.status == "running" for j in store.list_training_jobs(universe_key=partition.split("|")[0])):
                break
            time.sleep(0.2)
        assert child.poll() is None, "the child finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        universe, week = partition.split("|")
        week_end = ymd(day(week) + timedelta(days=7))
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
        # the same candles, backfilled at once (one single-run backfill per market)
        b.backfill_candles("2024-01-01", LAST_DAY)
        weeks = [(f"retrain_{u}", f"{u}|{ymd(day(m) - timedelta(days=7))}")
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

    sa, sb = _store(a), _store(b)
    try:
        for planted_id, _ in a.planted.values():
            v = sa.get_configuration(planted_id)
            sb.add_version(NewConfiguration(**{f.name: getattr(v, f.name)
                                               for f in dataclasses.fields(NewConfiguration)}))
    finally:
        sa.dispose()
        sb.dispose()


def test_live_overview_and_configuration_metadata_say_what_is_live(scenario_a):
    import dagster as dg

    from quant_core.live.status import live_status

    p = scenario_a
    result = p.defs.get_job_def("refresh_live_configurations").execute_in_process(instance=p.instance)
    (mat,) = result.asset_materializations_for_node("live_configurations")
    table = mat.metadata["live"].value
    store = _store(p)
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
