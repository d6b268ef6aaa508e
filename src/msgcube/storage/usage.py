"""Daily call counters (``quota_usage``): one place that reads, adds to and clears them.

``/cgi-bin/token`` counts each call as it happens (calls are rare); the datacube quota
counts in memory and adds its deltas here every second (``auth/quotas.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from sqlalchemy import Connection, and_, delete, select

from msgcube.storage.dialect import upsert
from msgcube.storage.schema import quota_usage


def usage_of(conn: Connection, account_id: int, api: str, day: date) -> int:
    q = quota_usage.c
    value = conn.execute(
        select(q.used).where(q.account_id == account_id, q.api == api, q.day == day)
    ).scalar_one_or_none()
    return int(value or 0)


def add_usage_deltas(conn: Connection, deltas: Mapping[tuple[int, str, date], int]) -> None:
    """Add each delta to its (account, api, day) counter in one executemany upsert."""
    rows = [
        {"account_id": account_id, "api": api, "day": day, "used": n}
        for (account_id, api, day), n in deltas.items()
        if n
    ]
    if rows:
        conn.execute(
            upsert(
                conn,
                quota_usage,
                ["account_id", "api", "day"],
                {"used": lambda ex: quota_usage.c.used + ex.used},
            ),
            rows,
        )


def clear_usage(conn: Connection, account_id: int, day: date) -> None:
    q = quota_usage.c
    conn.execute(delete(quota_usage).where(and_(q.account_id == account_id, q.day == day)))


def add_usage(conn: Connection, account_id: int, api: str, day: date, calls: int = 1) -> int:
    """Add ``calls`` to one counter and return its new total."""
    add_usage_deltas(conn, {(account_id, api, day): calls})
    return usage_of(conn, account_id, api, day)
