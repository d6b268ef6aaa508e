"""Checking a stored AppSecret in a test, as the server does (``storage/secret_hashes``)."""

from __future__ import annotations

from sqlalchemy import Connection

from msgcube.storage.accounts import SECRET_KEY_NAME
from msgcube.storage.secret_hashes import check_secret
from msgcube.storage.server_secrets import server_secret


def secret_ok(conn: Connection, stored: str | None, secret: str) -> bool:
    """Whether ``secret`` matches ``stored`` under this deployment's key."""
    return check_secret(stored, server_secret(conn, SECRET_KEY_NAME), secret).matches
