"""The numerical environment of a version: the versions of the numerical stack (jax, jaxlib, numpy, scipy,
optax, optuna, Python) and the JAX backend and device its training ran on, beside its data hash, code version
and seed (quant_core.provenance.numerical_environment). A JSON object; rows written before this migration
have none (NULL), and read and export as "not recorded".

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trained_configurations") as batch:
        batch.add_column(sa.Column("environment", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_configurations") as batch:
        batch.drop_column("environment")
