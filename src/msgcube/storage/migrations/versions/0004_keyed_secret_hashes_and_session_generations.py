"""keyed AppSecret hashes and dashboard session generations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:50:00

AppSecret hashes were a bare SHA-256. They become HMAC-SHA256(key, that SHA-256), keyed
with the deployment's ``app_secret_key`` server secret (created here when accounts exist),
so every existing AppSecret keeps working without being known. The formula is the one of
``msgcube.storage.secret_hashes.keyed_secret_hash``, written out so this file never changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEY_NAME = "app_secret_key"

accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("secret_hash", sa.String))
server_secrets = sa.table(
    "server_secrets", sa.column("name", sa.String), sa.column("value", sa.String)
)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("session_gen", sa.Integer(), server_default="0", nullable=False))
    conn = op.get_bind()
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.secret_hash)).all()
    if not rows:
        return
    key = conn.execute(
        sa.select(server_secrets.c.value).where(server_secrets.c.name == KEY_NAME)
    ).scalar_one_or_none()
    if key is None:
        key = secrets.token_hex(32)
        conn.execute(sa.insert(server_secrets).values(name=KEY_NAME, value=key))
    for account_id, old in rows:
        new = hmac.new(key.encode(), old.encode(), hashlib.sha256).hexdigest()
        conn.execute(sa.update(accounts).where(accounts.c.id == account_id).values(secret_hash=new))


def downgrade() -> None:
    # The keyed hashes cannot be turned back into bare ones: AppSecrets set before the
    # downgrade must be set again afterwards.
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("session_gen")
