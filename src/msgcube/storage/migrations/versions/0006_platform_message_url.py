"""platform message url: token/keys/upstream of a platform, accounts it created

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("created_by_platform", sa.Integer(), nullable=True))
    with op.batch_alter_table("platforms") as batch_op:
        batch_op.add_column(sa.Column("prev_aes_key", sa.String(length=43), nullable=True))
        batch_op.add_column(sa.Column("upstream_url", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(
            sa.Column("account_limit", sa.Integer(), server_default="10000", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("platforms") as batch_op:
        batch_op.drop_column("account_limit")
        batch_op.drop_column("upstream_url")
        batch_op.drop_column("prev_aes_key")
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("created_by_platform")
