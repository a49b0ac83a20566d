"""The demo home's pooled SQLite event log (quant_assets.instance_storage): same records as Dagster's own class,
readable by another instance on the same home, and a run's log followed live by a watcher in another process's
role (the UI), which waits for the shard file to change."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from quant_assets.demo import OLD_HOME_CONFIG, ensure_dagster_home
from quant_assets.instance_storage import PooledSqliteEventLogStorage

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context) -> None:
    context.log.info(f"{len(context.partition_keys)} days")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return ensure_dagster_home()


def test_a_new_demo_home_uses_the_pooled_event_log_and_records_every_partition(home):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is PooledSqliteEventLogStorage
        result = dg.materialize([daily], instance=instance,
                                tags={"dagster/asset_partition_range_start": "2024-01-01",
                                      "dagster/asset_partition_range_end": "2024-02-29"})
        assert result.success
        assert len(instance.get_materialized_partitions(daily.key)) == 60
    # the same files read through Dagster's own class: the layout and schema are Dagster's
    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    try:
        assert len(plain.get_materialized_partitions(daily.key)) == 60
        logs = plain.get_logs_for_run(result.run_id)
        assert any("60 days" in (e.user_message or "") for e in logs)
    finally:
        plain.dispose()


def test_a_watcher_on_another_storage_sees_each_event_as_it_is_written(home):
    writer = PooledSqliteEventLogStorage(str(home / "history" / "runs"))
    reader = PooledSqliteEventLogStorage(str(home / "history" / "runs"))
    seen: list[str] = []
    arrived = threading.Event()

    def on_event(entry, _cursor) -> None:
        seen.append(entry.user_message)
        arrived.set()

    run_id = "0123456789abcdef0123456789abcdef"
    writer.store_event(dg.EventLogEntry(error_info=None, level="INFO", user_message="first", run_id=run_id,
                                        timestamp=time.time()))
    reader.watch(run_id, None, on_event)
    try:
        for message in ("second", "third"):
            arrived.clear()
            writer.store_event(dg.EventLogEntry(error_info=None, level="INFO", user_message=message, run_id=run_id,
                                                timestamp=time.time()))
            assert arrived.wait(10), f"the watcher did not see {message!r} within 10 s"
        deadline = time.monotonic() + 10
        while seen[-1:] != ["third"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m for m in seen if m != "first"] == ["second", "third"]
    finally:
        reader.end_watch(run_id, on_event)
        reader.dispose()
        writer.dispose()


def test_a_home_from_an_earlier_version_is_brought_up_to_date_and_a_hand_edited_one_is_kept(tmp_path, monkeypatch):
    old, edited = tmp_path / "old", tmp_path / "edited"
    for h in (old, edited):
        h.mkdir()
    (old / "dagster.yaml").write_text(OLD_HOME_CONFIG)
    (edited / "dagster.yaml").write_text(OLD_HOME_CONFIG + "run_queue:\n  max_concurrent_runs: 2\n")
    for h in (old, edited):
        monkeypatch.setenv("DAGSTER_HOME", str(h))
        ensure_dagster_home()
    assert "PooledSqliteEventLogStorage" in (old / "dagster.yaml").read_text()
    assert (edited / "dagster.yaml").read_text() == OLD_HOME_CONFIG + "run_queue:\n  max_concurrent_runs: 2\n"
