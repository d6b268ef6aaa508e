"""``analytics_db`` on embedded ClickHouse (chdb): exactly once, exactly right, failures loud.

The session's ``chdb_store`` (SQLite for ``db``, chdb for messages and statistics) is the
real thing in-process: pushes go through the real callback and group committer, the API
through the real app (ASGI). Deduplication is shown where it can break — retried and
concurrent copies of a push, a reused MsgId in a later batch, copies that slipped past
the existence check — and recomputing a period is shown to replace its old rows exactly,
including rows that drop to nothing. A ClickHouse that refuses answers the callback 500
(WeChat retries) and the API errcode -1 with a rid.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from msgcube.analytics.client import Analytics
from msgcube.analytics.schema import SCHEMA_VERSION, USER_DAY, is_current
from msgcube.analytics.schema import migrate as migrate_analytics
from msgcube.analytics.url import parse_analytics_url
from msgcube.analytics.writes import MESSAGE_COLUMNS
from msgcube.auth.accounts import AccountChanges, update_account
from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, Period
from msgcube.domain.messages import Event, Message, Record
from msgcube.errors import ConfigError
from msgcube.ingest.batch import store_analytics, write_batch
from msgcube.ingest.committer import GroupCommitter
from msgcube.rollup.engine import pending_keys, refresh
from msgcube.rollup.query import served_list
from msgcube.settings import Settings
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import delete_account_rows
from msgcube.web.app import create_app
from msgcube.wechat import build_push_xml, signature
from support.api import RID, at, datacube, get_token

from conftest import STAMP, fresh_appid

NOW = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
DAY = date(2026, 3, 2)
CT = int(datetime(2026, 3, 2, 4, tzinfo=UTC).timestamp())  # 12:00 in Shanghai


def analytics(store: Store) -> Analytics:
    assert store.analytics is not None
    return store.analytics


def new_account(store: Store, **kwargs: Any) -> Account:
    with store.write() as conn:
        return add_account(
            conn, appid=fresh_appid("wxch"), secret="s", tz="Asia/Shanghai", now=STAMP, **kwargs
        )


def reread(store: Store, account: Account) -> Account:
    with store.read() as conn:
        found = get_account(conn, account.appid)
    assert found is not None
    return found


def message(msg_id: int, openid: str = "o1", t: int = CT, kind: str = "text") -> Message:
    return Message(msg_id=msg_id, openid=openid, create_time=t, msg_type_name=kind)


def store_batch(store: Store, account: Account, records: list[Record]) -> Any:
    with store.write() as conn:
        return write_batch(conn, reread(store, account), records, DAY, received_at=STAMP)


def served(store: Store, account: Account, name: str, begin: date, end: date) -> list[Any]:
    a = reread(store, account)
    return served_list(store, a, BY_NAME[name], begin.isoformat(), end.isoformat(), NOW)


def stored_messages(store: Store, account: Account) -> int:
    an = analytics(store)
    return int(
        an.scalar(
            f"SELECT uniqExact(msg_id) FROM {an.table('messages')} WHERE account_id = {account.id}"
        )
    )


# --------------------------------------------------------------------------- the setting


def test_the_setting_parses_both_forms_and_hides_the_password() -> None:
    emb = parse_analytics_url("chdb://data/ch")
    assert emb is not None and (emb.kind, emb.path, emb.database) == ("chdb", "data/ch", "msgcube")
    absolute = parse_analytics_url("chdb:///var/lib/msgcube/ch")
    assert absolute is not None and absolute.path == "/var/lib/msgcube/ch"
    url = "clickhouse://ana:p%40ss:w@ch1:9001,ch2/stats?cluster=two_by_two"
    server = parse_analytics_url(url)
    assert server is not None
    assert server.hosts == (("ch1", 9001), ("ch2", 9000))
    assert (server.user, server.password, server.database, server.cluster) == (
        "ana",
        "p@ss:w",
        "stats",
        "two_by_two",
    )
    assert parse_analytics_url("") is None
    settings = Settings(analytics_db=url)
    assert settings.analytics_db == server
    shown = settings.public()["analytics_db"]
    assert "p%40ss" not in shown and "***" in shown and "ch1:9001" in shown
    assert "p%40ss" not in repr(settings)
    # Worker processes get the real value back.
    assert settings.environment()["MSGCUBE_ANALYTICS_DB"] == url
    odd = Settings(analytics_db="clickhouse://u:p@ss@ch1/db").public()["analytics_db"]
    assert odd == "clickhouse://u:***@ch1/db"
    for bad in ("mysql://x/y", "chdb://", "clickhouse://h:99999/db", "clickhouse://h/d?shard=1"):
        with pytest.raises(ConfigError, match="analytics_db"):
            Settings(analytics_db=bad)


# --------------------------------------------------------------------------- dedup


async def _push(
    client: httpx.AsyncClient, account: Account, msg_id: int, openid: str
) -> httpx.Response:
    xml = build_push_xml(
        {
            "ToUserName": "gh",
            "FromUserName": openid,
            "CreateTime": CT,
            "MsgType": "text",
            "Content": "hi",
            "MsgId": msg_id,
        }
    )
    ts, nonce = str(int(time.time())), "12345"
    params = {"signature": signature("tok", ts, nonce), "timestamp": ts, "nonce": nonce}
    return await client.post(f"/wechat/callback/{account.appid}", params=params, content=xml)


@contextlib.asynccontextmanager
async def callback_client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The app over STORE, started (committer and all), as WeChat's pushes reach it."""
    app = create_app(Settings(now=NOW.isoformat()), store)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


