"""The configuration store: immutable versions, their lifecycle events, forward records and training jobs.

Guarantees (see the architecture's "idempotent, auditable writes"):

- A version is never edited. A rerun of a window that produced the same version writes nothing; one that
  produced different parameters or evidence is a new revision of the window.
- Stage and live status are `lifecycle_events`; the live timeline's events and forward records of a universe
  are rewritten together in one transaction (`write_timeline`), so a reader never sees half a day.
- Concurrent writers of one universe are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
  transaction-scoped advisory lock per universe).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from quant_core.lifecycle import LifecycleStage
from quant_core.signs import natural_stored_metrics
from quant_core.store.database import (
    SQLITE_IMMEDIATE,
    lock_for_write,
    make_engine,
    redact_url,
    resolve_database_url,
    upgrade_to_head,
)
from quant_core.store.jobs import TrainingJobs
from quant_core.store.live_records import LiveRecords, to_event
from quant_core.store.models import CONFIGURATION_KEY, configurations_table, events_table
from quant_core.store.records import (
    WINDOW_FIELDS,
    LifecycleEventRecord,
    NewConfiguration,
    StoredConfiguration,
    as_utc,
    parse_stage,
    strict_json,
)

_JSON_FIELDS = ("parameters", "metrics", "stage_evidence", "run_spec", "circuit_breakers")
_TEXT_FIELDS = ("universe_key", "strategy", "method", "timeframe", "data_hash", "code_version")
#: Bookkeeping that does not make two versions of a window different.
_NOT_CONTENT = ("orchestrator_run_id",)


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any, field_name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{field_name}: expected a non-empty string, got {value!r}")
    return str(value)


def _integer(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{field_name}: expected an integer, got {value!r}")
    try:
        return operator.index(value)  # int and numpy integers; floats are refused rather than truncated
    except TypeError:
        raise ValueError(f"{field_name}: expected an integer, got {type(value).__name__} {value!r}") from None


def _string_list(value: Any, field_name: str) -> list[str]:
    items = strict_json(value, field_name)
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{field_name}: expected a list of strings, got {value!r}")
    return items


def configuration_values(cfg: NewConfiguration) -> dict[str, Any]:
    """Column values for `cfg`, validated: ValueError names the field for anything that cannot be stored."""
    if not isinstance(cfg, NewConfiguration):
        raise TypeError(f"expected a NewConfiguration, got {type(cfg).__name__}")
    values: dict[str, Any] = {name: _text(getattr(cfg, name), name) for name in _TEXT_FIELDS}
    values["exchanges"] = _string_list(cfg.exchanges, "exchanges")
    values["symbols"] = _string_list(cfg.symbols, "symbols")
    for name in _JSON_FIELDS:
        data = strict_json(getattr(cfg, name), name)
        if not isinstance(data, dict):
            raise ValueError(f"{name}: expected a dict, got {type(getattr(cfg, name)).__name__}")
        values[name] = data
    values["lifecycle_stage"] = parse_stage(cfg.lifecycle_stage).value
    values["stage_reason"] = _text(cfg.stage_reason, "stage_reason", allow_empty=True)
    values["sample_size"] = _integer(cfg.sample_size, "sample_size")
    if values["sample_size"] < 0:
        raise ValueError(f"sample_size must be >= 0, got {values['sample_size']}")
    values["seed"] = _integer(cfg.seed, "seed")
    for name in WINDOW_FIELDS:
        values[name] = as_utc(getattr(cfg, name), name)
    if cfg.orchestrator_run_id is not None:
        values["orchestrator_run_id"] = _text(cfg.orchestrator_run_id, "orchestrator_run_id")
    else:
        values["orchestrator_run_id"] = None
    values["environment"] = None
    if cfg.environment is not None:
        values["environment"] = strict_json(cfg.environment, "environment")
        if not isinstance(values["environment"], dict):
            raise ValueError(f"environment: expected a dict or None, got {type(cfg.environment).__name__}")
    return values


def _insert_event(conn: Connection, **values: Any) -> None:
    """Append one lifecycle event (inside the transaction that writes what it describes)."""
    conn.execute(sa.insert(events_table).values(**values))


def _to_configuration(row: Mapping[str, Any]) -> StoredConfiguration:
    data = dict(row)
    data["lifecycle_stage"] = LifecycleStage(data["lifecycle_stage"])
    # versions stored before natural signs are converted on read (immutable rows are not rewritten)
    data["metrics"] = natural_stored_metrics(data["metrics"], data.get("run_spec"))
    return StoredConfiguration(**data)


class ConfigurationStore(LiveRecords, TrainingJobs):
    """Trained configurations, their lifecycle events and training jobs (quant_core.store.jobs: recorded, beaten,
    reconciled when their run died) in SQLite or PostgreSQL.

    `url`: explicit > $QUANT_DATABASE_URL > embedded SQLite under $QUANT_HOME.
    `migrate`: bring the schema to the newest migration first (idempotent; safe from many processes).
    """

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self._url = resolve_database_url(url)
        self._engine = make_engine(self._url)
        if migrate:
            self.migrate()

    @property
    def url(self) -> str:
        """The resolved database URL with any password masked (it ends up in logs and run metadata)."""
        return redact_url(self._url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for ad-hoc queries; writes should go through the store's methods)."""
        return self._engine

    def __repr__(self) -> str:
        return f"ConfigurationStore(url={self.url!r})"

    def __enter__(self) -> ConfigurationStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def migrate(self) -> None:
        """`alembic upgrade head` on this store's database."""
        upgrade_to_head(self._engine)

    def dispose(self) -> None:
        """Close pooled connections (call when done; a SQLite file stays locked by open connections otherwise)."""
        self._engine.dispose()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(**{SQLITE_IMMEDIATE: True})
            with conn.begin():
                yield conn

    # -- configurations ---------------------------------------------------------------------------

    def add_version(self, cfg: NewConfiguration) -> StoredConfiguration:
        """Write `cfg` as an immutable version and its 'created' event, in one transaction.

        Idempotent: a rerun of a window that produced the same version (same parameters, evidence, data hash,
        seed, code and numerical environment) returns the stored one and writes nothing; a rerun that produced
        something else is a new revision of that window. Nothing already stored is edited.
        """
        values = configuration_values(cfg)
        t = configurations_table
        with self._transaction(write=True) as conn:
            lock_for_write(conn, f"quant_core.store:universe:{values['universe_key']}")
            key_filter = [t.c[name] == values[name] for name in CONFIGURATION_KEY]
            same_window = conn.execute(sa.select(t).where(*key_filter).order_by(t.c.revision)).mappings().all()
            for row in same_window:
                if all(row[k] == values[k] for k in values if k not in _NOT_CONTENT):
                    return _to_configuration(row)
            now = _now()
            revision = 1 + max((row["revision"] for row in same_window), default=0)
            config_id = conn.execute(sa.insert(t).values(**values, revision=revision, created_at=now,
                                                         updated_at=now)).inserted_primary_key[0]
            _insert_event(conn, configuration_id=config_id, universe_key=values["universe_key"], kind="created",
                          from_stage=None, to_stage=values["lifecycle_stage"], reason=values["stage_reason"],
                          evidence=values["stage_evidence"], at=now, day=values["test_end"])
            row = conn.execute(sa.select(t).where(t.c.id == config_id)).mappings().one()
        return _to_configuration(row)

    def get_configuration(self, config_id: int) -> StoredConfiguration | None:
        """The configuration with this id, or None."""
        t = configurations_table
        with self._transaction(write=False) as conn:
            row = conn.execute(sa.select(t).where(t.c.id == config_id)).mappings().one_or_none()
        return None if row is None else _to_configuration(row)

    def list_configurations(
        self, *, universe_key: str | None = None, stage: LifecycleStage | str | None = None
    ) -> list[StoredConfiguration]:
        """Configurations ordered by id (oldest first), optionally for one universe and/or stage."""
        t = configurations_table
        query = sa.select(t).order_by(t.c.id)
        if universe_key is not None:
            query = query.where(t.c.universe_key == universe_key)
        if stage is not None:
            query = query.where(t.c.lifecycle_stage == parse_stage(stage, "stage").value)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [_to_configuration(r) for r in rows]

    def lifecycle_events(self, config_id: int) -> list[LifecycleEventRecord]:
        """The stage history of one configuration, oldest first (empty for an unknown id)."""
        e = events_table
        query = sa.select(e).where(e.c.configuration_id == config_id).order_by(e.c.id)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [to_event(r) for r in rows]
