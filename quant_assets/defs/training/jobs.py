"""The training_jobs record of a retrain, kept true when a run dies: heartbeats while it lives, reconciliation after.

A retrain killed with SIGKILL leaves its job open and its Dagster run STARTED (the default run launcher cannot
tell the worker died). So each job beats while its step trains (and its run's later steps beat it until the
configuration is stored), and open jobs whose run is no longer alive are marked failed with the reason
(quant_core.store.jobs): at the start of every retrain for its universe, and by the `reconcile_training_jobs`
sensor for universes that do not retrain again soon. Dagster's own word counts first: a run whose status in the
instance is SUCCESS, FAILURE or CANCELED has ended, whatever its heartbeat says.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from quant_assets.resources import ConfigurationStoreResource
from quant_core.store import ConfigurationStore, TrainingJobRecord
from quant_core.store.jobs import ABANDONED_AFTER, RunEnded

RECONCILE_SENSOR = "reconcile_training_jobs"


def dagster_run_ended(instance: dg.DagsterInstance) -> RunEnded:
    """The store's `run_ended` for Dagster runs: why a run has ended, or None (not ended, or not in this instance)."""

    def ended(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id)
        if run is None or not run.is_finished:
            return None
        return f"its Dagster run {run_id} ended with status {run.status.value}"

    return ended


def reconcile_training_jobs(store: ConfigurationStore, instance: dg.DagsterInstance,
                            universe: str | None = None) -> list[TrainingJobRecord]:
    """Mark the universe's (or every) open job whose run is no longer alive failed; returns them."""
    return store.reconcile_jobs(universe_key=universe, run_ended=dagster_run_ended(instance))


def start_training_job(store: ConfigurationStore, context: dg.OpExecutionContext, universe: str, spec: Any,
                       config: Any, data_hash: str) -> int:
    """Record the training run in training_jobs before it starts (so a failed retrain leaves a trace and the stored
    configuration stays as it was); jobs of the universe that earlier runs abandoned (killed, crashed) are
    reconciled first. Returns the job's id."""
    try:
        for job in reconcile_training_jobs(store, context.instance, universe):
            context.log.warning(f"training job {job.id} of {universe} marked failed: {job.error}")
    except Exception as exc:  # bookkeeping of earlier runs must not stop this one; the sensor tries again
        context.log.warning(f"could not reconcile earlier training jobs of {universe}: {exc}")
    return store.record_job_start(
        universe_key=universe, method=spec.optimisation_settings.method,
        settings={"budget": config.budget, "seed": spec.optimisation_settings.initial_random_key,
                  "metric": spec.return_val,
                  "partition": context.partition_key, "data_hash": data_hash},
        orchestrator_run_id=context.run.run_id,
    )


@contextmanager
def job_beating(store_resource: ConfigurationStoreResource, job_id: int) -> Iterator[None]:
    """Beat the job while the block trains; a failure marks it failed with the error (and is raised on)."""
    store = store_resource.open()
    try:
        try:
            with store.heartbeat(job_id):
                yield
        except Exception as exc:
            store.record_job_end(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
    finally:
        store.dispose()


@contextmanager
def training_job(store_resource: ConfigurationStoreResource, context: dg.AssetExecutionContext, universe: str,
                 spec: Any, config: Any, data_hash: str) -> Iterator[None]:
    """A training in one step: recorded before it starts, beaten while it trains, its outcome recorded after."""
    store = store_resource.open()
    try:
        job_id = start_training_job(store, context, universe, spec, config, data_hash)
    finally:
        store.dispose()
    with job_beating(store_resource, job_id):
        yield
    end_training_job(store_resource, job_id)


def end_training_job(store_resource: ConfigurationStoreResource, job_id: int) -> None:
    store = store_resource.open()
    try:
        store.record_job_end(job_id, status="trained")
    finally:
        store.dispose()


@contextmanager
def run_heartbeat(store_resource: ConfigurationStoreResource, context: dg.AssetExecutionContext) -> Iterator[None]:
    """Keep this run's trained jobs alive while a later step of the run (walk-forward, configuration) works."""
    store = store_resource.open()
    try:
        with store.heartbeat(run_id=context.run.run_id):
            yield
    finally:
        store.dispose()


def awaits_configuration(job: TrainingJobRecord, run_id: str) -> bool:
    """Whether `job` is this run's training that the stored configuration closes: trained, or reconciled as
    abandoned after training while the run was in fact only slow (e.g. a step waiting for its pool)."""
    if job.orchestrator_run_id != run_id or job.configuration_id is not None:
        return False
    return job.status == "trained" or (job.status == "failed" and (job.error or "").startswith(ABANDONED_AFTER))


def build_job_reconciliation() -> dg.Definitions:
    """The sensor that reconciles every universe's abandoned jobs (it writes to the store; it launches no run)."""

    # on everywhere (like the sensors that follow runs): it launches nothing, it only closes what dead runs left open
    @dg.sensor(name=RECONCILE_SENSOR, minimum_interval_seconds=600, default_status=dg.DefaultSensorStatus.RUNNING,
               description="marks training jobs whose run is no longer alive (killed, crashed, ended without "
               "closing them) failed, with the reason; it launches no run")
    def reconcile_training_jobs_sensor(context: dg.SensorEvaluationContext,
                                       config_store: ConfigurationStoreResource) -> dg.SkipReason:
        store = config_store.open()
        try:
            failed = reconcile_training_jobs(store, context.instance)
        finally:
            store.dispose()
        for job in failed:
            context.log.warning(f"training job {job.id} of {job.universe_key} marked failed: {job.error}")
        if not failed:
            return dg.SkipReason("no abandoned training jobs")
        return dg.SkipReason(f"marked {len(failed)} abandoned training job(s) failed: "
                             + "; ".join(f"{j.id} ({j.universe_key})" for j in failed))

    return dg.Definitions(sensors=[reconcile_training_jobs_sensor])
