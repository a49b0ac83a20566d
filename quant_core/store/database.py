"""Database URLs, engines and migrations for the configuration store.

Why this module exists: the same store runs embedded (SQLite file under $QUANT_HOME, zero set-up)
and shared (PostgreSQL). The differences that matter for correctness live here, in one place:

- URL resolution: explicit > $QUANT_DATABASE_URL > embedded SQLite; bare ``postgresql://`` is pinned
  to psycopg2, the driver we ship.
- SQLite write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the
  database lock (busy timeout) instead of failing half-way with "database is locked".
- Migrations run inside one transaction that holds a lock (SQLite write lock, PostgreSQL advisory
  lock), so two processes opening a fresh database at once do not race on ``CREATE TABLE``.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

import quant_core
from quant_core.paths import quant_home

DATABASE_URL_ENV = "QUANT_DATABASE_URL"
#: Alembic script location: the top-level `sql/` folder of the checkout (the project installs editable).
MIGRATIONS_DIR = Path(quant_core.__file__).resolve().parent.parent / "sql"
SQLITE_BUSY_TIMEOUT_MS = 60_000
_EXAMPLE_URL = "postgresql+psycopg2://user:password@localhost:5432/quant"
_SUPPORTED_BACKENDS = ("sqlite", "postgresql")
#: Execution option read by the SQLite "begin" hook: True -> BEGIN IMMEDIATE (take the write lock now).
SQLITE_IMMEDIATE = "quant_sqlite_immediate"


def default_database_url() -> str:
    """The embedded store: a SQLite file in the state directory."""
    return f"sqlite:///{quant_home() / 'configurations.db'}"


def _invalid(raw: str, why: str) -> ValueError:
    return ValueError(
        f"invalid database URL {raw!r} ({why}). Pass a SQLAlchemy URL or set {DATABASE_URL_ENV}, "
        f"e.g. {DATABASE_URL_ENV}={_EXAMPLE_URL} or sqlite:////absolute/path/configurations.db; "
        f"leave {DATABASE_URL_ENV} unset for the embedded SQLite store"
    )


def _parse(url: str | None) -> URL:
    """Resolve and validate, returning a SQLAlchemy URL object (keeps the password intact)."""
    raw = url if url is not None else os.environ.get(DATABASE_URL_ENV)
    if raw is None:
        raw = default_database_url()
    raw = raw.strip()
    if not raw:
        raise _invalid(raw, "it is empty")
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    # Heroku-style postgres:// and bare postgresql://: SQLAlchemy 2.1 would pick psycopg 3, which we don't ship.
    if scheme in ("postgres", "postgresql"):
        raw = "postgresql+psycopg2://" + raw.split("://", 1)[1]
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise _invalid(raw, str(exc)) from None
    if parsed.get_backend_name() not in _SUPPORTED_BACKENDS:
        raise _invalid(raw, f"backend {parsed.get_backend_name()!r} is not one of {', '.join(_SUPPORTED_BACKENDS)}")
    if parsed.get_backend_name() == "postgresql" and not parsed.database:
        raise _invalid(raw, "no database name")
    return parsed


def resolve_database_url(url: str | None = None) -> str:
    """The URL the store connects to: explicit argument > $QUANT_DATABASE_URL > embedded SQLite file.

    Raises ValueError (naming QUANT_DATABASE_URL, with an example) for an empty or unusable URL.
    """
    return _parse(url).render_as_string(hide_password=False)


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ***: safe for logs, metadata and repr."""
    return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)


def make_engine(url: str | None = None) -> Engine:
    """An engine with the store's conventions (strict JSON, SQLite locking and foreign keys)."""
    parsed = _parse(url)
    # allow_nan=False: NaN/inf are not JSON; a last line of defence behind the store's own validation.
    kwargs: dict[str, Any] = {"json_serializer": partial(json.dumps, allow_nan=False)}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        _install_sqlite_hooks(engine, in_memory=not database or database == ":memory:")
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _install_sqlite_hooks(engine: Engine, *, in_memory: bool) -> None:
    """Let SQLAlchemy, not pysqlite, decide when transactions begin (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite: no implicit BEGIN; our "begin" hook emits it
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                # WAL: readers (Dagster UI, CLI) never block the writer and vice versa.
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock (same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def lock_for_write(conn: Connection, name: str) -> None:
    """Serialise writers of `name` until the transaction ends (PostgreSQL); SQLite already holds the write lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_lock_key(name)})


def alembic_config(connection: Connection | None = None, url: str | None = None):
    """Alembic configuration for the `sql/` scripts, optionally bound to an open connection."""
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").exists():
        raise FileNotFoundError(
            f"migration scripts not found at {MIGRATIONS_DIR}; the store needs the checkout's sql/ folder "
            "(install the project in editable mode: pip install -e .)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["database_url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """`alembic upgrade head` in one locked transaction: idempotent and safe to run from many processes."""
    from alembic import command

    with engine.connect().execution_options(**{SQLITE_IMMEDIATE: True}) as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite rebuilds a table to alter it (batch mode): dropping the old copy would cascade into the tables
            # that reference it. Foreign keys can only be switched off outside a transaction, on the raw connection.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                lock_for_write(conn, "quant_core.store:migrations")
                command.upgrade(alembic_config(conn), "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows with broken references: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def head_revision() -> str:
    """The newest migration in `sql/versions` (what a migrated database's alembic_version holds)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration found under {MIGRATIONS_DIR / 'versions'}")
    return head


OPTUNA_SCHEMA = "optuna"


def optuna_storage_url(url: str | None = None) -> str:
    """Where a study shared by several training steps lives, beside the store: PostgreSQL, the store's database in
    its own schema `optuna` (created here); SQLite, the file `optuna.db` beside the store's file (one machine).
    Optuna keeps its own tables and its own alembic_version, which must not meet the store's."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError("a study shared between steps needs a database file or server, not an in-memory "
                             f"store: set {DATABASE_URL_ENV} (or optuna_settings.storage.url)")
        return f"sqlite:///{Path(database).expanduser().resolve().parent / 'optuna.db'}"
    engine = create_engine(parsed)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
    finally:
        engine.dispose()
    return parsed.update_query_dict({"options": f"-csearch_path={OPTUNA_SCHEMA}"}).render_as_string(
        hide_password=False)
