"""relay: accounts.upstream_url and relay_calls

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-29 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_url", sa.Text(), nullable=True))
    op.create_table(
        "relay_calls",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("cost_ms", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_calls")),
    )
    with op.batch_alter_table("relay_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_relay_calls_account_id_day_hour"),
            ["account_id", "day", "hour"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("relay_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_calls_account_id_day_hour"))
    op.drop_table("relay_calls")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("upstream_url")
