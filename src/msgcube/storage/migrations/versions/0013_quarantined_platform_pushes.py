"""quarantined pushes remember the platform whose URL received them

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 04:45:00.000000

A push received on a platform's message URL is signed with the platform's Token and
encrypted with its key: replay must open it with those, not the account's.
``quarantine.component_appid`` says which platform ('' for the account's own URL).
Entries kept before this revision are recognised by the reason the platform URL wrote
("platform <component_appid>: …"), as long as a failed replay has not rewritten it.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

quarantine = sa.table(
    "quarantine",
    sa.column("id", sa.Integer),
    sa.column("reason", sa.Text),
    sa.column("component_appid", sa.String),
)
_PLATFORM_REASON = re.compile(r"platform (wx[0-9A-Za-z]{1,62}): ")


def upgrade() -> None:
    op.add_column(
        "quarantine",
        sa.Column("component_appid", sa.String(64), server_default="", nullable=False),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(quarantine.c.id, quarantine.c.reason).where(
            quarantine.c.reason.like("platform %")
        )
    ).all()
    for entry_id, reason in rows:
        found = _PLATFORM_REASON.match(reason)
        if found:
            conn.execute(
                sa.update(quarantine)
                .where(quarantine.c.id == entry_id)
                .values(component_appid=found.group(1))
            )


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("component_appid")
