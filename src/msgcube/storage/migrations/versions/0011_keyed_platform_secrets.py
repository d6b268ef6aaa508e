"""keyed platform AppSecret hashes

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 04:00:00.000000

A platform's component_appsecret hash was a bare SHA-256, while accounts' AppSecrets
have been keyed since 0004. It becomes HMAC-SHA256(key, that SHA-256) with the same
``app_secret_key`` server secret (created here when platforms exist and no key yet), so
every registered platform's secret keeps working without being known. The formula is
``msgcube.storage.secret_hashes.keyed_secret_hash``, written out so this file never changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

KEY_NAME = "app_secret_key"

platforms = sa.table("platforms", sa.column("id", sa.Integer), sa.column("secret_hash", sa.String))
server_secrets = sa.table(
    "server_secrets", sa.column("name", sa.String), sa.column("value", sa.String)
)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(platforms.c.id, platforms.c.secret_hash)).all()
    if not rows:
        return
    key = conn.execute(
        sa.select(server_secrets.c.value).where(server_secrets.c.name == KEY_NAME)
    ).scalar_one_or_none()
    if key is None:
        key = secrets.token_hex(32)
        conn.execute(sa.insert(server_secrets).values(name=KEY_NAME, value=key))
    for platform_id, old in rows:
        new = hmac.new(key.encode(), old.encode(), hashlib.sha256).hexdigest()
        conn.execute(
            sa.update(platforms).where(platforms.c.id == platform_id).values(secret_hash=new)
        )


def downgrade() -> None:
    # Keyed hashes cannot be turned back into bare ones: platform secrets set before the
    # downgrade must be set again afterwards (`msgcube platform add` anew).
    pass
