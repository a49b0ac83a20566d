"""Scale-out on Celery, for real: a private redis-server, two `dagster-celery worker` processes and a
PostgreSQL-backed instance (tests/celery_cluster.py); a retrain launched with QUANT_EXECUTOR=celery runs its
steps on the workers (which worker ran which step is read from the run's event log) and stores one
configuration. A worker SIGKILLed mid-step: its step runs again on the other worker and the retrain still
stores exactly one configuration. An unreachable broker fails the run with a message that names it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from celery_cluster import (
    CeleryCluster,
    backfill_candles,
    free_port,
    latest_week,
    redis_server,
    steps_by_worker,
    wait_for,
)
from test_platform import REGISTRY, U

from quant_assets.executor import ExecutorSettingsError, celery_settings, executor_from_env, training_step_tags
from quant_core.store import ConfigurationStore

JOB = f"retrain_{U}"
RUN_TIMEOUT = 900


def test_executor_is_chosen_by_configuration():
    assert executor_from_env({}) is None  # Dagster's default: multiprocess on the run's machine
    assert executor_from_env({"QUANT_EXECUTOR": "multiprocess"}) is dg.multiprocess_executor
    celery = executor_from_env({"QUANT_EXECUTOR": "celery", "QUANT_CELERY_BROKER": "redis://h:6379/0"})
    assert celery.name == "celery"
    with pytest.raises(ExecutorSettingsError, match="QUANT_EXECUTOR='celry'.*'celery'"):
        executor_from_env({"QUANT_EXECUTOR": "celry"})
    with pytest.raises(ExecutorSettingsError, match="needs QUANT_CELERY_BROKER"):
        executor_from_env({"QUANT_EXECUTOR": "celery"})
    with pytest.raises(ExecutorSettingsError, match=r"QUANT_CELERY_BROKER='http://u:\*\*\*@h'"):
        celery_settings({"QUANT_CELERY_BROKER": "http://u:secret@h"})  # the password never shows
    with pytest.raises(ExecutorSettingsError, match="QUANT_CELERY_VISIBILITY_TIMEOUT"):
        celery_settings({"QUANT_CELERY_BROKER": "redis://h", "QUANT_CELERY_VISIBILITY_TIMEOUT": "soon"})


@pytest.fixture
def cluster(postgres_server, tmp_path) -> Iterator[CeleryCluster]:
    postgres_server.require()
    dagster_db, store_db = postgres_server.create_database(), postgres_server.create_database()
    (tmp_path / "logs").mkdir()
    try:
        with redis_server(tmp_path / "logs") as broker:
            c = CeleryCluster(tmp_path, dagster_db, store_db, REGISTRY, broker, visibility_timeout=15)
            try:
                yield c
            finally:
                c.close()
    finally:
        postgres_server.drop_database(dagster_db)
        postgres_server.drop_database(store_db)


def _finish(cluster: CeleryCluster, proc: subprocess.Popen, log: str = "run") -> str:
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out = (cluster.logs / f"{log}.log").read_text()
    assert proc.returncode == 0, out[-6000:] + "".join(
        p.read_text()[-3000:] for p in sorted(cluster.logs.glob("worker-*.log")))
    with cluster.instance() as instance:
        runs = instance.get_run_records(dg.RunsFilter(job_name=JOB))
        assert runs and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
        return runs[0].dagster_run.run_id


def _configurations(cluster: CeleryCluster) -> list:
    store = ConfigurationStore(cluster.env["QUANT_DATABASE_URL"])
    try:
        return store.list_configurations(universe_key=U)
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_retrain_steps_run_on_two_celery_workers(cluster):
    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
    cluster.start_worker("alpha")
    cluster.start_worker("beta")
    backfill_candles(cluster, week)
    cluster.wait_ready()
    run_id = _finish(cluster, cluster.launch(JOB, week))
    with cluster.instance() as instance:
        ran = steps_by_worker(instance, run_id)
        report = instance.get_latest_materialization_event(dg.AssetKey([U, "walk_forward_report"]))
    n_folds = report.asset_materialization.metadata["report"].value["folds"]
    # every step of the retrain ran on a worker, each exactly once, and both workers took part; the walk-forward
    # is one step per fold between plan_folds and combine_folds, each placed on a worker by Celery
    graph = f"{U}__walk_forward_report"
    folds = {s for s in ran if s.startswith(f"{graph}.run_fold[")}
    assert n_folds >= 2 and len(folds) == n_folds, ran
    search = f"{U}__trained_parameters"
    assert set(ran) == {f"{U}__{s}" for s in ("price_panel", "configuration")} | {
        f"{search}.plan_search", f"{search}.search_part[0]", f"{search}.combine_search",
        f"{graph}.plan_folds", f"{graph}.combine_folds"} | folds, ran
    assert all(len(w) == 1 for w in ran.values()), ran
    workers = {w[0].split("@")[0] for w in ran.values()}
    assert workers == {"alpha", "beta"}, ran
    assert len(_configurations(cluster)) == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_mid_step_is_replaced_by_the_other(cluster):
    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
    cluster.start_worker("alpha")
    cluster.start_worker("beta")
    backfill_candles(cluster, week)
    cluster.wait_ready()
    proc = cluster.launch(JOB, week)
    with cluster.instance() as instance:
        def training_started():
            runs = instance.get_run_records(dg.RunsFilter(job_name=JOB))
            if not runs:
                return None
            ran = steps_by_worker(instance, runs[0].dagster_run.run_id)
            return next(((k, w[0]) for k, w in ran.items() if k == f"{U}__trained_parameters.search_part[0]"), None)

        step, worker = wait_for(training_started, 300, "the training step to start on a worker", cluster.logs)
    victim = worker.split("@")[0]
    cluster.kill_worker(victim)
    run_id = _finish(cluster, proc)
    with cluster.instance() as instance:
        ran = steps_by_worker(instance, run_id)
    survivor = ({"alpha", "beta"} - {victim}).pop()
    assert [w.split("@")[0] for w in ran[step]] == [victim, survivor], ran
    assert len(_configurations(cluster)) == 1


def test_training_steps_can_have_a_queue_of_their_own():
    assert training_step_tags({}) == {}
    env = {"QUANT_EXECUTOR": "celery", "QUANT_CELERY_BROKER": "redis://h", "QUANT_CELERY_TRAINING_QUEUE": "training"}
    assert training_step_tags(env) == {"dagster-celery/queue": "training"}
    with pytest.raises(ExecutorSettingsError, match="needs QUANT_EXECUTOR=celery"):
        training_step_tags({"QUANT_CELERY_TRAINING_QUEUE": "training"})  # would be accepted and ignored
    with pytest.raises(ExecutorSettingsError, match="QUANT_CELERY_TRAINING_QUEUE='gpu box': a queue name"):
        training_step_tags({**env, "QUANT_CELERY_TRAINING_QUEUE": "gpu box"})


@pytest.mark.slow
@pytest.mark.postgres
def test_training_steps_go_to_the_workers_of_the_training_queue(cluster):
    """QUANT_CELERY_TRAINING_QUEUE=training: the search's parts, the folds and the steps that combine them run on
    the worker listening on `training` (GPU machines in deploy/helm), every other step on the `dagster` worker."""
    cluster.env["QUANT_CELERY_TRAINING_QUEUE"] = "training"
    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
    cluster.start_worker("cpu", queues=("dagster",))
    cluster.start_worker("gpu", queues=("training",))
    backfill_candles(cluster, week)
    cluster.wait_ready()
    run_id = _finish(cluster, cluster.launch(JOB, week))
    with cluster.instance() as instance:
        ran = {step: w[0].split("@")[0] for step, w in steps_by_worker(instance, run_id).items()}
    training = {s for s in ran if s.split(".")[-1].split("[")[0] in
                ("search_part", "combine_search", "run_fold", "combine_folds")}
    assert len(training) >= 4, ran
    assert {ran[s] for s in training} == {"gpu"} and {ran[s] for s in set(ran) - training} == {"cpu"}, ran
    assert len(_configurations(cluster)) == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_an_unreachable_broker_fails_the_run_naming_it(cluster):
    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    proc = cluster.launch(JOB, week, "dead-broker", env={**cluster.env, "QUANT_CELERY_BROKER": dead})
    proc.wait(timeout=300)
    out = (cluster.logs / "dead-broker.log").read_text()
    assert proc.returncode != 0
    assert f"the Celery broker {dead} (QUANT_CELERY_BROKER) is unreachable" in out, out[-4000:]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_without_the_code_locations_registry_fails_the_step_naming_it(cluster, tmp_path):
    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
    missing = tmp_path / "elsewhere" / "registry.yaml"
    cluster.start_worker("stray", env={"QUANT_REGISTRY": str(missing)})
    backfill_candles(cluster, week)
    cluster.wait_ready()
    proc = cluster.launch(JOB, week, "stray")
    proc.wait(timeout=RUN_TIMEOUT)
    out = (cluster.logs / "stray.log").read_text()
    assert proc.returncode != 0
    assert f"QUANT_REGISTRY={missing}: no such file" in out, out[-4000:]
    assert "Celery workers" in out and len(_configurations(cluster)) == 0