async def test_retried_pushes_through_the_callback_count_once(chdb_store: Store) -> None:
    account = new_account(chdb_store, callback_token="tok")
    async with callback_client(chdb_store) as client:
        # Every push three times at once (WeChat's retries racing), then once more.
        answers = await asyncio.gather(
            *(_push(client, account, i, f"o{i % 3}") for i in range(1, 9) for _ in range(3))
        )
        answers += [await _push(client, account, i, f"o{i % 3}") for i in range(1, 9)]
    assert {(r.status_code, r.text) for r in answers} == {(200, "success")}
    assert stored_messages(chdb_store, account) == 8
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 3, "msg_count": 8}
    ]


def test_a_reused_msgid_in_a_later_batch_is_dropped_first_wins(chdb_store: Store) -> None:
    account = new_account(chdb_store)
    first = store_batch(chdb_store, account, [message(10), message(11), message(11)])
    assert (first.messages_new, first.messages_duplicate) == (2, 1)
    later = CT + 86400  # another day, another type: still MsgId 10
    again = store_batch(
        chdb_store, account, [message(10, "o2", later, "image"), message(12, "o2", later)]
    )
    assert (again.messages_new, again.messages_duplicate) == (1, 1)
    assert again.counted_days == {DAY + timedelta(days=1)}
    events = [Event(openid="o1", create_time=CT, event="subscribe")] * 2
    stored = store_batch(chdb_store, account, events)
    assert (stored.events_new, stored.events_duplicate) == (1, 1)
    assert store_batch(chdb_store, account, events[:1]).events_duplicate == 1
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY + timedelta(days=1)) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 1, "msg_count": 2},
        {"ref_date": "2026-03-03", "msg_type": 1, "msg_user": 1, "msg_count": 1},
    ]


def test_copies_that_slipped_past_the_check_count_once(chdb_store: Store) -> None:
    """Two writers that both found a MsgId new both insert it (no unique constraint):
    the rollup deduplicates by MsgId, whether or not the engine merged the copies yet."""
    account = new_account(chdb_store)
    store_batch(chdb_store, account, [message(i, f"o{i % 2}") for i in range(1, 5)])
    an = analytics(chdb_store)
    copies = [(account.id, CT, i, f"o{i % 2}", 1, "text", STAMP) for i in range(1, 5)]
    an.insert("messages", MESSAGE_COLUMNS, copies)
    an.insert("messages", MESSAGE_COLUMNS, copies)
    raw = an.scalar(f"SELECT count() FROM {an.table('messages')} WHERE account_id = {account.id}")
    assert raw >= 4
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 2, "msg_count": 4}
    ]
    assert served(chdb_store, account, "getupstreammsghour", DAY, DAY) == [
        {"ref_date": "2026-03-02", "ref_hour": 1200, "msg_type": 1, "msg_user": 2, "msg_count": 4}
    ]


async def test_two_committers_racing_on_the_same_pushes_count_once(chdb_store: Store) -> None:
    account = new_account(chdb_store)
    first = GroupCommitter(chdb_store, lambda: NOW)
    second = GroupCommitter(chdb_store, lambda: NOW)
    records = [message(i, f"o{i % 5}") for i in range(1, 121)]
    try:
        await asyncio.gather(
            *(first.commit(account, r) for r in records),
            *(second.commit(account, r) for r in reversed(records)),
        )
    finally:
        await first.stop()
        await second.stop()
    assert stored_messages(chdb_store, account) == 120
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 5, "msg_count": 120}
    ]


