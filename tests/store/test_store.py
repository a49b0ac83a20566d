"""The configuration store on SQLite and PostgreSQL: migrations, immutable idempotent versions, lifecycle
events, concurrent writers, atomicity and input validation (the live timeline's tables: test_live_records)."""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS, LifecycleStage
from quant_core.store import (
    DATABASE_URL_ENV,
    ConfigurationStore,
    NewConfiguration,
    StoredConfiguration,
    resolve_database_url,
)
from quant_core.store import repository as repository_module
from quant_core.store.database import head_revision
from quant_core.store.models import Base

S = LifecycleStage
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TABLES = {"trained_configurations", "lifecycle_events", "training_jobs", "forward_records", "comparisons",
          "alembic_version"}


def make_config(**overrides) -> NewConfiguration:
    """A configuration whose floats are chosen to expose any lossy round-trip."""
    fields = {
        "universe_key": "btc_eth_momentum",
        "strategy": "momentum",
        "method": "optuna",
        "exchanges": ["binance"],
        "symbols": ["BTC/USDT", "ETH/USDT"],
        "timeframe": "1h",
        "parameters": {
            "memory_days": {"BTC": 0.1 + 0.2, "ETH": 1 / 3},
            "k": {"BTC": 1e-300, "ETH": 12345.678901234567},
        },
        "metrics": {
            "in_sample": {"daily_log_sharpe": 1.2345678901234567, "denormal": 5e-324, "n": 3},
            "walk_forward": {"oos_sharpe": -0.30000000000000004, "p_value": None},
        },
        "lifecycle_stage": S.DISCOVERY,
        "stage_reason": "sample size 12 < 30",
        "stage_evidence": {"sample_size": 12, "oos_sharpe": 0.7, "overfitting_flag": False},
        "sample_size": 12,
        "train_start": T0,
        "train_end": T0 + timedelta(days=90),
        "test_start": T0 + timedelta(days=90),
        "test_end": T0 + timedelta(days=120),
        "data_hash": "sha256:abc123",
        "code_version": "0.1.0+g1234567",
        "seed": 2**40 + 7,
        "run_spec": {"rule": "momentum", "tokens": ["BTC", "ETH"], "chunk_period": 1440, "fees": 0.003},
        "orchestrator_run_id": "run-0001",
    }
    fields.update(overrides)
    return NewConfiguration(**fields)


@pytest.fixture
def store(store_url: str) -> Iterator[ConfigurationStore]:
    s = ConfigurationStore(store_url)
    yield s
    s.dispose()


def later_window(**overrides) -> NewConfiguration:
    """The same universe retrained 30 days later."""
    d = timedelta(days=30)
    return make_config(
        train_end=T0 + timedelta(days=90) + d,
        test_start=T0 + timedelta(days=90) + d,
        test_end=T0 + timedelta(days=120) + d,
        **overrides,
    )


