"""A retrain week's search as a graph of steps, so an executor can spread a large search over workers.

    plan_search ──► search_part[0] ─┐
                ├─► search_part[1] ─┼─► combine_search ──► trained_parameters (+ its check)
                └─► search_part[…] ─┘

`plan_search` checks the method settings and the data, records the training job (training_jobs) and cuts the
search into parts (`quant_core.train.parts`): grid and random searches into ranges of candidates (one per 50,000
unless the launchpad's `search_steps` says otherwise); an Optuna study, when `search_steps` > 1, into workers
sharing one study in the store's database (PostgreSQL: schema `optuna`; or optuna_settings.storage.url); every
other method into one part, the whole training. Each `search_part` runs in the `training` pool and beats the job;
`combine_search` combines the parts (a grid's result equals the one-step search bit for bit), closes the job and
yields the asset's metadata and check. Step keys: `<universe>__trained_parameters.plan_search`,
`….search_part[<part index>]`, `….combine_search`. The launchpad config stays
`ops: {<universe>__trained_parameters: {config: …}}`.
"""

import dagster as dg
import numpy as np

from quant_assets.defs.training.common import (
    TRAINING_POOL,
    TrainConfig,
    parameters_plot,
    trades_md,
    week_spec,
)
from quant_assets.defs.training.folds import train_config_mapping
from quant_assets.defs.training.jobs import end_training_job, job_beating, start_training_job
from quant_assets.executor import training_step_tags
from quant_assets.metadata import markdown_table, number
from quant_assets.resources import ConfigurationStoreResource, JaxResource
from quant_core.spec import RunSpec
from quant_core.store.database import optuna_storage_url
from quant_core.train.parts import PartOutcome, SearchPart, combine_parts, plan_search, run_part, with_job
from quant_core.train.trainer import TrainedParameters
from quant_core.tunables import tunable_for
from quant_core.universe import Universe

OPS = ("plan_search", "search_part", "combine_search")
CHECK = "finite_objective"


def parameter_rows(stored: dict) -> list[dict]:
    """Pools store {parameter: {token: value}}, strategies {parameter: value}: one table row per parameter."""
    return [{"parameter": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in stored.items()]


def trained_metadata(context, universe: str, spec: RunSpec, data, trained: TrainedParameters, backend: str) -> dict:
    t = tunable_for(spec)
    ev = t.evaluate(data, [trained.params], spec.start, spec.end_test or spec.end, benchmarks=False, trades=t.trades)
    return {
        "parameters": markdown_table(parameter_rows(t.stored_params(trained.params))),
        "objective": number(float(trained.objective)),
        "metric": trained.metric,
        "method": trained.method,
        "n_evaluations": trained.n_evaluations,
        "evaluations_per_second": number(float(trained.n_evaluations / max(trained.seconds, 1e-9))),
        "seed": trained.seed,
        "backend": backend,
        "search_seconds": number(trained.seconds),
        "search_steps": len(trained.details.get("parts", [])) or 1,
        "train_window": f"{trained.start:%Y-%m-%d} .. {trained.end:%Y-%m-%d}",
        "metrics": markdown_table([{"metric": k, "value": v} for k, v in ev.metrics[0].items()]),
        **({"trades": trades_md(ev.trades[0])} if ev.trades is not None else {}),
        "data_hash": t.data_hash(data),
        **parameters_plot(context, universe, spec, data, trained.params,
                          f"{universe}: trained parameters (dashed: end of training)", "trained_parameters.png"),
    }


def build_trained_parameters(universe: Universe, partitions: dg.PartitionsDefinition, data_key: list[str],
                             tags: dict) -> dg.AssetsDefinition:
    name = universe.name
    key = [name, "trained_parameters"]
    base_spec = universe.spec
    check_spec = dg.AssetCheckSpec(CHECK, asset=key, blocking=True)

    def window_spec(context, config: TrainConfig) -> RunSpec:
        return week_spec(base_spec, name, context.partition_time_window.end, config)

    @dg.op(name=f"{name}__plan_search", out=dg.DynamicOut(SearchPart),
           description="checks the settings and data, records the training job, cuts the search into parts")
    def plan_search_op(context: dg.OpExecutionContext, config: TrainConfig,
                       config_store: ConfigurationStoreResource, data):
        spec = window_spec(context, config)
        settings = spec.optimisation_settings.optuna_settings
        steps = config.search_steps or universe.search_steps
        shared = spec.optimisation_settings.method == "optuna" and (steps or 1) > 1
        storage = (settings.storage.url or optuna_storage_url(config_store.database_url)) if shared else None
        try:
            parts = plan_search(data, spec, seed=config.seed, n_parts=steps, storage=storage,
                                study_name=f"{name}/{context.partition_key}/{context.run.run_id}")
        except ValueError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        store = config_store.open()
        try:
            job_id = start_training_job(store, context, name, spec, config, tunable_for(spec).data_hash(data))
        finally:
            store.dispose()
        context.log.info(f"{spec.optimisation_settings.method}: {len(parts)} step(s): "
                         + "; ".join(p.describe() for p in parts))
        for part in with_job(parts, job_id):
            yield dg.DynamicOutput(part, mapping_key=str(part.index))

    @dg.op(name=f"{name}__search_part", pool=TRAINING_POOL, tags=training_step_tags(),
           description="runs one part of the search")
    def search_part_op(context: dg.OpExecutionContext, config: TrainConfig, config_store: ConfigurationStoreResource,
                       jax_settings: JaxResource, data, part: SearchPart) -> PartOutcome:
        spec = window_spec(context, config)
        jax_settings.setup()
        with job_beating(config_store, part.job_id):
            return run_part(data, spec, part, log=context.log.info)

    @dg.op(name=f"{name}__combine_search", pool=TRAINING_POOL, tags=training_step_tags(),
           out={"result": dg.Out(TrainedParameters), CHECK: dg.Out(dagster_type=None)},
           description="the parts combined into the trained parameters; closes the training job")
    def combine_search_op(context: dg.OpExecutionContext, config: TrainConfig,
                          config_store: ConfigurationStoreResource, jax_settings: JaxResource, data,
                          outcomes: list[PartOutcome]):
        spec = window_spec(context, config)
        backend = jax_settings.setup()
        job_id = outcomes[0].part.job_id
        with job_beating(config_store, job_id):
            trained = combine_parts(data, spec, outcomes)
        end_training_job(config_store, job_id)
        yield dg.Output(trained, output_name="result",
                        metadata=trained_metadata(context, name, spec, data, trained, backend))
        yield dg.AssetCheckResult(check_name=CHECK, passed=bool(np.isfinite(trained.objective)),
                                  metadata={"objective": number(trained.objective)})

    @dg.graph_asset(
        key=key,
        group_name=name,
        partitions_def=partitions,
        ins={"data": dg.AssetIn(key=data_key)},
        config=train_config_mapping(OPS),
        kinds={"jax", "optuna"},
        tags=tags,
        description=f"{tunable_for(base_spec).name} parameters trained by {base_spec.optimisation_settings.method} "
        f"(launchpad: method, budget, seed, metric, search_steps), maximising {base_spec.return_val} over the week's "
        "training window; the search runs as one step or as parts (grid/random candidates, Optuna workers).",
        check_specs=[check_spec],
    )
    def trained_parameters(data):
        run = search_part_op.alias(OPS[1])
        outcomes = plan_search_op.alias(OPS[0])(data).map(lambda p: run(data, p))
        result, finite = combine_search_op.alias(OPS[2])(data, outcomes.collect())
        return {"result": result, check_spec.get_python_identifier(): finite}

    return trained_parameters
