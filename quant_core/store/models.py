"""SQLAlchemy models of the configuration store (the schema migrations 0001 to 0004 create).

The models describe the schema for the repository's queries and for `alembic revision --autogenerate`;
the migrations under `sql/versions` are what actually creates tables (tests check the two agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from quant_core.lifecycle import LifecycleStage

STAGE_VALUES: tuple[str, ...] = tuple(s.value for s in LifecycleStage)
#: The natural key of a trained configuration: one row per universe, method and data window.
CONFIGURATION_KEY: tuple[str, ...] = ("universe_key", "method", "train_start", "train_end", "test_start", "test_end")
#: What a lifecycle event records: the version was written, its stage changed, it went live / came off live,
#: it was stored as a candidate (with why), a circuit breaker tripped (off live) or paused it.
EVENT_KINDS: tuple[str, ...] = ("created", "stage", "live", "off", "candidate", "trip", "pause")
FORWARD_ROLES: tuple[str, ...] = ("live", "candidate")


def stage_check_sql(column: str, *, nullable: bool = False) -> str:
    """CHECK expression restricting `column` to the lifecycle stages (shared with the migration)."""
    values = ", ".join(f"'{v}'" for v in STAGE_VALUES)
    check = f"{column} IN ({values})"
    return f"{column} IS NULL OR {check}" if nullable else check


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    Why: SQLite has no timezone type and drops tzinfo; PostgreSQL returns the session's zone.
    Values are converted to UTC on write (naive values are refused: their zone is unknown) and
    come back tz-aware UTC on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: give it a timezone (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[str]: sa.JSON()}


class TrainedConfigurationRow(Base):
    """One immutable version: a trained parameter set for one universe and data window, with its evidence and
    the stage it was written with (later stages and live status are lifecycle events)."""

    __tablename__ = "trained_configurations"
    __table_args__ = (
        sa.UniqueConstraint(*CONFIGURATION_KEY, "revision", name="uq_trained_configurations_key"),
        sa.CheckConstraint(stage_check_sql("lifecycle_stage"), name="lifecycle_stage"),
        sa.Index("ix_trained_configurations_universe_stage", "universe_key", "lifecycle_stage"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    universe_key: Mapped[str] = mapped_column(sa.String(255))
    strategy: Mapped[str] = mapped_column(sa.String(255))
    method: Mapped[str] = mapped_column(sa.String(64))
    exchanges: Mapped[list[str]]
    symbols: Mapped[list[str]]
    timeframe: Mapped[str] = mapped_column(sa.String(32))
    parameters: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    lifecycle_stage: Mapped[str] = mapped_column(sa.String(16))
    stage_reason: Mapped[str] = mapped_column(sa.Text)
    stage_evidence: Mapped[dict[str, Any]]
    sample_size: Mapped[int] = mapped_column(sa.Integer)
    train_start: Mapped[datetime]
    train_end: Mapped[datetime]
    test_start: Mapped[datetime]
    test_end: Mapped[datetime]
    data_hash: Mapped[str] = mapped_column(sa.String(128))
    code_version: Mapped[str] = mapped_column(sa.String(255))
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    run_spec: Mapped[dict[str, Any]]
    circuit_breakers: Mapped[dict[str, Any]]
    orchestrator_run_id: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(sa.Integer, server_default="1")
    # migration 0004: numerical stack versions and JAX backend/device (NULL for versions stored before it)
    environment: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))


def _in_sql(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class LifecycleEventRow(Base):
    """A label change of a version (stage, live, candidate, breaker): events, never edits of the version."""

    __tablename__ = "lifecycle_events"
    __table_args__ = (
        sa.CheckConstraint(stage_check_sql("from_stage", nullable=True), name="from_stage"),
        sa.CheckConstraint(stage_check_sql("to_stage", nullable=True), name="to_stage"),
        sa.CheckConstraint(_in_sql("kind", EVENT_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    configuration_id: Mapped[int] = mapped_column(
        sa.ForeignKey("trained_configurations.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[str | None] = mapped_column(sa.String(16))
    to_stage: Mapped[str | None] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    evidence: Mapped[dict[str, Any]]
    at: Mapped[datetime]
    universe_key: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16), server_default="stage")
    day: Mapped[datetime | None]


class ForwardRecordRow(Base):
    """A version's performance on one day after its training window (one row per version and day)."""

    __tablename__ = "forward_records"
    __table_args__ = (
        sa.UniqueConstraint("configuration_id", "day", name="uq_forward_records_configuration_day"),
        sa.CheckConstraint(_in_sql("role", FORWARD_ROLES), name="role"),
        sa.Index("ix_forward_records_universe_key_day", "universe_key", "day"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    configuration_id: Mapped[int] = mapped_column(sa.ForeignKey("trained_configurations.id", ondelete="CASCADE"))
    universe_key: Mapped[str] = mapped_column(sa.String(255))
    day: Mapped[datetime]
    role: Mapped[str] = mapped_column(sa.String(16))
    log_return: Mapped[float] = mapped_column(sa.Float)
    value: Mapped[float] = mapped_column(sa.Float)
    benchmark_log_return: Mapped[float] = mapped_column(sa.Float)
    n_trades: Mapped[int] = mapped_column(sa.Integer)
    trades: Mapped[list[Any]] = mapped_column(sa.JSON)
    readings: Mapped[dict[str, Any]]
    data_hash: Mapped[str] = mapped_column(sa.String(128))
    computed_at: Mapped[datetime]


class ComparisonRow(Base):
    """A challenger's and a champion's daily log returns on the challenger's hold-out window."""

    __tablename__ = "comparisons"
    __table_args__ = (sa.UniqueConstraint("challenger_id", "champion_id", name="uq_comparisons_pair"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    challenger_id: Mapped[int] = mapped_column(sa.ForeignKey("trained_configurations.id", ondelete="CASCADE"))
    champion_id: Mapped[int] = mapped_column(sa.ForeignKey("trained_configurations.id", ondelete="CASCADE"))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    challenger_log_returns: Mapped[list[Any]] = mapped_column(sa.JSON)
    champion_log_returns: Mapped[list[Any]] = mapped_column(sa.JSON)
    computed_at: Mapped[datetime]


class TrainingJobRow(Base):
    """One training run as the orchestrator saw it (also the failed ones, which store no configuration).

    status: running -> trained -> stored, or failed (an exception, or reconciled: its run is no longer alive)."""

    __tablename__ = "training_jobs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    orchestrator_run_id: Mapped[str | None] = mapped_column(sa.String(255))
    universe_key: Mapped[str] = mapped_column(sa.String(255), index=True)
    method: Mapped[str] = mapped_column(sa.String(64))
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(32))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    configuration_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("trained_configurations.id", ondelete="SET NULL")
    )
    # Liveness (migration 0003): a killed process cannot close its row, so the reconciler judges it by these.
    heartbeat_at: Mapped[datetime | None]
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None] = mapped_column(sa.Integer)


configurations_table: sa.Table = TrainedConfigurationRow.__table__  # type: ignore[assignment]
events_table: sa.Table = LifecycleEventRow.__table__  # type: ignore[assignment]
jobs_table: sa.Table = TrainingJobRow.__table__  # type: ignore[assignment]
forward_table: sa.Table = ForwardRecordRow.__table__  # type: ignore[assignment]
comparisons_table: sa.Table = ComparisonRow.__table__  # type: ignore[assignment]
