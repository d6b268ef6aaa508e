"""The quota books: daily call counters (``quota_usage``), per-account daily limits
(``account_quotas``) and the record of quota clears (``quota_clears``).

``/cgi-bin/token`` counts each call as it happens (calls are rare); the datacube quota
counts in memory and adds its deltas here every second. The rules (limits, the monthly
clear allowance) live in ``auth/quotas.py``; this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from sqlalchemy import Connection, and_, delete, func, select, update

from msgcube.storage.dialect import upsert
from msgcube.storage.schema import account_quotas, accounts, quota_clears, quota_usage


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


def lock_account(conn: Connection, account_id: int) -> None:
    """Serialise writers of one account's quota books and of its tokens (a row lock on
    PostgreSQL): two token issues or two clears never interleave.

    SQLite write transactions are already serial (``BEGIN IMMEDIATE``), and SQLAlchemy
    leaves ``FOR UPDATE`` out there.
    """
    conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())


def count_clears_since(conn: Connection, account_id: int, since: int) -> int:
    c = quota_clears.c
    return int(
        conn.execute(
            select(func.count())
            .select_from(quota_clears)
            .where(c.account_id == account_id, c.cleared_at >= since)
        ).scalar_one()
    )


def record_clear(conn: Connection, account_id: int, now: int) -> None:
    """Record a clear and move the account's ``auth_gen``: every worker sees it on its
    next call (``auth/quotas``) and re-reads the cleared counters."""
    conn.execute(quota_clears.insert().values(account_id=account_id, cleared_at=now))
    conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(auth_gen=accounts.c.auth_gen + 1)
    )


def daily_limit_override(conn: Connection, account_id: int) -> int | None:
    value = conn.execute(
        select(account_quotas.c.daily_limit).where(account_quotas.c.account_id == account_id)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def set_daily_limit_override(conn: Connection, account_id: int, limit: int | None) -> None:
    """Set (or with ``None`` remove) the account's daily limit per datacube API."""
    conn.execute(delete(account_quotas).where(account_quotas.c.account_id == account_id))
    if limit is not None:
        conn.execute(account_quotas.insert().values(account_id=account_id, daily_limit=limit))