async def test_one_group_commit_of_several_accounts_stores_each_exactly_once(
    chdb_store: Store,
) -> None:
    """The committer stores a batch of many accounts with one lookup and one insert per
    table: the same MsgId in two accounts is two messages, a repeat within one account
    is one, and each account's days are marked and served."""
    accounts = [new_account(chdb_store) for _ in range(3)]
    store_batch(chdb_store, accounts[0], [message(7, "o9")])  # stored before: a duplicate
    committer = GroupCommitter(chdb_store, lambda: NOW)
    jobs = [
        committer.commit(a, message(i, f"o{i % (n + 2)}"))
        for n, a in enumerate(accounts)
        for i in range(1, 9)
    ]
    jobs += [committer.commit(a, message(3, "o1")) for a in accounts]  # retries
    jobs += [
        committer.commit(accounts[1], Event(openid="o1", create_time=CT, event="subscribe"))
    ] * 2
    try:
        await asyncio.gather(*jobs)
    finally:
        await committer.stop()
    assert committer.stats.batches == 1  # all queued before the writer ran: one batch
    assert [stored_messages(chdb_store, a) for a in accounts] == [8, 8, 8]
    an = analytics(chdb_store)
    ids = an.rows(
        f"SELECT account_id, count() FROM {an.table('message_ids')}"
        f" WHERE account_id IN ({', '.join(str(a.id) for a in accounts)}) GROUP BY account_id"
        " ORDER BY account_id"
    )
    assert ids == [(a.id, 8) for a in accounts]
    events = an.scalar(
        f"SELECT count() FROM {an.table('events')} WHERE account_id = {accounts[1].id}"
    )
    assert events == 1
    for n, a in enumerate(accounts):
        users = len({f"o{i % (n + 2)}" for i in range(1, 9)} | ({"o9"} if n == 0 else set()))
        assert served(chdb_store, a, "getupstreammsg", DAY, DAY) == [
            {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": users, "msg_count": 8}
        ]


async def test_rows_stored_whose_db_marks_never_committed_are_marked_by_the_retry(
    chdb_store: Store,
) -> None:
    """The committer's two steps apart: ClickHouse acknowledged a batch of two accounts,
    then the ``db`` transaction with their marks was lost. The retried pushes, through
    a committer, find every row stored and mark both accounts' day again."""
    accounts = [new_account(chdb_store) for _ in range(2)]
    batch: list[Record] = [message(1, "o1"), message(2, "o2")]
    stored = store_analytics(analytics(chdb_store), [(a, batch) for a in accounts], STAMP)
    assert [len(stored[a.id].messages) for a in accounts] == [2, 2]
    for a in accounts:
        with chdb_store.read() as conn:
            assert pending_keys(conn, reread(chdb_store, a), NOW.date()) == []
    committer = GroupCommitter(chdb_store, lambda: NOW)
    try:
        await asyncio.gather(*(committer.commit(a, r) for a in accounts for r in batch))
    finally:
        await committer.stop()
    for a in accounts:
        assert stored_messages(chdb_store, a) == 2
        assert served(chdb_store, a, "getupstreammsg", DAY, DAY) == [
            {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 2, "msg_count": 2}
        ]


def test_opening_skips_the_schema_statements_when_the_schema_is_current(
    chdb_store: Store,
) -> None:
    an = analytics(chdb_store)
    assert is_current(an)
    migrate_analytics(an)  # a no-op: still one version row
    rows = an.rows(f"SELECT version FROM {an.table('schema_version')}")
    assert rows == [(SCHEMA_VERSION,)]


# --------------------------------------------------------------------------- recompute


def test_late_data_marks_its_periods_dirty_and_a_rerollup_replaces_exactly(
    chdb_store: Store,
) -> None:
    account = new_account(chdb_store)
    week = DAY - timedelta(days=DAY.weekday())
    # o1 sends 5 (interval 1-5), o2 sends 1.
    store_batch(chdb_store, account, [message(i, "o1") for i in range(5)] + [message(9, "o2")])
    refresh(chdb_store, reread(chdb_store, account), NOW.date())
    assert served(chdb_store, account, "getupstreammsgdist", DAY, DAY) == [
        {"ref_date": "2026-03-02", "count_interval": 1, "msg_user": 2}
    ]
    # Late: o1 sends a sixth (interval 1 → 2 for o1) and o2 an image.
    store_batch(chdb_store, account, [message(5, "o1"), message(10, "o2", kind="image")])
    with chdb_store.read() as conn:
        stale = set(pending_keys(conn, reread(chdb_store, account), NOW.date()))
    assert stale == {(Period.DAY, DAY), (Period.WEEK, week)}  # March has not ended
    refresh(chdb_store, reread(chdb_store, account), NOW.date())
    assert served(chdb_store, account, "getupstreammsgdist", DAY, DAY) == [
        {"ref_date": "2026-03-02", "count_interval": 1, "msg_user": 1},
        {"ref_date": "2026-03-02", "count_interval": 2, "msg_user": 1},
    ]
    assert served(chdb_store, account, "getupstreammsgweek", week, week) == [
        {"ref_date": week.isoformat(), "msg_type": 1, "msg_user": 2, "msg_count": 7},
        {"ref_date": week.isoformat(), "msg_type": 2, "msg_user": 1, "msg_count": 1},
    ]
    # Interval 1 drops to nothing when o2 reaches 6 too: its old row must not survive.
    store_batch(chdb_store, account, [message(20 + i, "o2") for i in range(4)])
    assert served(chdb_store, account, "getupstreammsgdist", DAY, DAY) == [
        {"ref_date": "2026-03-02", "count_interval": 2, "msg_user": 2}
    ]
    assert served(chdb_store, account, "getupstreammsgdistweek", week, week) == [
        {"ref_date": week.isoformat(), "count_interval": 2, "msg_user": 2}
    ]


# --------------------------------------------------------------------------- the API


def _fill(store: Store, appid: str) -> None:
    with store.write() as conn:
        account = add_account(conn, appid=appid, secret="s3", tz="Asia/Shanghai", now=STAMP)
    start = int(datetime(2026, 1, 25, tzinfo=UTC).timestamp())
    records: list[Record] = [
        message(
            i, f"o{i % 7}", start + i * 7919, ("text", "image", "voice", "link", "location")[i % 5]
        )
        for i in range(1, 900)
    ]
    records += [
        Event(openid=f"o{i}", create_time=start + i * 86400, event="subscribe") for i in range(9)
    ]
    with store.write() as conn:
        write_batch(conn, account, records, NOW.date(), received_at=STAMP)


WEEK = ("2026-01-26", "2026-02-01")


async def test_the_api_served_from_chdb_equals_sqlite(
    sqlite_store: Store, chdb_store: Store
) -> None:
    appid = fresh_appid("wxapi")
    answers = []
    for store in (sqlite_store, chdb_store):
        _fill(store, appid)
        got = {}
        async with at(store, NOW) as api:
            token = await get_token(api, appid, "s3")
            for ep in ENDPOINTS:
                hourly = ep.period is Period.HOUR
                ranges = [("2026-01-27",) * 2, ("2026-02-01",) * 2 if hourly else WEEK]
                for begin, end in ranges:
                    got[ep.name, begin] = await datacube(api, token, ep.name, begin, end)
        answers.append(got)
    assert any(v.get("list") for v in answers[0].values())
    assert answers[1] == answers[0]


# --------------------------------------------------------------------------- failures


@contextlib.contextmanager
def table_missing(store: Store, table: str) -> Iterator[None]:
    """ClickHouse refuses every statement on TABLE until it is back (a real refusal)."""
    an = analytics(store)
    hidden = an.table(table + "_away")
    an.ddl(f"RENAME TABLE {an.table(table)} TO {hidden}")
    try:
        yield
    finally:
        an.ddl(f"RENAME TABLE {hidden} TO {an.table(table)}")


async def test_clickhouse_refusing_fails_the_push_and_the_api_loudly(chdb_store: Store) -> None:
    account = new_account(chdb_store, callback_token="tok")
    async with callback_client(chdb_store) as client:
        with table_missing(chdb_store, "message_ids"):
            refused = await _push(client, account, 77, "o1")
        assert refused.status_code == 500 and refused.text != "success"
        retried = await _push(client, account, 77, "o1")
        assert (retried.status_code, retried.text) == (200, "success")
    assert stored_messages(chdb_store, account) == 1

    appid = fresh_appid("wxdown")
    with chdb_store.write() as conn:
        add_account(conn, appid=appid, secret="s3", tz="Asia/Shanghai", now=STAMP)
    async with at(chdb_store, NOW) as api:
        token = await get_token(api, appid, "s3")
        with table_missing(chdb_store, "rollup_runs"):
            body = await datacube(api, token, "getupstreammsg", "2026-03-01", "2026-03-02")
        assert body["errcode"] == -1 and body["errmsg"].startswith("system error")
        assert RID.search(body["errmsg"])
        assert await datacube(api, token, "getupstreammsg", "2026-03-01", "2026-03-02") == {
            "list": []
        }


def test_a_new_time_zone_recomputes_the_days_from_unix_times(chdb_store: Store) -> None:
    """ClickHouse rows keep CreateTime only: after a zone change every touched period is
    pending and comes out as if the data had arrived in the new zone."""
    account = new_account(chdb_store)
    late_evening = int(datetime(2026, 3, 2, 20, 30, tzinfo=UTC).timestamp())  # 03-03 in Shanghai
    store_batch(chdb_store, account, [message(1, "o1", late_evening), message(2, "o2", CT)])
    refresh(chdb_store, reread(chdb_store, account), NOW.date())
    days = (DAY, DAY + timedelta(days=1))
    assert [r["ref_date"] for r in served(chdb_store, account, "getupstreammsg", *days)] == [
        "2026-03-02",
        "2026-03-03",
    ]
    with chdb_store.write() as conn:
        update_account(conn, account.appid, AccountChanges(tz="UTC"), now=NOW)
    assert served(chdb_store, account, "getupstreammsg", *days) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 2, "msg_count": 2}
    ]
    assert served(chdb_store, account, "getupstreammsghour", DAY, DAY) == [
        {"ref_date": "2026-03-02", "ref_hour": 400, "msg_type": 1, "msg_user": 1, "msg_count": 1},
        {"ref_date": "2026-03-02", "ref_hour": 2000, "msg_type": 1, "msg_user": 1, "msg_count": 1},
    ]


