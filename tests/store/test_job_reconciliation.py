"""Training jobs a dead run left open are reconciled: `failed`, with the reason, idempotently, never a live one.

A retrain killed with SIGKILL cannot close its `training_jobs` row, and its Dagster run stays STARTED (the
default run launcher cannot tell the worker died). The row is reconciled at the next retrain of its universe
and by a sensor, from the evidence the store and Dagster hold: the run's status where Dagster says it ended,
the recorded process where it ran on this host, and the job's heartbeat otherwise. Each test runs on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa
from alembic import command
from dagster._core.instance.ref import InstanceRef

from quant_assets.defs.training.jobs import (
    RECONCILE_SENSOR,
    build_job_reconciliation,
    dagster_run_ended,
    training_job,
)
from quant_assets.resources import ConfigurationStoreResource
from quant_core.store import ConfigurationStore
from quant_core.store.database import alembic_config, make_engine
from quant_core.store.models import jobs_table

ROOT = Path(__file__).resolve().parents[2]
WEEK = "2024-01-01"
SPEC = SimpleNamespace(optimisation_settings=SimpleNamespace(method="random", initial_random_key=1),
                       return_val="daily_log_sharpe")
CONFIG = SimpleNamespace(budget=3, seed=1)

# A retrain's training step as the platform runs it (training_job around the search), in its own process and
# Dagster run on a persistent instance; it trains "forever" until the test kills it.
CHILD = r"""
import sys, time
from types import SimpleNamespace
import dagster as dg
from dagster._core.instance.ref import InstanceRef
from quant_assets.defs.training.jobs import training_job
from quant_assets.resources import ConfigurationStoreResource

url, home, universe = sys.argv[1:4]
spec = SimpleNamespace(optimisation_settings=SimpleNamespace(method="random", initial_random_key=1),
                       return_val="daily_log_sharpe")

@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["2024-01-01"]))
def trained_parameters(context, config_store: ConfigurationStoreResource):
    with training_job(config_store, context, universe, spec, SimpleNamespace(budget=3, seed=1), "sha256:x"):
        print("training", flush=True)
        time.sleep(600)

with dg.DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
    dg.materialize([trained_parameters], partition_key="2024-01-01", instance=instance,
                   resources={"config_store": ConfigurationStoreResource(database_url=url)})
"""


@pytest.fixture
def store(store_url: str) -> Iterator[ConfigurationStore]:
    s = ConfigurationStore(store_url)
    yield s
    s.dispose()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as inst:
        yield inst


def retrain_assets(universe: str, *, fail_after_training: bool = False) -> list:
    """trained_parameters (training_job around a quick "search") and, optionally, a configuration step that fails
    after training: the run ends FAILURE and leaves its job `trained` with no configuration."""
    parts = dg.StaticPartitionsDefinition([WEEK])

    @dg.asset(partitions_def=parts)
    def trained_parameters(context, config_store: ConfigurationStoreResource) -> int:
        with training_job(config_store, context, universe, SPEC, CONFIG, "sha256:x"):
            return 1

    @dg.asset(partitions_def=parts)
    def configuration(trained_parameters: int) -> None:
        raise RuntimeError("storing the configuration failed")

    return [trained_parameters, configuration] if fail_after_training else [trained_parameters]


def materialize(assets: list, url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=WEEK, instance=instance, raise_on_error=False,
                          resources={"config_store": ConfigurationStoreResource(database_url=url)})


def set_job(store: ConfigurationStore, job_id: int, **values) -> None:
    """What another machine's process left in the row (its host, pid, last heartbeat)."""
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id).values(**values))


def job(store: ConfigurationStore, job_id: int):
    return next(j for j in store.list_training_jobs() if j.id == job_id)


