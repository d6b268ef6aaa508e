"""interface analysis: stat_interface

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-29 21:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stat_interface",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("ref_date", sa.Date(), nullable=False),
        sa.Column("ref_hour", sa.SmallInteger(), nullable=False),
        sa.Column("callback_count", sa.Integer(), nullable=False),
        sa.Column("fail_count", sa.Integer(), nullable=False),
        sa.Column("total_time_cost", sa.BigInteger(), nullable=False),
        sa.Column("max_time_cost", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "period", "ref_date", "ref_hour", name=op.f("pk_stat_interface")
        ),
    )


def downgrade() -> None:
    op.drop_table("stat_interface")
