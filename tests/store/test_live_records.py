"""The store's live-timeline tables on SQLite and PostgreSQL: one forward record per (version, day), derived events
rewritten only from the first difference, comparisons stored once, and migration 0002 over 0001 data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from store.test_store import count_rows, later_window, make_config

from quant_core.lifecycle import LifecycleStage as S
from quant_core.store import Comparison, ConfigurationStore, ForwardRecord, TimelineEvent
from quant_core.store.database import alembic_config, make_engine

D = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[ConfigurationStore]:
    s = ConfigurationStore(store_url)
    yield s
    s.dispose()


def record(cid: int, day: int, r: float = 0.01, role: str = "live") -> ForwardRecord:
    return ForwardRecord(configuration_id=cid, universe_key="btc_eth_momentum", day=D + timedelta(days=day), role=role,
                         log_return=r, value=100.0 + day, benchmark_log_return=0.0, n_trades=1,
                         trades=[{"return": r}], readings={"max_daily_loss": {"value": 0.0, "limit": 0.02}})


def event(cid: int, day: int, kind: str, reason: str, to_stage: S | None = None) -> TimelineEvent:
    return TimelineEvent(configuration_id=cid, kind=kind, day=D + timedelta(days=day), reason=reason,
                         from_stage=S.DISCOVERY if to_stage else None, to_stage=to_stage)


def derived_ids(store: ConfigurationStore) -> list[tuple[int, str, str]]:
    return [(e.id, e.kind, e.reason) for e in store.timeline_events("btc_eth_momentum") if e.kind != "created"]


def test_a_day_rewritten_replaces_its_record_never_adds_one(store: ConfigurationStore) -> None:
    v = store.add_version(make_config())
    w = store.add_version(later_window())
    store.write_timeline("btc_eth_momentum", [record(v.id, 0), record(v.id, 1), record(w.id, 1, role="candidate")], [])
    store.write_timeline("btc_eth_momentum", [record(v.id, 0), record(v.id, 1, r=0.02), record(v.id, 2)], [])
    got = store.forward_records("btc_eth_momentum")
    assert [(r.configuration_id, r.day, r.log_return) for r in got] == [
        (v.id, D, 0.01), (v.id, D + timedelta(days=1), 0.02), (v.id, D + timedelta(days=2), 0.01)]
    assert got[0].trades == [{"return": 0.01}] and got[0].readings["max_daily_loss"]["limit"] == 0.02
    # w's record is gone: the timeline no longer runs it that day (the records are what the last replay derived)
    assert count_rows(store, "forward_records") == 3


def test_derived_events_append_in_order_and_are_replaced_from_the_first_difference(store: ConfigurationStore) -> None:
    a = store.add_version(make_config())
    b = store.add_version(later_window())
    first = [event(a.id, 0, "live", "gate"), event(a.id, 3, "pause", "unusual market")]
    store.write_timeline("btc_eth_momentum", [], first)
    kept = derived_ids(store)
    store.write_timeline("btc_eth_momentum", [], first + [event(b.id, 30, "candidate", "worse")])  # a day later
    assert derived_ids(store)[:2] == kept  # appended, nothing rewritten
    # a backfilled version changes the story from day 3 on: the first event stays, the rest is replaced
    changed = [first[0], event(a.id, 3, "stage", "retired", S.RETIRED), event(a.id, 3, "off", "retired")]
    store.write_timeline("btc_eth_momentum", [], changed)
    now = derived_ids(store)
    assert now[0] == kept[0] and [k for _, k, _ in now] == ["live", "stage", "off"]
    assert [(e.kind, e.to_stage) for e in store.timeline_events("btc_eth_momentum")] == [
        ("created", S.DISCOVERY), ("created", S.DISCOVERY), ("live", None), ("stage", S.RETIRED), ("off", None)]
    assert store.timeline_events("other") == []


def test_timeline_write_is_all_or_nothing(store: ConfigurationStore) -> None:
    v = store.add_version(make_config())
    store.write_timeline("btc_eth_momentum", [record(v.id, 0)], [event(v.id, 0, "live", "gate")])
    with pytest.raises(ValueError, match="trades"):  # refused before the transaction starts
        store.write_timeline("btc_eth_momentum", [record(v.id, 1, r=float("nan"))], [])
    # a failure inside the transaction (the events' CHECK refuses an unknown kind) leaves the records unwritten
    with pytest.raises(sa.exc.IntegrityError):
        store.write_timeline("btc_eth_momentum", [record(v.id, 1)], [event(v.id, 0, "live", "gate"),
                                                                      event(v.id, 1, "bogus", "x")])
    assert len(store.forward_records("btc_eth_momentum")) == 1 and len(derived_ids(store)) == 1


def test_comparisons_are_stored_once(store: ConfigurationStore) -> None:
    a = store.add_version(make_config())
    b = store.add_version(later_window())
    c = Comparison(b.id, a.id, D, D + timedelta(days=30), [0.01, 0.02], [0.0, 0.01])
    store.write_comparison(c)
    store.write_comparison(Comparison(b.id, a.id, D, D + timedelta(days=30), [9.0], [9.0]))
    assert store.comparison(b.id, a.id) == c and store.comparison(a.id, b.id) is None


def test_migration_0002_keeps_0001_rows_and_their_events(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            now = datetime(2024, 1, 1, tzinfo=UTC).replace(tzinfo=None)
            conn.execute(sa.text(
                "INSERT INTO trained_configurations (universe_key, strategy, method, exchanges, symbols, timeframe, "
                "parameters, metrics, lifecycle_stage, stage_reason, stage_evidence, sample_size, train_start, "
                "train_end, test_start, test_end, data_hash, code_version, seed, run_spec, circuit_breakers, "
                "created_at, updated_at) VALUES ('u', 'momentum', 'optuna', '[]', '[]', '1d', '{}', '{}', "
                "'VALIDATION', 'r', '{}', 40, :t, :t, :t, :t, 'h', 'c', 1, '{}', '{}', :t, :t)"), {"t": now})
            conn.execute(sa.text("INSERT INTO lifecycle_events (configuration_id, from_stage, to_stage, reason, "
                                 "evidence, at) VALUES (1, NULL, 'VALIDATION', 'r', '{}', :t)"), {"t": now})
    finally:
        engine.dispose()
    s = ConfigurationStore(store_url)  # migrates to head
    try:
        (v,) = s.list_configurations()
        assert v.revision == 1 and v.lifecycle_stage is S.VALIDATION
        (e,) = s.timeline_events("u")
        assert (e.kind, e.universe_key, e.to_stage) == ("created", "u", S.VALIDATION)
        assert s.add_version(make_config(universe_key="u")).revision == 1  # another window: a new version
    finally:
        s.dispose()
