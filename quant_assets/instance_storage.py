"""The embedded Dagster home's event log: Dagster's run-sharded SQLite layout, written with pooled connections.

Dagster's `SqliteEventLogStorage` opens a new SQLAlchemy engine for every event it stores and disposes of it
afterwards, so each event pays an engine, a connection, SQL compiled afresh (the compiled-statement cache lives
on the engine) and a synchronous commit, twice for asset events (run shard and index shard). Candles are
partitioned per (market, day): landing the pool universe's lookback writes ~2,600 events, which took 56 s of a
59 s run (profiled, 2 cores). This subclass keeps one engine per shard (the index shard plus the few run shards
in use), with SQLite's WAL + `synchronous=NORMAL` (a commit survives a crash of the process, as before; on a
power cut the last transactions may be lost — acceptable for a local home, not the storage for a deployment,
which uses PostgreSQL). Same files and schema as Dagster's, so a home works with either class.

Used only in the dagster.yaml the demo writes for a new home (`quant_assets.demo.ensure_dagster_home`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import create_engine
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_SECONDS = 30  # as Dagster's own SQLite storages wait on a locked file
OPEN_RUN_SHARDS = 4  # run shards kept open besides the index: a run writes to one, the UI reads a few


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Run-sharded SQLite event log with one pooled engine per open shard (see the module's docstring)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():  # a forked child must not share the parent's connections
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines.clear()
            self._engines_pid = os.getpid()
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(self.conn_string_for_shard(shard), pool_size=1, max_overflow=4,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        db.event.listen(engine, "connect", _pragmas)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        runs = [s for s in self._engines if s != INDEX_SHARD_NAME]
        for old in runs[:-OPEN_RUN_SHARDS]:
            self._engines.pop(old).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:  # type: ignore[override]
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn
            if shard != INDEX_SHARD_NAME:
                # Dagster's watcher (the UI following a run's log) waits for the shard file to change; with the
                # connection kept open the write sits in the WAL file, so mark the shard changed (a checkpoint
                # per event would do the same at the cost of a sync: 6 s more over 2,600 events)
                os.utime(self.path_for_shard(shard))

    def wipe(self) -> None:
        self._close_engines()
        super().wipe()

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()

    def _close_engines(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
