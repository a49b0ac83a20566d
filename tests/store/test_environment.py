"""Every stored version records the numerical environment it was trained on (migration 0004): the versions of
jax, jaxlib, numpy, scipy, optax, optuna and Python, and the JAX backend and device, beside its data hash, code
version and seed; on SQLite and PostgreSQL. Versions stored before it load and export as "not recorded"."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.metadata import version

import jax
import sqlalchemy as sa
from alembic import command
from store.test_store import make_config

from quant_core.cli import main
from quant_core.provenance import NOT_RECORDED, NUMERICAL_PACKAGES, numerical_environment
from quant_core.store import ConfigurationStore
from quant_core.store.database import alembic_config, make_engine

GPU_RUN = {"jax": "0.10.2", "jaxlib": "0.10.2", "numpy": "2.4.6", "scipy": "1.17.1", "optax": "0.2.8",
           "optuna": "5.1.0", "python": "3.11.7", "backend": "gpu", "device": "NVIDIA H200"}


def test_numerical_environment_names_the_stack_and_the_backend() -> None:
    env = numerical_environment()
    assert set(NUMERICAL_PACKAGES) == {"jax", "jaxlib", "numpy", "scipy", "optax", "optuna"}
    assert {name: env[name] for name in NUMERICAL_PACKAGES} == {name: version(name) for name in NUMERICAL_PACKAGES}
    assert env["backend"] == jax.default_backend() in ("cpu", "gpu", "tpu")
    assert env["device"] == jax.devices()[0].device_kind and env["python"].count(".") == 2


def test_environment_round_trips_and_is_part_of_the_version(store_url: str) -> None:
    with ConfigurationStore(store_url) as store:
        here = store.add_version(make_config(environment=numerical_environment()))
        assert store.get_configuration(here.id).environment == numerical_environment()
        (listed,) = store.list_configurations()
        assert listed.environment == here.environment and listed.data_hash == "sha256:abc123"
        # the same result from the same stack is the same version; from another backend it is a new revision
        assert store.add_version(make_config(environment=numerical_environment())).id == here.id
        gpu = store.add_version(make_config(environment=GPU_RUN))
        assert (gpu.revision, gpu.environment) == (2, GPU_RUN)
        assert store.get_configuration(gpu.id).environment["backend"] == "gpu"


def test_export_shows_the_versions_and_the_backend(store_url: str, capsys) -> None:
    with ConfigurationStore(store_url) as store:
        stored = store.add_version(make_config(environment=numerical_environment()))
    capsys.readouterr()
    assert main(["configs", "export", str(stored.id), "--url", store_url]) == 0
    exported = json.loads(capsys.readouterr().out)
    env = exported["environment"]
    assert {name: env[name] for name in ("jax", "jaxlib", "numpy", "optax", "optuna")} == {
        name: version(name) for name in ("jax", "jaxlib", "numpy", "optax", "optuna")}
    assert env["backend"] == jax.default_backend()
    assert (exported["data_hash"], exported["code_version"], exported["seed"]) == (
        "sha256:abc123", "0.1.0+g1234567", 2**40 + 7)


def test_versions_stored_before_0004_load_and_export_as_not_recorded(store_url: str, capsys) -> None:
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0003")
            now = datetime(2024, 1, 1, tzinfo=UTC).replace(tzinfo=None)
            conn.execute(sa.text(
                "INSERT INTO trained_configurations (universe_key, strategy, method, exchanges, symbols, timeframe, "
                "parameters, metrics, lifecycle_stage, stage_reason, stage_evidence, sample_size, train_start, "
                "train_end, test_start, test_end, data_hash, code_version, seed, run_spec, circuit_breakers, "
                "created_at, updated_at, revision) VALUES ('u', 'momentum', 'optuna', '[]', '[]', '1d', '{}', '{}', "
                "'DISCOVERY', 'r', '{}', 4, :t, :t, :t, :t, 'h', 'c', 1, '{}', '{}', :t, :t, 1)"), {"t": now})
    finally:
        engine.dispose()
    with ConfigurationStore(store_url) as store:  # migrates to head (0004)
        (old,) = store.list_configurations()
        assert old.environment is None and old.code_version == "c"
        new = store.add_version(make_config(universe_key="u", environment=numerical_environment()))
        assert store.get_configuration(new.id).environment == numerical_environment()
    capsys.readouterr()
    assert main(["configs", "export", str(old.id), "--url", store_url]) == 0
    assert json.loads(capsys.readouterr().out)["environment"] == NOT_RECORDED
    assert main(["configs", "export", str(new.id), "--url", store_url]) == 0
    assert json.loads(capsys.readouterr().out)["environment"]["backend"] == jax.default_backend()


def test_downgrade_to_0003_drops_only_the_column(store_url: str) -> None:
    with ConfigurationStore(store_url) as store:
        store.add_version(make_config(environment=numerical_environment()))
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
            columns = {c["name"] for c in sa.inspect(conn).get_columns("trained_configurations")}
            assert "environment" not in columns and {"data_hash", "code_version", "seed"} <= columns
            assert conn.execute(sa.text("SELECT COUNT(*) FROM trained_configurations")).scalar_one() == 1
    finally:
        engine.dispose()
