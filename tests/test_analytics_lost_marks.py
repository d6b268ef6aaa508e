"""Rows stored in ClickHouse whose ``db`` marks never committed: the retry marks them.

With ``analytics_db`` the group committer stores a batch in ClickHouse, then commits its
dirty marks in ``db``. Here ``db`` is a private PostgreSQL server (``support/private_pg``)
really stopped between the two: the pushes are answered with an error, WeChat retries
them once the server is back, every retried record is found stored — and still the late
messages, the late subscribe and the day before the account's first day of data end up
in the statistics, exactly as for an account that never saw the fault.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from msgcube.analytics.url import parse_analytics_url
from msgcube.domain.endpoints import ENDPOINTS, Period
from msgcube.domain.messages import Event, Message, Record
from msgcube.ingest.batch import import_followers
from msgcube.ingest.committer import GroupCommitter
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store, open_store
from support.private_pg import private_postgres

from conftest import STAMP

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NOW = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 09:00 on March 10 in Shanghai
FIRST, LATE = date(2026, 3, 2), date(2026, 3, 5)


def at(day: date, hour: int) -> int:
    """Unix time of HOUR:00 on DAY in Shanghai."""
    return int(datetime(day.year, day.month, day.day, hour - 8, tzinfo=UTC).timestamp())


def reread(store: Store, account: Account) -> Account:
    with store.read() as conn:
        found = get_account(conn, account.appid)
    assert found is not None
    return found


async def push(committer: GroupCommitter, account: Account, records: list[Record]) -> None:
    await asyncio.gather(*(committer.commit(account, r) for r in records))


def answers(store: Store, account: Account) -> dict[tuple[str, str], list[object]]:
    """Every endpoint over March 2–8 (the hourly ones day by day)."""
    a = reread(store, account)
    got = {}
    for ep in ENDPOINTS:
        days = range(2, 9) if ep.period is Period.HOUR else [2]
        for d in days:
            begin = date(2026, 3, d).isoformat()
            end = begin if ep.period is Period.HOUR else "2026-03-08"
            got[ep.name, begin] = served_list(store, a, ep, begin, end, NOW)
    return got


async def test_a_retry_marks_what_a_stopped_db_never_marked(chdb_dir: Path) -> None:
    early: list[Record] = [
        Message(msg_id=1, openid="o1", create_time=at(LATE, 12), msg_type_name="text")
    ]
    late: list[Record] = [
        Message(
            msg_id=2, openid="o2", create_time=at(LATE, 13), msg_type_name="text"
        ),  # a day already computed
        Message(
            msg_id=3, openid="o3", create_time=at(FIRST, 10), msg_type_name="text"
        ),  # before the first day
        Event(openid="o9", create_time=at(LATE, 14), event="subscribe"),
    ]
    analytics = parse_analytics_url(f"chdb://{chdb_dir}?database=lost_marks")
    with private_postgres() as pg:
        store = open_store(pg.url, analytics=analytics)
        try:
            accounts: list[Account] = []
            for appid in ("wxlostmarks", "wxcontrol"):
                with store.write() as conn:
                    a = add_account(conn, appid=appid, secret="s", tz="Asia/Shanghai", now=STAMP)
                    import_followers(conn, a, ["f1", "f2"], LATE)
                accounts.append(a)
            faulted, control = accounts
            committer = GroupCommitter(store, lambda: NOW)
            try:
                for a in accounts:
                    await push(committer, a, early)
                    refresh(store, reread(store, a), NOW.date(), computed_at=int(NOW.timestamp()))
                await push(committer, control, late)

                pg.stop()
                outcome = await asyncio.gather(
                    *(committer.commit(faulted, r) for r in late), return_exceptions=True
                )
                assert all(isinstance(o, Exception) for o in outcome), outcome
                pg.start()
                # WeChat retries each push (up to three times) until it is answered.
                for _ in range(3):
                    outcome = await asyncio.gather(
                        *(committer.commit(faulted, r) for r in late), return_exceptions=True
                    )
                    if not any(isinstance(o, Exception) for o in outcome):
                        break
                assert not any(isinstance(o, Exception) for o in outcome), outcome
            finally:
                await committer.stop()

            assert reread(store, faulted).stats_since == FIRST
            got = answers(store, faulted)
            assert got == answers(store, control)
            assert got["getupstreammsg", "2026-03-02"] == [
                {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 1, "msg_count": 1},
                {"ref_date": "2026-03-05", "msg_type": 1, "msg_user": 2, "msg_count": 2},
            ]
        finally:
            store.dispose()