def start_killed_retrain(url: str, home: Path, universe: str) -> int:
    """Run the training step in a child process, SIGKILL it while it trains; returns the child's pid."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(home), universe], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until training has begun (or the child died)
        assert line.strip() == "training", f"the child did not start training (exit {child.poll()})"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(60)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return child.pid


# ------------------------------------------------------------------------------------------- tests


def test_killed_retrain_is_failed_at_the_next_retrain_of_its_universe(store: ConfigurationStore, store_url: str,
                                                                       instance: dg.DagsterInstance,
                                                                       tmp_path: Path) -> None:
    pid = start_killed_retrain(store_url, tmp_path / "dagster", "u")
    (killed,) = store.list_training_jobs(universe_key="u")
    # what kill -9 leaves: the row running forever, the Dagster run STARTED forever
    assert killed.status == "running" and killed.finished_at is None and killed.pid == pid
    assert instance.get_run_by_id(killed.orchestrator_run_id).status == dg.DagsterRunStatus.STARTED

    # a job of the same universe that is alive (this process, beating) while the next retrain runs
    live_id = store.record_job_start(universe_key="u", method="grid", settings={}, orchestrator_run_id=None)
    with store.heartbeat(live_id):
        result = materialize(retrain_assets("u"), store_url, instance)
        assert result.success
        jobs = {j.id: j for j in store.list_training_jobs(universe_key="u")}
        assert jobs[live_id].status == "running" and jobs[live_id].error is None  # never touched
        failed = jobs[killed.id]
        assert failed.status == "failed" and failed.finished_at is not None and failed.configuration_id is None
        assert failed.error.startswith("abandoned during training:")
        assert f"process {pid}" in failed.error and "is gone" in failed.error
        (new,) = [j for j in jobs.values() if j.id not in (killed.id, live_id)]
        assert new.status == "trained" and new.orchestrator_run_id == result.run_id

        # that run has ended as well, without a configuration step: its job will never be stored, and says why
        (closed,) = store.reconcile_jobs(universe_key="u", run_ended=dagster_run_ended(instance))
        assert closed.id == new.id and closed.status == "failed"
        assert closed.error == (f"abandoned after training: its Dagster run {result.run_id} ended with status "
                                "SUCCESS before it stored a configuration")
        # idempotent: reconciling again changes nothing, the live job included
        before = store.list_training_jobs(universe_key="u")
        assert store.reconcile_jobs(universe_key="u", run_ended=dagster_run_ended(instance)) == []
        assert store.list_training_jobs(universe_key="u") == before
        assert job(store, live_id).status == "running"
    store.record_job_end(live_id, status="failed", error="test over")


def test_sensor_fails_jobs_of_ended_runs_and_silent_hosts_only(store: ConfigurationStore, store_url: str,
                                                               instance: dg.DagsterInstance) -> None:
    # a run that failed after training: its job stays `trained` with no configuration
    ended = materialize(retrain_assets("a", fail_after_training=True), store_url, instance)
    assert not ended.success
    (trained,) = store.list_training_jobs(universe_key="a")
    assert trained.status == "trained" and trained.configuration_id is None
    # jobs on other machines: one silent for two hours, one that beat a minute ago
    now = datetime.now(UTC)
    silent = store.record_job_start(universe_key="b", method="optuna", settings={}, orchestrator_run_id=None)
    set_job(store, silent, host="worker-7", pid=4242, heartbeat_at=now - timedelta(hours=2))
    beating = store.record_job_start(universe_key="b", method="optuna", settings={}, orchestrator_run_id=None)
    set_job(store, beating, host="worker-8", pid=4242, heartbeat_at=now - timedelta(minutes=1))
    # closed jobs are facts, whatever their age
    closed = store.record_job_start(universe_key="b", method="optuna", settings={}, orchestrator_run_id=None)
    store.record_job_end(closed, status="failed", error="ValueError: no candles")
    set_job(store, closed, heartbeat_at=now - timedelta(days=3))

    (sensor,) = build_job_reconciliation().sensors
    assert sensor.name == RECONCILE_SENSOR
    resources = {"config_store": ConfigurationStoreResource(database_url=store_url)}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "2 abandoned" in result.skip_message

    a = job(store, trained.id)
    assert a.status == "failed" and a.error.startswith("abandoned after training:")
    assert f"Dagster run {ended.run_id}" in a.error and "FAILURE" in a.error
    b = job(store, silent)
    assert b.status == "failed" and "no heartbeat" in b.error and "worker-7" in b.error
    assert job(store, beating).status == "running" and job(store, beating).error is None
    assert job(store, closed).error == "ValueError: no candles"

    before = store.list_training_jobs()
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        again = sensor(ctx)
    assert isinstance(again, dg.SkipReason) and "no abandoned" in again.skip_message
    assert store.list_training_jobs() == before


def test_a_job_that_beats_while_being_judged_is_left_alone(store: ConfigurationStore) -> None:
    """The decision is taken on what was read; the write only lands if the row is still what was judged."""
    job_id = store.record_job_start(universe_key="u", method="optuna", settings={}, orchestrator_run_id="run-x")
    set_job(store, job_id, host="worker-7", heartbeat_at=datetime.now(UTC) - timedelta(hours=2))

    def beats_meanwhile(run_id: str) -> None:
        store.beat_job(job_id)  # its process writes between the read and the write
        return None

    assert store.reconcile_jobs(run_ended=beats_meanwhile) == []
    assert job(store, job_id).status == "running"
    assert [j.id for j in store.reconcile_jobs(stale_after=timedelta(0), now=datetime.now(UTC) + timedelta(hours=1))] \
        == [job_id]


def test_heartbeat_keeps_a_long_job_alive(store: ConfigurationStore) -> None:
    job_id = store.record_job_start(universe_key="u", method="optuna", settings={}, orchestrator_run_id=None)
    set_job(store, job_id, host="worker-7", heartbeat_at=datetime.now(UTC) - timedelta(hours=2))
    with store.heartbeat(job_id, every=0.05):
        deadline = time.time() + 30
        while job(store, job_id).heartbeat_at < datetime.now(UTC) - timedelta(minutes=1) and time.time() < deadline:
            time.sleep(0.05)
        assert store.reconcile_jobs() == []
    assert job(store, job_id).status == "running"


def test_jobs_open_before_migration_0003_are_reconciled_from_their_start(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
            for started in (datetime(2024, 1, 1), datetime.now(UTC).replace(tzinfo=None)):
                conn.execute(sa.text("INSERT INTO training_jobs (universe_key, method, settings, status, started_at) "
                                     "VALUES ('u', 'optuna', '{}', 'running', :t)"), {"t": started})
    finally:
        engine.dispose()
    s = ConfigurationStore(store_url)  # migrates to head
    try:
        old, recent = s.list_training_jobs()
        assert old.heartbeat_at is None and old.host is None and old.pid is None
        (failed,) = s.reconcile_jobs()
        assert failed.id == old.id and failed.status == "failed"
        assert "no heartbeat" in failed.error and "2024-01-01" in failed.error
        assert job(s, recent.id).status == "running"
    finally:
        s.dispose()
