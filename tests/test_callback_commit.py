"""The group committer and the quarantine replay, in process, on SQLite and PostgreSQL.

The HTTP tests (``test_callback.py``) show the whole path on a real server; these pin
down the committer's own promises on both backends: concurrent pushes share commits,
identical pushes store one row, a failed commit fails every push of its batch (and
only that batch), stopping commits what is queued, and a follower import that lands
while an account is cached still dirties the right periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from msgcube.domain.messages import Event, Message
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.ingest.committer import GroupCommitter
from msgcube.ingest.gate import RawPush
from msgcube.ingest.quarantine import replay_quarantine
from msgcube.rollup.engine import pending_keys, refresh
from msgcube.settings import Settings
from msgcube.storage.accounts import Account, add_account, get_account, set_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.quarantine import add_entry, get_entries, list_entries
from msgcube.storage.schema import events, messages
from msgcube.web.app import create_app
from msgcube.wechat import AESKey, build_push_xml, cdata, encrypt, msg_signature, signature

from conftest import STAMP, fresh_appid

NOW = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
WRONG_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
CT = int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp())


def new_account(store: Store, **kwargs: object) -> Account:
    appid = fresh_appid("wxgc")
    with store.write() as conn:
        return add_account(conn, appid=appid, secret="s", tz="Asia/Shanghai", now=STAMP, **kwargs)  # type: ignore[arg-type]


def count(store: Store, account: Account) -> tuple[int, int]:
    with store.read() as conn:
        m = conn.execute(select(func.count()).where(messages.c.account_id == account.id))
        e = conn.execute(select(func.count()).where(events.c.account_id == account.id))
        return m.scalar_one(), e.scalar_one()


def message(msg_id: int, openid: str = "o1") -> Message:
    return Message(msg_id=msg_id, openid=openid, create_time=CT, msg_type_name="text")


async def test_concurrent_pushes_share_commits(store: Store) -> None:
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW)
    await committer.start()
    try:
        await asyncio.gather(
            *(committer.commit(account, message(i, f"o{i % 7}")) for i in range(1, 401))
        )
    finally:
        await committer.stop()
    assert count(store, account) == (400, 0)
    assert committer.stats.items == 400
    assert committer.stats.batches < 100  # shared, not one transaction per push
    assert committer.stats.largest > 10


async def test_after_a_shared_commit_it_waits_for_as_many_pushes_and_no_longer(
    store: Store,
) -> None:
    """The next batch waits for the company the last one had, not for the whole linger.

    The linger is a minute, so a committer that waited it out would trip the 20 s bound;
    one that did not wait at all would commit the first two of the second wave alone.
    """
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW, linger=60.0)
    await committer.start()

    async def waves() -> None:
        # 4 at once: one batch (the first commit waits for nobody).
        await asyncio.gather(*(committer.commit(account, message(i)) for i in range(1, 5)))
        # 2, then 2 more a moment later: all four in the next batch, which waited for
        # the 4 the last one held, and went as soon as they were there.
        first = [asyncio.ensure_future(committer.commit(account, message(i))) for i in (5, 6)]
        await asyncio.sleep(0.2)
        assert not any(f.done() for f in first)  # waiting for company
        await asyncio.gather(*first, *(committer.commit(account, message(i)) for i in (7, 8)))

    try:
        await asyncio.wait_for(waves(), timeout=20)
    finally:
        await committer.stop()
    assert count(store, account) == (8, 0)
    assert (committer.stats.batches, committer.stats.largest) == (2, 4)


async def test_after_a_wait_in_vain_the_next_batch_does_not_wait(store: Store) -> None:
    """Pushes spread out in time: a wait for company that nobody joins is not repeated at
    once, so the next lone push is committed without the linger (3 s here).

    The committer that always waited would hold the third push for the whole linger.
    """
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW, linger=3.0)
    await committer.start()
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(*(committer.commit(account, message(i)) for i in range(1, 5)))
        started = loop.time()
        # Two at once: the batch waits for the four the last one held; none come.
        await asyncio.gather(*(committer.commit(account, message(i)) for i in (5, 6)))
        assert loop.time() - started >= 3.0
        started = loop.time()
        await committer.commit(account, message(7))
        assert loop.time() - started < 2.0  # committed without waiting out the linger
    finally:
        await committer.stop()
    assert count(store, account) == (7, 0)
    assert (committer.stats.batches, committer.stats.largest) == (3, 4)


async def test_identical_pushes_at_once_store_one_row(store: Store) -> None:
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW)
    subscribe = Event(openid="o9", create_time=CT, event="subscribe")
    await asyncio.gather(*(committer.commit(account, r) for r in [message(5), subscribe] * 4))
    # and again, each in its own batch (a retry after the first was stored)
    for r in [message(5), subscribe]:
        await committer.commit(account, r)
    await committer.stop()
    assert count(store, account) == (1, 1)


async def test_two_workers_storing_the_same_pushes_at_once(store: Store) -> None:
    """Two processes' committers (two engines) get the same retried pushes in opposite
    orders: every push succeeds in both and is stored once. Later rounds reuse senders
    both have cached, so nothing serialises the two transactions before the messages:
    on PostgreSQL, rows written in different orders would deadlock."""
    account = new_account(store)
    url = store.engine.url.render_as_string(hide_password=False)
    other = open_store(url, migrate_schema=False)
    first, second = GroupCommitter(store, lambda: NOW), GroupCommitter(other, lambda: NOW)
    try:
        for round_ in range(4):
            records: list[Message | Event] = [
                message(round_ * 1000 + i, f"o{i % 13}") for i in range(1, 201)
            ]
            records += [
                Event(openid=f"o{i % 13}", create_time=CT + round_ * 100 + i, event="subscribe")
                for i in range(20)
            ]
            await asyncio.gather(
                *(first.commit(account, r) for r in records),
                *(second.commit(account, r) for r in reversed(records)),
            )
    finally:
        await first.stop()
        await second.stop()
        other.dispose()
    assert count(store, account) == (800, 80)


@contextlib.contextmanager
def failing_inserts(store: Store, account: Account) -> Iterator[None]:
    """The database itself refuses ``account``'s messages: a trigger raises on insert.

    A real failure inside the commit's transaction (no code of ours replaced), on both
    backends, confined to one account so other tests sharing the database are unaffected.
    """
    name = f"fail_{account.id}"
    with store.write() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON messages "
                f"WHEN NEW.account_id = {account.id} BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON messages FOR EACH ROW "
                f"WHEN (NEW.account_id = {account.id}) EXECUTE FUNCTION {name}()"
            )
    try:
        yield
    finally:
        with store.write() as conn:
            if store.engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON messages")
                conn.exec_driver_sql(f"DROP FUNCTION {name}()")


async def test_a_failed_commit_fails_its_whole_batch_and_only_it(store: Store) -> None:
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW, linger=0.05)
    with failing_inserts(store, account):
        results = await asyncio.gather(
            *(committer.commit(account, message(i)) for i in range(1, 11)), return_exceptions=True
        )
    assert all(isinstance(r, Exception) and "disk on fire" in str(r) for r in results), results
    assert count(store, account) == (0, 0)  # the transaction rolled back: nothing half-stored
    await asyncio.gather(*(committer.commit(account, message(i)) for i in range(1, 11)))
    await committer.stop()
    assert count(store, account) == (10, 0)
    assert committer.stats.failed_batches == 1


async def test_stop_commits_what_is_queued(store: Store) -> None:
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW)
    tasks = [asyncio.create_task(committer.commit(account, message(i))) for i in range(1, 51)]
    await asyncio.sleep(0)  # the tasks enqueue
    await committer.stop()
    await asyncio.gather(*tasks)
    assert count(store, account) == (50, 0)
    with pytest.raises(RuntimeError, match="stopping"):
        await committer.commit(account, message(99))


async def test_quarantine_goes_through_the_committer(store: Store) -> None:
    account = new_account(store)
    committer = GroupCommitter(store, lambda: NOW)
    await committer.quarantine(RawPush(account.appid, "a=1", b"<xml>").quarantined("why", STAMP))
    await committer.stop()
    with store.read() as conn:
        [entry] = list_entries(conn, appid=account.appid)
    assert (entry.reason, entry.query, entry.body_size) == ("why", "a=1", 5)


async def test_follower_import_while_cached_still_dirties_later_periods(store: Store) -> None:
    account = new_account(store)
    stale = account  # what the callback's one-second cache may still hold
    today = date(2026, 3, 10)
    early = Message(msg_id=1, openid="o1", create_time=CT - 10 * 86400, msg_type_name="text")
    with store.write() as conn:
        write_batch(
            conn, account, [early], today, received_at=STAMP
        )  # statistics start on 20 February
        import_followers(conn, account, ["o1", "o2"], today)
        fresh = get_account(conn, account.appid)
    assert fresh is not None
    assert fresh.follower_base
    assert not stale.follower_base
    refresh(store, fresh, today)
    with store.read() as conn:
        assert pending_keys(conn, fresh, today) == []
    committer = GroupCommitter(store, lambda: NOW)
    await committer.commit(stale, Event(openid="o3", create_time=CT, event="subscribe"))
    await committer.stop()
    with store.read() as conn:
        fresh = get_account(conn, account.appid)
        assert fresh is not None
        pending = pending_keys(conn, fresh, today)
    # From 2 March on, follower counts change: days 2–9 March and the week of 2 March
    # (March has not ended). With the cached copy's follower_base, nothing would be.
    assert len(pending) == 8 + 1, pending


# --------------------------------------------------------------------------- over ASGI


def _signed(token: str, body: bytes, **extra: str) -> tuple[dict[str, str], bytes]:
    ts, nonce = str(int(time.time())), "12345"
    return {
        "signature": signature(token, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        **extra,
    }, body


async def test_a_failed_commit_answers_500_so_wechat_retries(store: Store) -> None:
    account = new_account(store, callback_token="tok")
    app = create_app(Settings(now=NOW.isoformat()), store)
    xml = build_push_xml(
        {
            "ToUserName": "gh",
            "FromUserName": "o1",
            "CreateTime": CT,
            "MsgType": "text",
            "Content": "hi",
            "MsgId": 77,
        }
    )
    url = f"/wechat/callback/{account.appid}"

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        with failing_inserts(store, account):
            params, body = _signed("tok", xml)
            response = await client.post(url, params=params, content=body)
        assert response.status_code == 500
        assert response.text != "success"
        params, body = _signed("tok", xml)
        response = await client.post(url, params=params, content=body)
        assert (response.status_code, response.text) == (200, "success")
    assert count(store, account) == (1, 0)


# --------------------------------------------------------------------------- replay


def test_quarantine_replay_stores_once_after_the_key_is_fixed(store: Store) -> None:
    account = new_account(store, callback_token="tok", aes_key=WRONG_KEY)
    xml = build_push_xml(
        {
            "ToUserName": "gh",
            "FromUserName": "o1",
            "CreateTime": CT,
            "MsgType": "image",
            "MsgId": 4242,
        }
    )
    encrypted = encrypt(AESKey(KEY), xml, account.appid)
    envelope = f"<xml><Encrypt>{cdata(encrypted)}</Encrypt></xml>".encode()
    ts, nonce = "1773100000", "777"
    query = (
        f"signature={signature('tok', ts, nonce)}&timestamp={ts}&nonce={nonce}"
        f"&encrypt_type=aes&msg_signature={msg_signature('tok', ts, nonce, encrypted)}"
    )
    with store.write() as conn:
        for _ in range(2):  # WeChat's retry was quarantined too
            add_entry(
                conn,
                RawPush(account.appid, query, envelope).quarantined("decrypt: bad padding", STAMP),
            )
        forged = add_entry(
            conn,
            RawPush(
                account.appid, query.replace("signature=", "signature=0"), envelope
            ).quarantined("x", STAMP),
        )

    report = replay_quarantine(store, NOW, appid=account.appid)
    assert report.replayed == []
    assert len(report.failed) == 3
    assert count(store, account) == (0, 0)

    with store.write() as conn:
        set_account(conn, account.appid, aes_key=KEY, prev_aes_key=WRONG_KEY)
    report = replay_quarantine(store, NOW, appid=account.appid)
    assert len(report.replayed) == 2
    assert report.written.messages_new == 1
    assert report.written.messages_duplicate == 1
    assert [f[0] for f in report.failed] == [forged]
    assert "bad signature" in report.failed[0][1]
    assert count(store, account) == (1, 0)
    with store.read() as conn:
        entries = get_entries(conn, [*report.replayed, forged])
    assert [e.replayed_at is not None for e in entries] == [True, True, False]
    again = replay_quarantine(store, NOW, report.replayed)
    assert sorted(again.already) == sorted(report.replayed)
    assert count(store, account) == (1, 0)


def test_signature_helpers_agree_with_a_plain_sha1() -> None:
    """The tests above sign with msgcube's helpers; pin them to the definition once."""
    assert signature("tok", "1", "2") == hashlib.sha1(b"12tok").hexdigest()


