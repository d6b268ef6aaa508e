"""Seeded accounts for the dashboard tests, and the truths their numbers are checked against.

The truths are built from ``served_list`` one *day* at a time (a range of one day is
valid for every endpoint, and a week or month is returned by the call on its label day),
so they share nothing with the dashboard's own window packing.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from msgcube.domain.endpoints import BY_NAME, Endpoint
from msgcube.ingest.synthetic import generate_into
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store
from support.relay_calls import seed_calls

from conftest import STAMP

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 11, 10, 0, tzinfo=SHANGHAI)  # a Wednesday
TODAY = date(2026, 3, 11)
YESTERDAY = date(2026, 3, 10)
DAYS = 75


def seed_account(
    store: Store,
    appid: str,
    secret: str,
    *,
    days: int = DAYS,
    users: int = 300,
    seed: int = 7,
    relay: bool = True,
) -> Account:
    """An account with ``days`` days of generated traffic up to yesterday (and, with
    ``relay``, the relay's timings of those days), rolled up."""
    with store.write() as conn:
        account = add_account(conn, appid=appid, secret=secret, tz="Asia/Shanghai", now=STAMP)
    if days:
        generate_into(store, account, days=days, users=users, seed=seed, end=YESTERDAY, today=TODAY)
        if relay:
            seed_calls(store, account, YESTERDAY - timedelta(days=days - 1), YESTERDAY, seed=seed)
        with store.read() as conn:
            fresh = get_account(conn, appid)
        assert fresh is not None
        refresh(store, fresh, TODAY)
        account = fresh
    return account


def reload(store: Store, appid: str) -> Account:
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    return account


def truth(
    store: Store, account: Account, ep: Endpoint, begin: date, end: date, now: datetime = NOW
) -> list[dict[str, Any]]:
    """``served_list`` asked one day at a time over ``[begin, end]`` (capped at yesterday)."""
    rows: list[dict[str, Any]] = []
    yesterday = now.astimezone(SHANGHAI).date() - timedelta(days=1)
    day = begin
    while day <= min(end, yesterday):
        rows += served_list(store, account, ep, day.isoformat(), day.isoformat(), now)
        day += timedelta(days=1)
    return rows


def day_totals(store: Store, account: Account, day: date) -> tuple[int, int]:
    """(distinct senders, messages) of one day, from the served day and dist rows."""
    iso = day.isoformat()
    summary = served_list(store, account, BY_NAME["getupstreammsg"], iso, iso, NOW)
    dist = served_list(store, account, BY_NAME["getupstreammsgdist"], iso, iso, NOW)
    senders = sum(r["msg_user"] for r in dist if r["count_interval"] in (1, 2, 3))
    return senders, sum(r["msg_count"] for r in summary)
