"""Liveness of training jobs: the heartbeat, host and process id of the process that runs each one.

A retrain killed with SIGKILL cannot close its `training_jobs` row; without these columns nothing tells a row
whose process died from one still training, so it stayed `running` forever. With them the store reconciles
open rows whose process is gone, whose heartbeat went silent or whose orchestrator run ended
(`ConfigurationStore.reconcile_jobs`). Rows written before this migration have no heartbeat: their start
time stands in for it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("pid")
        batch.drop_column("host")
        batch.drop_column("heartbeat_at")
