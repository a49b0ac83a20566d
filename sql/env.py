"""Alembic environment for the configuration store.

The store calls Alembic with an open, locked connection (`cfg.attributes["connection"]`); run by hand
(`alembic -c sql/alembic.ini ...`) it connects to $QUANT_DATABASE_URL or the embedded SQLite file and takes
the same lock, so a manual upgrade cannot race a process that migrates on start-up.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from quant_core.store.database import SQLITE_IMMEDIATE, lock_for_write, make_engine, resolve_database_url
from quant_core.store.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    return config.attributes.get("database_url") or resolve_database_url(config.get_main_option("sqlalchemy.url"))


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the DDL instead of running it."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: autogenerate batch (copy-and-move) operations for it.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect().execution_options(**{SQLITE_IMMEDIATE: True}) as conn, conn.begin():
            lock_for_write(conn, "quant_core.store:migrations")
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
