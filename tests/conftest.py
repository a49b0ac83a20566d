"""Shared database fixtures: a throw-away PostgreSQL database per test, a SQLite file, and both as `store_url`.

PostgreSQL is the local server (127.0.0.1:5432, user postgres, trust auth; override the admin URL with
$QUANT_TEST_POSTGRES_ADMIN_URL). When it is unreachable, PostgreSQL tests skip locally and fail in CI
(env CI set), so CI can never go green by silently skipping the real database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "QUANT_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


class PostgresServer:
    """Creates and drops throw-away databases on the test server; remembers if the server is unreachable."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.unavailable: str | None = None
        self._engine: sa.Engine | None = None
        try:
            engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            self._engine = engine
        except Exception as exc:  # any failure to connect means "no server" for the tests' purposes
            self.unavailable = (
                f"PostgreSQL not reachable at {self.admin_url.render_as_string(hide_password=True)}: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            )

    def require(self) -> None:
        """Skip (locally) or fail (CI) the calling test when the server is unreachable."""
        if self.unavailable is None:
            return
        if os.environ.get("CI"):
            pytest.fail(f"{self.unavailable} (CI is set: PostgreSQL tests must run, start the server)")
        pytest.skip(self.unavailable)

    def create_database(self) -> str:
        assert self._engine is not None
        name = f"quant_test_{secrets.token_hex(6)}"
        with self._engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        assert self._engine is not None
        name = make_url(url).database
        with self._engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One connection check per session (not one connect timeout per test)."""
    server = PostgresServer(POSTGRES_ADMIN_URL)
    yield server
    server.dispose()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    postgres_server.require()
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'configurations.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each backend: tests using it run once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture(autouse=True)
def _no_leaked_dagster_state_storage() -> Iterator[None]:
    """Fail the test that leaves Dagster's current defs-state storage set (an instance entered and never exited,
    e.g. an unclosed schedule context): every later definitions load would then fail with "Attempted to resolve
    undefined DagsterInstance weakref", far from the cause. The storage is cleared so later tests are unaffected."""
    yield
    try:
        from dagster._core.storage.defs_state.base import _current_storage
    except ImportError:  # a Dagster without defs-state storage has nothing to leak
        return
    leaked = _current_storage.get()
    if leaked is not None:
        _current_storage.set(None)
        pytest.fail(f"this test left Dagster's defs-state storage set ({type(leaked).__name__}): enter schedule and "
                    "sensor contexts and instances with `with` so they are closed")


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_kernels_after_each_module() -> Iterator[None]:
    """Every compiled XLA kernel keeps a few memory mappings of JIT code alive for as long as JAX caches it; over the
    whole suite (one process) they passed 15,900 mappings by a fifth of the way and the kernel's per-process limit
    (vm.max_map_count, 65,530) near the end, where the next compile aborted the process inside XLA (CI exit 134 in
    test_hessian_trace). Kernels are not shared between modules, so their caches are dropped after each."""
    yield
    import sys

    if "jax" in sys.modules:
        import gc

        import jax

        jax.clear_caches()
        gc.collect()


@pytest.fixture(autouse=True)
def _no_persistent_jax_cache_between_tests() -> Iterator[None]:
    """The Dagster assets turn JAX's persistent compilation cache on for their process (quant_core.jax_cache);
    in the test process that would leak into every later test, writing each compiled kernel into a temporary
    state directory of an earlier test (in the full suite the Hessian-trace training then aborted the process in
    the cache write). Each test that turned it on has it turned off again."""
    yield
    import sys

    if "jax" not in sys.modules:
        return
    import jax

    if jax.config.jax_compilation_cache_dir:
        from jax._src import compilation_cache

        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()
