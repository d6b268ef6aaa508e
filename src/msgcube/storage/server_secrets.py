"""Per-deployment random secrets (``server_secrets``), shared by every node.

Each is created on first use. They key what must not be forgeable or reversible from
the rest of the database: stable tokens, AppSecret hashes, dashboard cookies; and one
(``dashboard_admin_session``) is replaced to end every administrator session at once.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, select, update

from msgcube.storage.dialect import upsert
from msgcube.storage.schema import server_secrets


def server_secret(conn: Connection, name: str) -> str:
    """The secret called ``name``, created (random, 256 bits) if it does not exist yet."""
    value = conn.execute(
        select(server_secrets.c.value).where(server_secrets.c.name == name)
    ).scalar_one_or_none()
    if value is None:
        conn.execute(
            upsert(conn, server_secrets, ["name"], {"name": lambda ex: server_secrets.c.name}),
            {"name": name, "value": secrets.token_hex(32)},
        )
        value = conn.execute(
            select(server_secrets.c.value).where(server_secrets.c.name == name)
        ).scalar_one()
    return str(value)


def replace_server_secret(conn: Connection, name: str) -> None:
    """Give ``name`` a new random value: whatever the old one keyed stops verifying."""
    server_secret(conn, name)
    conn.execute(
        update(server_secrets)
        .where(server_secrets.c.name == name)
        .values(value=secrets.token_hex(32))
    )
