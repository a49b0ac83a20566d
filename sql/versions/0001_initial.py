"""Initial schema: trained configurations, their lifecycle events, training jobs.

Written to run unchanged on SQLite and PostgreSQL: portable types only (JSON, timezone-aware DateTime),
lifecycle stages as strings with CHECK constraints rather than a native enum (adding a stage later is a
constraint change, not an ALTER TYPE).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the stages at the time of this migration: a migration must not change when the code does.
_STAGES = "('DISCOVERY', 'VALIDATION', 'MATURE', 'RETIRED')"


def upgrade() -> None:
    op.create_table(
        "trained_configurations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("universe_key", sa.String(255), nullable=False),
        sa.Column("strategy", sa.String(255), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("exchanges", sa.JSON(), nullable=False),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("timeframe", sa.String(32), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("stage_reason", sa.Text(), nullable=False),
        sa.Column("stage_evidence", sa.JSON(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("train_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("train_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("test_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("test_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data_hash", sa.String(128), nullable=False),
        sa.Column("code_version", sa.String(255), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("run_spec", sa.JSON(), nullable=False),
        sa.Column("circuit_breakers", sa.JSON(), nullable=False),
        sa.Column("orchestrator_run_id", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trained_configurations"),
        sa.ForeignKeyConstraint(
            ["superseded_by"],
            ["trained_configurations.id"],
            name="fk_trained_configurations_superseded_by_trained_configurations",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "universe_key",
            "method",
            "train_start",
            "train_end",
            "test_start",
            "test_end",
            name="uq_trained_configurations_key",
        ),
        sa.CheckConstraint(f"lifecycle_stage IN {_STAGES}", name="ck_trained_configurations_lifecycle_stage"),
    )
    op.create_index(
        "ix_trained_configurations_universe_stage", "trained_configurations", ["universe_key", "lifecycle_stage"]
    )

    op.create_table(
        "lifecycle_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("configuration_id", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=True),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lifecycle_events"),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["trained_configurations.id"],
            name="fk_lifecycle_events_configuration_id_trained_configurations",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(f"from_stage IS NULL OR from_stage IN {_STAGES}", name="ck_lifecycle_events_from_stage"),
        sa.CheckConstraint(f"to_stage IN {_STAGES}", name="ck_lifecycle_events_to_stage"),
    )
    op.create_index("ix_lifecycle_events_configuration_id", "lifecycle_events", ["configuration_id"])

    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("orchestrator_run_id", sa.String(255), nullable=True),
        sa.Column("universe_key", sa.String(255), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("configuration_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_training_jobs"),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["trained_configurations.id"],
            name="fk_training_jobs_configuration_id_trained_configurations",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_training_jobs_universe_key", "training_jobs", ["universe_key"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_universe_key", table_name="training_jobs")
    op.drop_table("training_jobs")
    op.drop_index("ix_lifecycle_events_configuration_id", table_name="lifecycle_events")
    op.drop_table("lifecycle_events")
    op.drop_index("ix_trained_configurations_universe_stage", table_name="trained_configurations")
    op.drop_table("trained_configurations")
