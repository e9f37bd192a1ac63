"""dispute representment

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import psp_server.adapters.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "chargeback_reversal" rows (a won representment) need more than 12 characters.
    with op.batch_alter_table("card_settlements", schema=None) as batch_op:
        batch_op.alter_column(
            "type",
            existing_type=sa.String(length=12),
            type_=sa.String(length=24),
            existing_nullable=False,
        )
    with op.batch_alter_table("card_disputes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("represent_stan", sa.String(length=6), nullable=True))
        batch_op.add_column(
            sa.Column(
                "represent_transmitted_at",
                psp_server.adapters.tables.UtcDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("card_settlements", schema=None) as batch_op:
        batch_op.alter_column(
            "type",
            existing_type=sa.String(length=24),
            type_=sa.String(length=12),
            existing_nullable=False,
        )
    with op.batch_alter_table("card_disputes", schema=None) as batch_op:
        batch_op.drop_column("represent_transmitted_at")
        batch_op.drop_column("represent_stan")
