"""What pool and CEX-strategy retrains share: launchpad config, run tags, the candle input, the job
record around a training step, the stored configuration, the MATURE-threshold check, and the
retrain job with its weekly schedule."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import dagster as dg
import polars as pl
from pydantic import Field

from quant_assets.metadata import markdown_table
from quant_assets.partitions import MARKET_DIM
from quant_assets.resources import ConfigurationStoreResource
from quant_core.configuration import stage_evidence
from quant_core.lifecycle import mature_misses
from quant_core.live.sync import CandleSource
from quant_core.metrics import METRICS
from quant_core.runspec import with_training
from quant_core.spec import METHODS, RunSpec, RunSpecError
from quant_core.store import NewConfiguration
from quant_core.units import short_utc
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport

TRAINING_POOL = "training"


# optimisation_settings.method values as an enum, so the launchpad offers them as choices
Method = StrEnum("Method", {m: m for m in METHODS})
MAX_TRADE_ROWS = 50


def trade_table_rows(trades: list[dict], limit: int = MAX_TRADE_ROWS) -> list[dict]:
    """The last `limit` trades as table rows (times UTC, return in percent)."""
    return [{**({"fold": t["fold"]} if "fold" in t else {}), "entry": short_utc(t["entry_time"]),
             "exit": short_utc(t["exit_time"]), "side": t["side"], "entry_price": t["entry_price"],
             "exit_price": t["exit_price"], "return_%": 100 * t["return"], "pnl": t["pnl"],
             "exit_reason": t["exit_reason"]}
            for t in trades[-limit:]]


def trades_md(trades: list[dict]) -> dg.MetadataValue:
    shown = f" (last {MAX_TRADE_ROWS} of {len(trades)})" if len(trades) > MAX_TRADE_ROWS else ""
    return dg.MetadataValue.md(f"{len(trades)} trades{shown}\n\n{markdown_table(trade_table_rows(trades)).value}")


class TrainConfig(dg.Config):
    """Launchpad settings of a retrain; unset fields keep the universe's run spec."""

    method: Method | None = Field(None, description="optimisation_settings.method (default: the run spec's)")
    budget: int | None = Field(None, description="iterations (gradient_descent, bfgs), generations (cma_es), trials "
                               "(optuna) or candidates (random); default: the run spec's")
    seed: int | None = Field(None, description="random seed (default: optimisation_settings.initial_random_key)")
    # a string, not an enum: Dagster config enums cannot hold names such as daily_var_95%
    metric: str | None = Field(None, description=f"return_val, the metric trained on (default: the spec's); one of "
                               f"{', '.join(sorted(METRICS))} (CEX strategies also net_profit, win_rate, "
                               "profit_factor, expectancy, sharpe_per_trade, ...)")

    def apply(self, spec: RunSpec) -> RunSpec:
        try:
            return with_training(spec, method=Method(self.method).value if self.method else None,
                                 budget=self.budget, seed=self.seed, metric=self.metric)
        except RunSpecError as exc:
            raise dg.Failure(str(exc)) from None


def k8s_training_tags() -> dict:
    """`dagster-k8s/config` for retrain runs (K8sRunLauncher reads run tags): CPU/memory requests, and with
    QUANT_TRAINING_GPU=1 at definition load a GPU limit and a node selector (QUANT_GPU_NODE_SELECTOR,
    `key=value`, default accelerator=nvidia). Other run launchers ignore the tag."""
    resources: dict = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
    config: dict = {"container_config": {"resources": resources}}
    if os.environ.get("QUANT_TRAINING_GPU") == "1":
        resources["limits"]["nvidia.com/gpu"] = "1"
        key, _, value = os.environ.get("QUANT_GPU_NODE_SELECTOR", "accelerator=nvidia").partition("=")
        config["pod_spec_config"] = {"node_selector": {key: value}}
    return {"dagster-k8s/config": json.dumps(config)}


def frames_by_market(candles) -> dict[str, pl.DataFrame]:
    """{partition key: day frame} (or one bare frame for a single partition) -> {market: frame}."""
    if isinstance(candles, pl.DataFrame):
        raise dg.Failure("a retrain mapped to a single candle partition: its lookback is empty")
    parts: dict[str, list[pl.DataFrame]] = {}
    for key, frame in candles.items():
        parts.setdefault(key.keys_by_dimension[MARKET_DIM], []).append(frame)
    return {m: pl.concat(fs).sort("timestamp") for m, fs in parts.items()}




