"""The configuration store: idempotent, audited writes of trained configurations.

Guarantees (see the architecture's "idempotent, auditable writes"):

- One row per (universe_key, method, train/test window): a rerun updates the row in place.
- Every stage change is a `lifecycle_events` row written in the same transaction as the change.
- A newer window supersedes older ones of the same universe (RETIRED, `superseded_by`, event).
- Concurrent writers of one universe are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
  transaction-scoped advisory lock per universe), and the row write itself is an
  INSERT ... ON CONFLICT DO UPDATE, so the end state is one row whatever the interleaving.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite

from quant_core.lifecycle import LifecycleStage
from quant_core.store.database import (
    SQLITE_IMMEDIATE,
    lock_for_write,
    make_engine,
    redact_url,
    resolve_database_url,
    upgrade_to_head,
)
from quant_core.store.models import CONFIGURATION_KEY, configurations_table, events_table, jobs_table
from quant_core.store.records import (
    WINDOW_FIELDS,
    LifecycleEventRecord,
    NewConfiguration,
    StoredConfiguration,
    TrainingJobRecord,
    as_utc,
    parse_stage,
    strict_json,
)

_JSON_FIELDS = ("parameters", "metrics", "stage_evidence", "run_spec", "circuit_breakers")
_TEXT_FIELDS = ("universe_key", "strategy", "method", "timeframe", "data_hash", "code_version")
_STAGE_FIELDS = ("lifecycle_stage", "stage_reason", "stage_evidence")
_ONE_TICK = timedelta(microseconds=1)


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
    return values


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct (both offer on_conflict_do_update with the same signature)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the configuration store supports sqlite and postgresql, not {conn.dialect.name}")


def _insert_event(
    conn: Connection,
    configuration_id: int,
    from_stage: str | None,
    to_stage: str,
    reason: str,
    evidence: Mapping[str, Any],
    at: datetime,
) -> None:
    """Append one lifecycle event (always inside the transaction that changes the stage)."""
    conn.execute(
        sa.insert(events_table).values(
            configuration_id=configuration_id,
            from_stage=from_stage,
            to_stage=to_stage,
            reason=reason,
            evidence=strict_json(dict(evidence), "evidence"),
            at=at,
        )
    )


def _to_configuration(row: Mapping[str, Any]) -> StoredConfiguration:
    data = dict(row)
    data["lifecycle_stage"] = LifecycleStage(data["lifecycle_stage"])
    return StoredConfiguration(**data)


def _to_event(row: Mapping[str, Any]) -> LifecycleEventRecord:
    data = dict(row)
    data["from_stage"] = LifecycleStage(data["from_stage"]) if data["from_stage"] is not None else None
    data["to_stage"] = LifecycleStage(data["to_stage"])
    return LifecycleEventRecord(**data)


class ConfigurationStore:
    """Trained configurations, their lifecycle events and training jobs in SQLite or PostgreSQL.

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

    def upsert_configuration(self, cfg: NewConfiguration) -> StoredConfiguration:
        """Insert `cfg`, or refresh the row with the same key in place; stage changes become events.

        All in one transaction: either the row, its events and any supersession are written, or nothing.
        A configuration already superseded by a newer window stays RETIRED when its window is rerun
        (its other fields are refreshed), so reruns never resurrect stale parameters.
        """
        values = configuration_values(cfg)
        t = configurations_table
        with self._transaction(write=True) as conn:
            lock_for_write(conn, f"quant_core.store:universe:{values['universe_key']}")
            key_filter = [t.c[name] == values[name] for name in CONFIGURATION_KEY]
            existing = conn.execute(sa.select(t).where(*key_filter)).mappings().one_or_none()
            now = _now()
            # updated_at must advance on every rerun, even if the wall clock stepped back.
            updated_at = now if existing is None else max(now, existing["updated_at"] + _ONE_TICK)
            refresh = [name for name in values if name not in CONFIGURATION_KEY]
            frozen_stage = existing is not None and existing["superseded_by"] is not None
            if frozen_stage:
                refresh = [name for name in refresh if name not in _STAGE_FIELDS]
            stmt = _dialect_insert(conn, t).values(**values, created_at=now, updated_at=updated_at)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.c[name] for name in CONFIGURATION_KEY],
                set_={**{name: stmt.excluded[name] for name in refresh}, "updated_at": updated_at},
            ).returning(t.c.id)
            config_id = conn.execute(stmt).scalar_one()

            new_stage = values["lifecycle_stage"]
            if existing is None:
                _insert_event(conn, config_id, None, new_stage, values["stage_reason"], values["stage_evidence"], now)
                self._supersede(conn, config_id, values, now)
            elif not frozen_stage and existing["lifecycle_stage"] != new_stage:
                _insert_event(
                    conn,
                    config_id,
                    existing["lifecycle_stage"],
                    new_stage,
                    values["stage_reason"],
                    values["stage_evidence"],
                    now,
                )
            row = conn.execute(sa.select(t).where(t.c.id == config_id)).mappings().one()
        return _to_configuration(row)

    @staticmethod
    def _supersede(conn: Connection, new_id: int, values: Mapping[str, Any], now: datetime) -> None:
        """Newest window wins: retire older live windows of the universe, or the new row if a later one exists.

        Handling both directions makes the end state independent of the order windows are written in
        (a backfill that writes an old window after a new one does not bring the old one back).
        """
        t = configurations_table
        others = conn.execute(
            sa.select(t.c.id, t.c.train_end, t.c.lifecycle_stage).where(
                t.c.universe_key == values["universe_key"], t.c.id != new_id
            )
        ).all()
        new_end = values["train_end"]
        for other in others:
            if other.train_end < new_end and other.lifecycle_stage != LifecycleStage.RETIRED.value:
                _retire_superseded(conn, other.id, other.lifecycle_stage, new_id, now)
        later = [o for o in others if o.train_end > new_end]
        if later and values["lifecycle_stage"] != LifecycleStage.RETIRED.value:
            newest = max(later, key=lambda o: (o.train_end, o.id))
            _retire_superseded(conn, new_id, values["lifecycle_stage"], newest.id, now)

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
        return [_to_event(r) for r in rows]

    # -- training jobs ----------------------------------------------------------------------------

    def record_job_start(
        self, *, universe_key: str, method: str, settings: dict, orchestrator_run_id: str | None
    ) -> int:
        """Record a training run as 'running' before it starts, so failed runs leave a trace too."""
        row = {
            "universe_key": _text(universe_key, "universe_key"),
            "method": _text(method, "method"),
            "settings": strict_json(dict(settings), "settings"),
            "orchestrator_run_id": orchestrator_run_id,
            "status": "running",
            "started_at": _now(),
        }
        with self._transaction(write=True) as conn:
            result = conn.execute(sa.insert(jobs_table).values(**row))
            job_id = result.inserted_primary_key[0]
        return int(job_id)

    def record_job_end(
        self, job_id: int, *, status: str, error: str | None = None, configuration_id: int | None = None
    ) -> None:
        """Close a training run with its outcome; LookupError for an unknown job id."""
        j = jobs_table
        update = (
            sa.update(j)
            .where(j.c.id == job_id)
            .values(
                status=_text(status, "status"),
                error=error,
                configuration_id=configuration_id,
                finished_at=_now(),
            )
        )
        with self._transaction(write=True) as conn:
            if conn.execute(update).rowcount == 0:
                raise LookupError(f"no training job with id {job_id}; record_job_start returns the id to use")

    def list_training_jobs(self, *, universe_key: str | None = None) -> list[TrainingJobRecord]:
        """Recorded training runs ordered by id, optionally for one universe."""
        j = jobs_table
        query = sa.select(j).order_by(j.c.id)
        if universe_key is not None:
            query = query.where(j.c.universe_key == universe_key)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [TrainingJobRecord(**dict(r)) for r in rows]


def _retire_superseded(conn: Connection, config_id: int, from_stage: str, by_id: int, now: datetime) -> None:
    reason = f"superseded by configuration {by_id}"
    t = configurations_table
    conn.execute(
        sa.update(t)
        .where(t.c.id == config_id)
        .values(
            lifecycle_stage=LifecycleStage.RETIRED.value,
            stage_reason=reason,
            superseded_by=by_id,
            updated_at=now,
        )
    )
    _insert_event(conn, config_id, from_stage, LifecycleStage.RETIRED.value, reason, {"superseded_by": by_id}, now)
