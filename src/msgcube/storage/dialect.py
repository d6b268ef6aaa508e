"""The two statements whose spelling differs between SQLite and PostgreSQL.

Both speak ``INSERT … ON CONFLICT``; SQLAlchemy only exposes it per dialect, so this
module picks the right constructor once instead of every caller branching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(conn: Connection, table: Table, keys: Sequence[str]) -> Any:
    """``INSERT … ON CONFLICT (keys) DO NOTHING``: how retried pushes are counted once."""
    return _insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))


def upsert(conn: Connection, table: Table, keys: Sequence[str], update: dict[str, Any]) -> Any:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update`` (``excluded`` via ``.excluded``)."""
    stmt = _insert(conn, table)
    values = {k: (v(stmt.excluded) if callable(v) else v) for k, v in update.items()}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=values)