@contextmanager
def training_job(store_resource: ConfigurationStoreResource, context: dg.AssetExecutionContext, universe: str,
                 spec: RunSpec, config: "TrainConfig", data_hash: str) -> Iterator[None]:
    """Record the training run in training_jobs before it starts (so a failed retrain leaves a trace and
    the stored configuration stays as it was), and its outcome after."""
    store = store_resource.open()
    try:
        job_id = store.record_job_start(
            universe_key=universe, method=spec.optimisation_settings.method,
            settings={"budget": config.budget, "seed": config.seed, "metric": spec.return_val,
                      "partition": context.partition_key, "data_hash": data_hash},
            orchestrator_run_id=context.run.run_id,
        )
        try:
            yield
        except Exception as exc:
            store.record_job_end(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        store.record_job_end(job_id, status="trained")
    finally:
        store.dispose()


def store_configuration(context: dg.AssetExecutionContext, store_resource: ConfigurationStoreResource,
                        candles: CandleSource, registry: Registry, universe: Universe,
                        new: NewConfiguration) -> tuple:
    """Write the week's version, mark this run's training job stored, and bring the universe's live timeline up
    to date (the version's arrival is decided at once: live, or a candidate with the reason).
    Returns (stored version, "live" / "candidate" / "pending", why, store URL)."""
    from quant_core.live.status import live_status
    from quant_core.live.sync import sync_universe

    store = store_resource.open()
    try:
        stored = store.add_version(new)
        for job in store.list_training_jobs(universe_key=universe.name):
            if job.orchestrator_run_id == context.run.run_id and job.status == "trained":
                store.record_job_end(job.id, status="stored", configuration_id=stored.id)
        try:
            sync_universe(store, registry, universe, candles)
        except Exception as exc:  # the version is stored; the next forward run derives the timeline again
            context.log.warning(f"{universe.name}: version {stored.id} stored, live timeline not updated: {exc}")
            return stored, "pending", f"the live timeline could not be updated ({exc}); the next forward run " \
                "decides", store.url
        status = live_status(store, universe.name)
        arrival = next((e for e in reversed(store.timeline_events(universe.name))
                        if e.configuration_id == stored.id and e.kind in ("live", "candidate")), None)
        if arrival is None:
            return stored, "pending", "its window's end has not been reached by the live timeline yet", store.url
        live_now = "live" if status.configuration_id == stored.id else f"{arrival.kind} (not live now)"
        return stored, live_now, arrival.reason, store.url
    finally:
        store.dispose()


def configuration_metadata(stored, live: str, why: str, url: str) -> dict:
    return {
        "configuration_id": stored.id,
        "live": live,
        "live_reason": why,
        "configuration": dg.MetadataValue.md(
            f"row `{stored.id}` of `trained_configurations` in `{url}`; export for live trading with "
            f"`quant configs export {stored.id}`"),
        "lifecycle_stage": str(stored.lifecycle_stage),
        "stage_reason": stored.stage_reason,
        "sample_size": stored.sample_size,
        "parameters": dg.MetadataValue.json(stored.parameters),
        "store": url,
    }


def threshold_check(universe: Universe, report: WalkForwardReport) -> dg.AssetCheckResult:
    """Warn (not block) when the out-of-sample evidence misses the universe's MATURE thresholds (the same
    criteria the stage decision applies: quant_core.lifecycle.mature_misses)."""
    th = universe.stage_thresholds.thresholds()
    misses = [] if report.sample_size > th.mature_above else [
        f"sample size {report.sample_size} ({report.sample_unit}) <= {th.mature_above}"]
    misses += mature_misses(stage_evidence(report), th)
    return dg.AssetCheckResult(check_name="oos_thresholds", passed=not misses, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"misses": "; ".join(misses) or "none"})


def significance_table(report: WalkForwardReport) -> dg.MetadataValue:
    return markdown_table([{"statistic": k, "value": v} for k, v in report.significance.items()
                           if not isinstance(v, list)])


def retrain_job(universe: Universe, partitions, tags: dict, assets: list) -> dg.Definitions:
    """The universe's retrain job; weekly, Monday 03:00 UTC: the week that just ended (its last candles land
    at 00:15)."""
    job = dg.define_asset_job(f"retrain_{universe.name}", selection=dg.AssetSelection.assets(*assets),
                              partitions_def=partitions, tags={**tags, **k8s_training_tags()})
    schedule = dg.build_schedule_from_partitioned_job(job, day_of_week=1, hour_of_day=3, minute_of_hour=0,
                                                      default_status=dg.DefaultScheduleStatus.RUNNING)
    return dg.Definitions(jobs=[job], schedules=[schedule])
