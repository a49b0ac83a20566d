"""The store's side of the live timeline: forward records, derived lifecycle events and champion comparisons.

Why one write for a universe's records and events (`write_timeline`): the timeline is derived from versions
and data (quant_core.live), so each sync rewrites what it derived; readers see the whole of one sync or the
whole of the previous one. Events are replaced only from the first one that differs from what is stored, so
an in-order day appends and a replay that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from quant_core.lifecycle import LifecycleStage
from quant_core.store.database import lock_for_write
from quant_core.store.models import FORWARD_ROLES, comparisons_table, events_table, forward_table
from quant_core.store.records import (
    Comparison,
    ForwardRecord,
    LifecycleEventRecord,
    TimelineEvent,
    as_utc,
    strict_json,
)

DERIVED_KINDS = ("stage", "live", "off", "candidate", "trip", "pause")


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct (both offer on_conflict_do_update with the same signature)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the configuration store supports sqlite and postgresql, not {conn.dialect.name}")


def to_event(row: Mapping[str, Any]) -> LifecycleEventRecord:
    data = dict(row)
    data["from_stage"] = LifecycleStage(data["from_stage"]) if data["from_stage"] is not None else None
    data["to_stage"] = LifecycleStage(data["to_stage"]) if data["to_stage"] is not None else None
    return LifecycleEventRecord(**data)


def _event_key(e: LifecycleEventRecord) -> tuple:
    return (e.configuration_id, e.kind, e.day, e.from_stage.value if e.from_stage else None,
            e.to_stage.value if e.to_stage else None, e.reason, e.evidence)


def _record_values(r: ForwardRecord, now: datetime) -> dict[str, Any]:
    if r.role not in FORWARD_ROLES:
        raise ValueError(f"role: {r.role!r} is not one of {FORWARD_ROLES}")
    values = {
        "configuration_id": int(r.configuration_id), "universe_key": r.universe_key, "day": as_utc(r.day, "day"),
        "role": r.role, "n_trades": int(r.n_trades), "data_hash": r.data_hash, "computed_at": now,
        "trades": strict_json(list(r.trades), "trades"), "readings": strict_json(dict(r.readings), "readings"),
    }
    for name in ("log_return", "value", "benchmark_log_return"):
        values[name] = strict_json(float(getattr(r, name)), f"forward record {r.day:%Y-%m-%d} {name}")
    return values


class LiveRecords:
    """Mixed into ConfigurationStore (which provides `_transaction`)."""

    def _transaction(self, *, write: bool) -> AbstractContextManager[Connection]:  # pragma: no cover - provided
        raise NotImplementedError

    def write_timeline(self, universe_key: str, records: list[ForwardRecord], events: list[TimelineEvent]) -> None:
        """Make the universe's forward records equal `records` (one per version and day: rewritten in place,
        and a record the timeline no longer derives — a version no longer tracked that day — removed) and its
        derived events equal `events` (in order), in one transaction."""
        now = datetime.now(UTC)
        rows = [_record_values(r, now) for r in records]
        new_keys = [e.key() for e in events]
        with self._transaction(write=True) as conn:
            lock_for_write(conn, f"quant_core.store:universe:{universe_key}")
            f = forward_table
            keep = {(r["configuration_id"], r["day"]) for r in rows}
            stored = conn.execute(sa.select(f.c.id, f.c.configuration_id, f.c.day)
                                  .where(f.c.universe_key == universe_key)).all()
            gone = [r.id for r in stored if (r.configuration_id, as_utc(r.day, "day")) not in keep]
            for i in range(0, len(gone), 500):
                conn.execute(sa.delete(f).where(f.c.id.in_(gone[i:i + 500])))
            refreshed = [c.name for c in f.columns if c.name not in ("id", "configuration_id", "day")]
            for i in range(0, len(rows), 500):  # SQLite caps the bound variables of one statement
                stmt = dialect_insert(conn, f).values(rows[i:i + 500])
                conn.execute(stmt.on_conflict_do_update(index_elements=[f.c.configuration_id, f.c.day],
                                                        set_={c: stmt.excluded[c] for c in refreshed}))
            stored = self._derived_events(conn, universe_key)
            same = 0
            while same < min(len(stored), len(new_keys)) and _event_key(stored[same]) == new_keys[same]:
                same += 1
            stale = [e.id for e in stored[same:]]
            if stale:
                conn.execute(sa.delete(events_table).where(events_table.c.id.in_(stale)))
            for e in events[same:]:
                conn.execute(sa.insert(events_table).values(
                    configuration_id=e.configuration_id, universe_key=universe_key, kind=e.kind,
                    day=as_utc(e.day, "day"), from_stage=e.from_stage.value if e.from_stage else None,
                    to_stage=e.to_stage.value if e.to_stage else None, reason=e.reason,
                    evidence=strict_json(dict(e.evidence), "evidence"), at=now))

    @staticmethod
    def _derived_events(conn: Connection, universe_key: str) -> list[LifecycleEventRecord]:
        e = events_table
        query = (sa.select(e).where(e.c.universe_key == universe_key, e.c.kind.in_(DERIVED_KINDS))
                 .order_by(e.c.id))
        return [to_event(r) for r in conn.execute(query).mappings().all()]

    def timeline_events(self, universe_key: str) -> list[LifecycleEventRecord]:
        """Every event of the universe's versions (created and derived), in the order they were written."""
        e = events_table
        with self._transaction(write=False) as conn:
            rows = conn.execute(sa.select(e).where(e.c.universe_key == universe_key).order_by(e.c.id)).mappings()
            return [to_event(r) for r in rows.all()]

    def forward_records(self, universe_key: str, configuration_id: int | None = None) -> list[ForwardRecord]:
        """The universe's forward records ordered by day, then version (optionally for one version)."""
        f = forward_table
        query = sa.select(f).where(f.c.universe_key == universe_key).order_by(f.c.day, f.c.configuration_id)
        if configuration_id is not None:
            query = query.where(f.c.configuration_id == configuration_id)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        fields = set(ForwardRecord.__dataclass_fields__)
        return [ForwardRecord(**{k: v for k, v in r.items() if k in fields}) for r in rows]

    def comparison(self, challenger_id: int, champion_id: int) -> Comparison | None:
        c = comparisons_table
        with self._transaction(write=False) as conn:
            row = conn.execute(sa.select(c).where(c.c.challenger_id == challenger_id,
                                                  c.c.champion_id == champion_id)).mappings().one_or_none()
        if row is None:
            return None
        fields = set(Comparison.__dataclass_fields__)
        return Comparison(**{k: v for k, v in row.items() if k in fields})

    def write_comparison(self, comparison: Comparison) -> None:
        """Store a comparison once (a pair's returns on its window are a fact; a second write changes nothing)."""
        c = comparisons_table
        values = {
            "challenger_id": comparison.challenger_id, "champion_id": comparison.champion_id,
            "window_start": as_utc(comparison.window_start, "window_start"),
            "window_end": as_utc(comparison.window_end, "window_end"),
            "challenger_log_returns": strict_json(list(comparison.challenger_log_returns), "challenger_log_returns"),
            "champion_log_returns": strict_json(list(comparison.champion_log_returns), "champion_log_returns"),
            "computed_at": datetime.now(UTC),
        }
        with self._transaction(write=True) as conn:
            conn.execute(dialect_insert(conn, c).values(**values).on_conflict_do_nothing(
                index_elements=[c.c.challenger_id, c.c.champion_id]))
