"""What pool and CEX-strategy retrains share: launchpad config, run tags, the candle input, the stored
configuration (closing the run's training job: quant_assets.defs.training.jobs), the MATURE-threshold check, and
the retrain job with its weekly schedule."""

from datetime import datetime
from enum import StrEnum

import dagster as dg
from pydantic import Field

from quant_assets.defs.training.jobs import awaits_configuration
from quant_assets.executor import k8s_run_tags
from quant_assets.metadata import markdown_table
from quant_assets.resources import ConfigurationStoreResource
from quant_assets.settings import schedule_status
from quant_core.configuration import stage_evidence
from quant_core.lifecycle import mature_misses
from quant_core.live.sync import CandleSource
from quant_core.metrics import METRICS
from quant_core.provenance import NOT_RECORDED
from quant_core.retrain import explicit_seed, retrain_spec
from quant_core.runspec import with_training
from quant_core.spec import METHODS, RunSpec, RunSpecError
from quant_core.store import NewConfiguration
from quant_core.strategies.backtest import STRATEGY_METRICS
from quant_core.units import short_utc
from quant_core.universe import Registry, Universe
from quant_core.validate.walk_forward import WalkForwardReport

TRAINING_POOL = "training"


# optimisation_settings.method values as an enum, so the launchpad offers them as choices
Method = StrEnum("Method", {m: m for m in METHODS})
# return_val values likewise (pools and CEX strategies); a config enum choice is an identifier, so
# 'daily_var_95%' is offered as daily_var_95pct
Metric = StrEnum("Metric", {m.replace("%", "pct"): m for m in dict.fromkeys((*sorted(METRICS), *STRATEGY_METRICS))})
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
    budget: int | None = Field(None, ge=1, description="iterations (gradient_descent, bfgs), generations (cma_es), "
                               "trials (optuna) or candidates (random); default: the run spec's")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="random seed, 0 to 2^32 - 1 (default: the "
                             "registry entry's optimisation_settings.initial_random_key if it sets one, else one "
                             "derived from the universe and retrain week)")
    metric: Metric | None = Field(None, description="return_val, the metric trained on (default: the spec's); pools "
                                  "take the simulator's metrics, CEX strategies those and the trade metrics "
                                  "(net_profit, win_rate, ...); daily_var_95pct means daily_var_95%")
    search_steps: int | None = Field(None, ge=1, le=256, description="steps the week's search (trained_parameters) "
                                     "is cut into, for an executor to spread over workers: grid/random, ranges of "
                                     "candidates (default: one per 50,000); optuna, workers sharing one study in "
                                     "the store's database (default 1); other methods take 1. Default: the registry "
                                     "entry's search_steps. Walk-forward folds are "
                                     "steps of their own and search within their step")

    def apply(self, spec: RunSpec) -> RunSpec:
        try:
            return with_training(spec, method=Method(self.method).value if self.method else None,
                                 budget=self.budget, seed=self.seed,
                                 metric=Metric(self.metric).value if self.metric else None)
        except RunSpecError as exc:
            raise dg.Failure(str(exc)) from None


def week_spec(base_spec: RunSpec, universe: str, window_end: datetime, config: TrainConfig | None) -> RunSpec:
    """The run spec of one retrain week: the launchpad's overrides, the windows ending with the week, and the week's
    own seed unless the registry entry or the launchpad sets one (quant_core.retrain.retrain_spec). Whether the
    entry sets one is read on `base_spec`, as loaded: config.apply rebuilds the spec with every field set."""
    spec = config.apply(base_spec) if config is not None else base_spec
    keep = explicit_seed(base_spec) or (config is not None and config.seed is not None)
    return retrain_spec(spec, universe, window_end, keep_seed=keep)


def parameters_plot(context, universe: str, spec: RunSpec, data, params: dict, title: str, file: str) -> dict:
    """Metadata of the parameters' plot over training + hold-out (one run, the split marked)."""
    from quant_assets.metadata import plot_metadata
    from quant_core.tunables import tunable_for

    end = spec.end_test or spec.end
    png = tunable_for(spec).plot(data, params, spec.start, end, title, split=spec.end if spec.end_test else None)
    return plot_metadata(png, title, universe, context.partition_key, file)


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
            if awaits_configuration(job, context.run.run_id):
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
        # the numerical stack's versions and the JAX backend/device it was trained on
        "environment": dg.MetadataValue.json(stored.environment) if stored.environment else NOT_RECORDED,
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
                              tags={**tags, **k8s_run_tags()})  # partitioned as its assets
    schedule = dg.build_schedule_from_partitioned_job(job, day_of_week=1, hour_of_day=3, minute_of_hour=0,
                                                      default_status=schedule_status())
    return dg.Definitions(jobs=[job], schedules=[schedule])