async def test_commits_leave_the_wal_checkpoint_to_a_thread_of_its_own(tmp_path: Path) -> None:
    """The committer's own commits never copy the WAL back (the pushes they acknowledge
    would wait for it); its background checkpoint does, and the pool's connections get
    SQLite's automatic checkpoint back for every other writer."""
    path = tmp_path / "wal.db"
    store = open_store(f"sqlite:///{path}")
    try:
        account = new_account(store)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        base = path.stat().st_size
        with store.write(checkpoint=False) as conn:  # ~1500 pages: past the 1000-page trigger
            conn.exec_driver_sql("CREATE TABLE ballast (b BLOB)")
            conn.exec_driver_sql("INSERT INTO ballast VALUES (zeroblob(6000000))")
        assert path.stat().st_size == base  # all of it still in the log only
        with store.engine.connect() as conn:  # the connection that wrote, back in the pool
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        committer = GroupCommitter(store, lambda: NOW, checkpoint_every=8)
        await committer.start()
        try:
            for i in range(1, 41):
                await committer.commit(account, message(i, f"o{i % 3}"))
        finally:
            await committer.stop()
        assert committer.stats.checkpoints >= 1
        assert path.stat().st_size > base + 6_000_000
        assert count(store, account) == (40, 0)
    finally:
        store.dispose()
