"""A retrain's search runs as separate Dagster steps (so an executor can place them on different workers): random
candidates cut into ranges give the one-step search's result bit for bit; an Optuna study shared by two steps goes
through the store's PostgreSQL (schema `optuna`, apart from the store's tables), each step asking for its trials."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from test_strategy_platform import TODAY, U, land_lookback, make_platform

from quant_assets.defs.training.common import TrainConfig, week_spec
from quant_assets.partitions import latest_retrain_week
from quant_core.store import ConfigurationStore
from quant_core.store.database import optuna_storage_url
from quant_core.train.trainer import train

GRAPH = f"{U}__trained_parameters"
TRAINED = [U, "trained_parameters"]


def _run(defs, instance, week, config: dict):
    return dg.materialize(list(defs.assets), selection=[dg.AssetKey([U, "candles"]), dg.AssetKey(TRAINED)],
                          instance=instance, resources=dict(defs.resources), partition_key=week,
                          run_config={"ops": {GRAPH: {"config": config}}}, raise_on_error=False)


def _steps(instance, run_id) -> list[str]:
    return sorted(e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
                  if e.step_key.startswith(GRAPH))


def _spec(registry, week, config: TrainConfig):
    week_end = datetime.fromisoformat(week).replace(tzinfo=UTC) + timedelta(days=7)
    return week_spec(registry.universe(U).spec, U, week_end, config)


def _comparable(t):
    d = {k: v for k, v in vars(t).items() if k not in ("seconds", "environment")}
    d["details"] = {k: v for k, v in d["details"].items() if k not in ("evaluations_per_second", "parts")}
    return d


@pytest.mark.slow
def test_random_candidates_in_three_steps_equal_the_one_step_search(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("QUANT_DATABASE_URL", sqlite_url)
    registry, defs = make_platform(tmp_path, monkeypatch)
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, registry.universe(U), TODAY)
        land_lookback(defs, instance)
        config = {"seed": 5, "budget": 150, "search_steps": 3}  # 150 candidates, batches of 64: three ranges
        res = _run(defs, instance, week, config)
        assert res.success
        assert _steps(instance, res.run_id) == [f"{GRAPH}.combine_search", f"{GRAPH}.plan_search",
                                                *(f"{GRAPH}.search_part[{i}]" for i in range(3))]
        for i, (lo, hi) in enumerate([(0, 64), (64, 128), (128, 150)]):  # each step scored its own range
            logs = [e.user_message for e in instance.all_logs(res.run_id) if e.step_key == f"{GRAPH}.search_part[{i}]"]
            assert any(m.startswith("random search: ") and f"(of {lo}..{hi - 1} in 150)" in m for m in logs), logs
        (mat,) = [m for m in res.get_asset_materialization_events() if m.asset_key == dg.AssetKey(TRAINED)]
        assert mat.materialization.metadata["search_steps"].value == 3
        assert mat.materialization.metadata["n_evaluations"].value == 150
        stored = defs.load_asset_value(TRAINED, partition_key=week, instance=instance)
        data = defs.load_asset_value([U, "candles"], partition_key=week, instance=instance)
    whole = train(data, _spec(registry, week, TrainConfig(seed=5, budget=150)), seed=5)
    np.testing.assert_equal(_comparable(stored), _comparable(whole))
    store = ConfigurationStore(sqlite_url)
    try:
        (job,) = store.list_training_jobs(universe_key=U)
        assert job.status == "trained" and job.orchestrator_run_id == res.run_id
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_an_optuna_study_shared_by_two_steps_goes_through_the_stores_postgresql(tmp_path, monkeypatch,
                                                                                 postgres_url):
    monkeypatch.setenv("QUANT_DATABASE_URL", postgres_url)
    registry, defs = make_platform(tmp_path, monkeypatch)
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, registry.universe(U), TODAY)
        land_lookback(defs, instance)
        res = _run(defs, instance, week, {"method": "optuna", "budget": 9, "seed": 2, "search_steps": 2})
        assert res.success
        assert _steps(instance, res.run_id) == [f"{GRAPH}.combine_search", f"{GRAPH}.plan_search",
                                                f"{GRAPH}.search_part[0]", f"{GRAPH}.search_part[1]"]
        stored = defs.load_asset_value(TRAINED, partition_key=week, instance=instance)
    name = f"{U}/{week}/{res.run_id}"
    assert stored.method == "optuna" and stored.n_evaluations == 9 and stored.details["study_name"] == name
    study = optuna.load_study(study_name=name, storage=optuna_storage_url(postgres_url))
    assert len(study.trials) == 9
    assert stored.objective == pytest.approx(max(t.value for t in study.trials if t.value is not None))
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:  # Optuna's tables (and its alembic_version) live in their own schema
            tables = set(conn.execute(sa.text("SELECT table_schema || '.' || table_name FROM "
                                              "information_schema.tables")).scalars())
    finally:
        engine.dispose()
    assert {"optuna.studies", "optuna.trials", "optuna.alembic_version", "public.alembic_version"} <= tables
    assert "public.studies" not in tables


@pytest.mark.slow
def test_a_search_that_cannot_be_split_is_refused_before_any_work(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("QUANT_DATABASE_URL", sqlite_url)
    registry, defs = make_platform(tmp_path, monkeypatch)
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, registry.universe(U), TODAY)
        land_lookback(defs, instance)
        res = _run(defs, instance, week, {"method": "cma_es", "search_steps": 2})
        assert not res.success
        failure = next(e for e in instance.all_logs(res.run_id, of_type=dg.DagsterEventType.STEP_FAILURE))
        assert failure.step_key == f"{GRAPH}.plan_search"
        assert "search_steps=2: method cma_es trains one path" in str(failure.dagster_event.step_failure_data.error)


@pytest.mark.slow
def test_the_registry_entry_sets_the_steps_of_scheduled_retrains(tmp_path, monkeypatch, sqlite_url):
    import test_strategy_platform as platform

    monkeypatch.setenv("QUANT_DATABASE_URL", sqlite_url)
    monkeypatch.setattr(platform, "REGISTRY", platform.REGISTRY.replace("    walk_forward:", "    search_steps: 2\n"
                                                                        "    walk_forward:", 1))
    registry, defs = make_platform(tmp_path, monkeypatch)
    assert registry.universe(U).search_steps == 2
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, registry.universe(U), TODAY)
        land_lookback(defs, instance)
        res = _run(defs, instance, week, {"budget": 150})  # three batches of 64: two ranges
        assert res.success
        assert _steps(instance, res.run_id) == [f"{GRAPH}.combine_search", f"{GRAPH}.plan_search",
                                                f"{GRAPH}.search_part[0]", f"{GRAPH}.search_part[1]"]
        res = _run(defs, instance, week, {"budget": 150, "search_steps": 1})  # the launchpad overrides it
        assert res.success and f"{GRAPH}.search_part[1]" not in _steps(instance, res.run_id)