def test_a_retry_restores_the_dirty_mark_a_failed_db_commit_lost(chdb_store: Store) -> None:
    """ClickHouse acknowledged the rows, then the ``db`` transaction holding their dirty
    marks rolled back: WeChat's retry finds them stored, and marks their day again."""
    account = new_account(chdb_store)
    batch: list[Record] = [message(1, "o1"), message(2, "o2")]
    with contextlib.suppress(RuntimeError), chdb_store.write() as conn:
        write_batch(conn, reread(chdb_store, account), batch, DAY, received_at=STAMP)
        raise RuntimeError("db commit failed")
    assert stored_messages(chdb_store, account) == 2
    with chdb_store.read() as conn:
        assert pending_keys(conn, reread(chdb_store, account), NOW.date()) == []
    retry = store_batch(chdb_store, account, batch)
    assert (retry.messages_new, retry.messages_duplicate) == (0, 2)
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 2, "msg_count": 2}
    ]
    # A retry after the day was computed cannot tell whether that rollup saw its rows: it
    # marks the day again (one recompute too many), and the answer stays the same.
    refresh(chdb_store, reread(chdb_store, account), NOW.date(), computed_at=int(NOW.timestamp()))
    store_batch(chdb_store, account, batch)
    with chdb_store.read() as conn:
        assert (Period.DAY, DAY) in pending_keys(conn, reread(chdb_store, account), NOW.date())
    assert served(chdb_store, account, "getupstreammsg", DAY, DAY) == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 2, "msg_count": 2}
    ]


def test_forgetting_an_account_deletes_its_clickhouse_rows(chdb_store: Store) -> None:
    account = new_account(chdb_store)
    other = new_account(chdb_store)
    for a in (account, other):
        store_batch(chdb_store, a, [message(1), Event(openid="o1", create_time=CT, event="CLICK")])
        refresh(chdb_store, reread(chdb_store, a), NOW.date())
    with chdb_store.write() as conn:
        delete_account_rows(conn, account.id, account.appid)
    an = analytics(chdb_store)
    for table in ("messages", "message_ids", "events", USER_DAY, "stat_summary", "rollup_runs"):
        counts = dict(
            an.rows(
                f"SELECT account_id, count() FROM {an.table(table)}"
                f" WHERE account_id IN ({account.id}, {other.id}) GROUP BY account_id"
            )
        )
        assert account.id not in counts and counts[other.id] > 0, table