def count_rows(store: ConfigurationStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def transitions(store: ConfigurationStore, config_id: int) -> list[tuple[str | None, str]]:
    return [(e.from_stage, e.to_stage) for e in store.lifecycle_events(config_id)]


# -- migrations -----------------------------------------------------------------------------------


def test_migration_creates_tables_and_is_idempotent(store_url: str) -> None:
    first = ConfigurationStore(store_url)
    first.migrate()  # again on the same engine
    first.dispose()
    second = ConfigurationStore(store_url)  # and from a fresh process-like start
    try:
        with second.engine.connect() as conn:
            assert TABLES <= set(sa.inspect(conn).get_table_names())
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [head_revision()]
        assert second.list_configurations() == []
    finally:
        second.dispose()


def test_migration_matches_models(store: ConfigurationStore) -> None:
    """What migration 0001 builds is what the models describe (autogenerate would find nothing to do)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_no_migrate_leaves_database_empty(store_url: str) -> None:
    s = ConfigurationStore(store_url, migrate=False)
    try:
        with s.engine.connect() as conn:
            assert not TABLES & set(sa.inspect(conn).get_table_names())
    finally:
        s.dispose()


# -- upserts and lifecycle events -----------------------------------------------------------------


def test_new_configuration_round_trips_every_field(store: ConfigurationStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    cfg = make_config(train_start=T0.astimezone(plus_two))  # same instant, other zone: stored as UTC
    before = datetime.now(UTC)
    stored = store.add_version(cfg)
    assert isinstance(stored, StoredConfiguration)
    again = store.get_configuration(stored.id)
    assert again == stored
    for f in dataclasses.fields(NewConfiguration):
        assert getattr(again, f.name) == getattr(cfg, f.name), f.name
    for name in ("train_start", "train_end", "test_start", "test_end", "created_at", "updated_at"):
        value = getattr(again, name)
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), name
    assert again.train_start == T0 and again.train_start.tzinfo == UTC
    # floats come back bit-identical, not merely close
    assert again.parameters["memory_days"]["BTC"] == 0.30000000000000004
    assert again.metrics["in_sample"]["denormal"] == 5e-324
    assert again.metrics["walk_forward"]["oos_sharpe"] == -0.30000000000000004
    assert list(again.parameters["k"]) == ["BTC", "ETH"]  # key order kept
    assert again.circuit_breakers == DEFAULT_CIRCUIT_BREAKERS
    assert again.lifecycle_stage is S.DISCOVERY
    assert again.revision == 1
    assert before - timedelta(seconds=5) <= again.created_at == again.updated_at <= datetime.now(UTC)
    assert store.get_configuration(stored.id + 1000) is None
    events = store.lifecycle_events(stored.id)
    assert [(e.from_stage, e.to_stage, e.reason) for e in events] == [(None, S.DISCOVERY, "sample size 12 < 30")]
    assert events[0].evidence == cfg.stage_evidence and events[0].at.tzinfo is not None


def test_rerun_with_the_same_result_is_the_same_version(store: ConfigurationStore) -> None:
    first = store.add_version(make_config())
    again = store.add_version(make_config(orchestrator_run_id="run-0002"))  # another run, same version
    assert again == first and count_rows(store, "trained_configurations") == 1
    assert transitions(store, first.id) == [(None, S.DISCOVERY)]


def test_rerun_with_another_result_adds_a_revision_and_edits_nothing(store: ConfigurationStore) -> None:
    first = store.add_version(make_config())
    changed = make_config(parameters={"memory_days": {"BTC": 7.5, "ETH": 2.25}}, lifecycle_stage=S.VALIDATION,
                          stage_reason="sample size 45 in [30, 100]", sample_size=45)
    second = store.add_version(changed)
    assert second.id != first.id and (first.revision, second.revision) == (1, 2)
    assert store.get_configuration(first.id) == first  # the first version is untouched
    assert second.parameters == changed.parameters and second.lifecycle_stage is S.VALIDATION
    assert transitions(store, second.id) == [(None, S.VALIDATION)]
    assert store.add_version(changed) == second  # and that revision is idempotent too


def test_later_window_is_a_new_version_and_retires_nothing(store: ConfigurationStore) -> None:
    old = store.add_version(make_config(lifecycle_stage=S.VALIDATION))
    new = store.add_version(later_window())
    assert new.id != old.id and count_rows(store, "trained_configurations") == 2
    assert store.get_configuration(old.id) == old
    assert [c.id for c in store.list_configurations(universe_key="btc_eth_momentum", stage="validation")] == [old.id]
    assert [c.id for c in store.list_configurations(stage=S.DISCOVERY)] == [new.id]
    assert store.list_configurations(universe_key="other") == []
    created = [(e.configuration_id, e.kind, e.day) for e in store.timeline_events("btc_eth_momentum")]
    assert created == [(old.id, "created", old.test_end), (new.id, "created", new.test_end)]


def _concurrent_writer(url: str, worker: int, n: int, go) -> None:
    """Runs in a spawned process: write the same two versions of one window n times."""
    go.wait(30)
    store = ConfigurationStore(url)
    try:
        for i in range(n):
            stage = (S.DISCOVERY, S.VALIDATION)[(i + worker) % 2]
            store.add_version(make_config(lifecycle_stage=stage, metrics={"stage": str(stage)}))
    finally:
        store.dispose()


def test_concurrent_writers_of_one_key_end_with_one_row(store: ConfigurationStore, store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_concurrent_writer, args=(store_url, w, 20, go)) for w in range(2)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]

    rows = store.list_configurations()
    assert sorted(r.revision for r in rows) == [1, 2]  # two different versions of the window, each once
    assert {r.metrics["stage"] for r in rows} == {"DISCOVERY", "VALIDATION"}
    assert [len(store.lifecycle_events(r.id)) for r in rows] == [1, 1]


def test_failed_write_leaves_nothing_behind(store: ConfigurationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_event(*_args, **_kwargs) -> None:
        raise RuntimeError("event insert failed")

    monkeypatch.setattr(repository_module, "_insert_event", broken_event)
    with pytest.raises(RuntimeError, match="event insert failed"):
        store.add_version(make_config())
    assert count_rows(store, "trained_configurations") == 0
    assert count_rows(store, "lifecycle_events") == 0

    # an existing version survives a failed rerun untouched, and no half revision is left
    monkeypatch.undo()
    kept = store.add_version(make_config())
    monkeypatch.setattr(repository_module, "_insert_event", broken_event)
    with pytest.raises(RuntimeError):
        store.add_version(make_config(lifecycle_stage=S.MATURE, metrics={"oos_sharpe": 9.0}))
    assert store.list_configurations() == [kept]
    assert count_rows(store, "lifecycle_events") == 1


# -- validation -----------------------------------------------------------------------------------


def test_non_finite_metric_is_rejected_with_its_field(store: ConfigurationStore) -> None:
    with pytest.raises(ValueError, match=r"metrics\['walk_forward'\]\['oos_sharpe'\] is nan"):
        store.add_version(make_config(metrics={"walk_forward": {"oos_sharpe": float("nan")}}))
    with pytest.raises(ValueError, match=r"parameters\['k'\]\[1\] is inf"):
        store.add_version(make_config(parameters={"k": [1.0, np.inf]}))
    with pytest.raises(ValueError, match="stage_evidence"):
        store.add_version(make_config(stage_evidence={"when": datetime.now(UTC)}))
    assert count_rows(store, "trained_configurations") == 0


def test_numpy_values_are_stored_as_python_numbers(store: ConfigurationStore) -> None:
    x = np.float64(0.1) * 3
    stored = store.add_version(
        make_config(metrics={"sharpe": x, "n": np.int64(7), "w": np.array([0.25, 0.75])}, seed=np.int64(3))
    )
    assert stored.metrics == {"sharpe": float(x), "n": 7, "w": [0.25, 0.75]}
    assert type(stored.metrics["sharpe"]) is float and stored.seed == 3


def test_bad_configuration_fields_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="train_start: naive datetime"):
        make_config(train_start=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="lifecycle_stage: 'LIVE' is not a lifecycle stage"):
        make_config(lifecycle_stage="LIVE")
    with pytest.raises(ValueError, match="train window is reversed"):
        make_config(train_start=T0 + timedelta(days=365))
    assert make_config(lifecycle_stage="mature").lifecycle_stage is S.MATURE


# -- training jobs --------------------------------------------------------------------------------


def test_training_jobs_record_start_and_end(store: ConfigurationStore) -> None:
    cfg = store.add_version(make_config())
    ok = store.record_job_start(universe_key="u", method="optuna", settings={"trials": 50}, orchestrator_run_id="r1")
    failed = store.record_job_start(universe_key="u", method="grid", settings={}, orchestrator_run_id=None)
    store.record_job_end(ok, status="succeeded", configuration_id=cfg.id)
    store.record_job_end(failed, status="failed", error="ValueError: no candles")
    jobs = store.list_training_jobs(universe_key="u")
    assert [(j.id, j.status, j.configuration_id, j.error) for j in jobs] == [
        (ok, "succeeded", cfg.id, None),
        (failed, "failed", None, "ValueError: no candles"),
    ]
    assert jobs[0].settings == {"trials": 50} and jobs[0].orchestrator_run_id == "r1"
    assert all(j.finished_at is not None and j.finished_at >= j.started_at for j in jobs)
    with pytest.raises(LookupError, match="no training job with id"):
        store.record_job_end(10_000, status="failed")


# -- URLs -----------------------------------------------------------------------------------------


def test_database_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("QUANT_HOME", str(tmp_path))
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    assert resolve_database_url() == f"sqlite:///{tmp_path / 'configurations.db'}"
    monkeypatch.setenv(DATABASE_URL_ENV, "sqlite:////srv/from-env.db")
    assert resolve_database_url() == "sqlite:////srv/from-env.db"
    assert resolve_database_url("sqlite:////srv/explicit.db") == "sqlite:////srv/explicit.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://quant:pw@db:5432/quant", "postgresql+psycopg2://quant:pw@db:5432/quant"),
        ("postgres://quant@db/quant", "postgresql+psycopg2://quant@db/quant"),
        ("postgresql+psycopg2://quant@db/quant", "postgresql+psycopg2://quant@db/quant"),
    ],
)
def test_bare_postgres_urls_use_psycopg2(given: str, expected: str) -> None:
    assert resolve_database_url(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "not a url", "mysql://u@h/db", "postgresql://db-host"])
def test_unusable_database_url_names_the_variable(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=f"{DATABASE_URL_ENV}.*postgresql\\+psycopg2://"):
        resolve_database_url(bad)
    monkeypatch.setenv(DATABASE_URL_ENV, bad)
    with pytest.raises(ValueError, match=DATABASE_URL_ENV):
        ConfigurationStore(migrate=False)


def test_password_is_not_shown() -> None:
    s = ConfigurationStore("postgresql://quant:s3cr3t-pw@db.example:5432/quant", migrate=False)  # no connection made
    try:
        for text in (repr(s), str(s), s.url):
            assert "s3cr3t-pw" not in text and "db.example" in text
    finally:
        s.dispose()
