"""The living lifecycle: immutable versions, a derived live timeline, forward records, champion comparisons.

- trained_configurations: rows become immutable versions. `superseded_by` goes (a newer window no longer
  retires an older one: the live pointer decides what trades); `revision` joins the natural key, so a rerun
  of a window that produced different parameters adds a version instead of editing one.
- lifecycle_events: every label change of a version, not only stage changes: `kind` (created, stage, live,
  off, candidate, trip, pause), the timeline `day` it belongs to, and the `universe_key` (the live timeline of
  a universe is read in one query). `to_stage` is empty for events that do not change the stage.
- forward_records: one row per (configuration, day) of forward performance on data after its training window.
- comparisons: a challenger's and a champion's daily log returns on the challenger's hold-out, as paired
  statistics (the decision is taken from them with the universe's current margin and p-value).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGES = "('DISCOVERY', 'VALIDATION', 'MATURE', 'RETIRED')"
_KINDS = "('created', 'stage', 'live', 'off', 'candidate', 'trip', 'pause')"
_KEY = ("universe_key", "method", "train_start", "train_end", "test_start", "test_end")


def upgrade() -> None:
    with op.batch_alter_table("trained_configurations") as batch:
        batch.drop_constraint("fk_trained_configurations_superseded_by_trained_configurations", type_="foreignkey")
        batch.drop_column("superseded_by")
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_trained_configurations_key", type_="unique")
        batch.create_unique_constraint("uq_trained_configurations_key", [*_KEY, "revision"])

    with op.batch_alter_table("lifecycle_events") as batch:
        batch.add_column(sa.Column("universe_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="stage"))
        batch.add_column(sa.Column("day", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("to_stage", existing_type=sa.String(16), nullable=True)
        batch.drop_constraint("ck_lifecycle_events_to_stage", type_="check")
        batch.create_check_constraint("ck_lifecycle_events_to_stage", f"to_stage IS NULL OR to_stage IN {_STAGES}")
        batch.create_check_constraint("ck_lifecycle_events_kind", f"kind IN {_KINDS}")
    op.execute("UPDATE lifecycle_events SET kind = 'created' WHERE from_stage IS NULL")
    op.execute("UPDATE lifecycle_events SET universe_key = (SELECT c.universe_key FROM trained_configurations c "
               "WHERE c.id = lifecycle_events.configuration_id)")
    op.create_index("ix_lifecycle_events_universe_key", "lifecycle_events", ["universe_key"])

    op.create_table(
        "forward_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("configuration_id", sa.Integer(), nullable=False),
        sa.Column("universe_key", sa.String(255), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("log_return", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("benchmark_log_return", sa.Float(), nullable=False),
        sa.Column("n_trades", sa.Integer(), nullable=False),
        sa.Column("trades", sa.JSON(), nullable=False),
        sa.Column("readings", sa.JSON(), nullable=False),
        sa.Column("data_hash", sa.String(128), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_forward_records"),
        sa.ForeignKeyConstraint(["configuration_id"], ["trained_configurations.id"],
                                name="fk_forward_records_configuration_id_trained_configurations", ondelete="CASCADE"),
        sa.UniqueConstraint("configuration_id", "day", name="uq_forward_records_configuration_day"),
        sa.CheckConstraint("role IN ('live', 'candidate')", name="ck_forward_records_role"),
    )
    op.create_index("ix_forward_records_universe_key_day", "forward_records", ["universe_key", "day"])

    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("challenger_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("challenger_log_returns", sa.JSON(), nullable=False),
        sa.Column("champion_log_returns", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
        sa.ForeignKeyConstraint(["challenger_id"], ["trained_configurations.id"],
                                name="fk_comparisons_challenger_id_trained_configurations", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["champion_id"], ["trained_configurations.id"],
                                name="fk_comparisons_champion_id_trained_configurations", ondelete="CASCADE"),
        sa.UniqueConstraint("challenger_id", "champion_id", name="uq_comparisons_pair"),
    )


def downgrade() -> None:
    op.drop_table("comparisons")
    op.drop_index("ix_forward_records_universe_key_day", table_name="forward_records")
    op.drop_table("forward_records")
    op.drop_index("ix_lifecycle_events_universe_key", table_name="lifecycle_events")
    op.execute("DELETE FROM lifecycle_events WHERE to_stage IS NULL")
    with op.batch_alter_table("lifecycle_events") as batch:
        batch.drop_constraint("ck_lifecycle_events_kind", type_="check")
        batch.drop_constraint("ck_lifecycle_events_to_stage", type_="check")
        batch.create_check_constraint("ck_lifecycle_events_to_stage", f"to_stage IN {_STAGES}")
        batch.alter_column("to_stage", existing_type=sa.String(16), nullable=False)
        batch.drop_column("day")
        batch.drop_column("kind")
        batch.drop_column("universe_key")
    op.execute("DELETE FROM trained_configurations WHERE revision > 1")
    with op.batch_alter_table("trained_configurations") as batch:
        batch.drop_constraint("uq_trained_configurations_key", type_="unique")
        batch.create_unique_constraint("uq_trained_configurations_key", list(_KEY))
        batch.drop_column("revision")
        batch.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_trained_configurations_superseded_by_trained_configurations",
                                 "trained_configurations", ["superseded_by"], ["id"], ondelete="SET NULL")
