"""The relay over real HTTP: WeChat-style pushes → ``msgcube serve`` → a real wechatpy bot.

The bot (``support/upstream.py``) is what an account already runs behind its server URL.
Every push goes through a real msgcube server (a subprocess, SQLite file or PostgreSQL)
to the bot on loopback; the tests check that the bot sees the request WeChat sent byte
for byte, that WeChat gets the bot's answer byte for byte (and can decrypt it with
wechatpy), that the statistics equal the brute-force oracle, and — with the bot down,
slow, answering 500 or garbage — that WeChat-style retries reach it again, each push is
stored once, the recorded timings count what happened and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import httpx
import pytest
from sqlalchemy import delete, func, select
from wechatpy import parse_message  # type: ignore[import-untyped]
from wechatpy.crypto import WeChatCrypto  # type: ignore[import-untyped]

from msgcube.domain.periods import local_day_hour
from msgcube.storage.accounts import Account, add_account, get_account, set_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import accounts, events, messages, relay_calls
from support.server import ServerProcess, free_port
from support.upstream import Bot, raw_server, serving
from test_callback import (
    KEY,
    MODES,
    NOW,
    NOW_DT,
    TOKEN,
    TZ,
    WeChat,
    assert_endpoints_match,
    stored_counts,
    traffic,
)

from conftest import PG_URL, _pg_store, fresh_appid
from oracle import OracleAccount

RELAY_TIMEOUT = 2.0
"""The server's relay_timeout here: short, so the slow-upstream test is quick, yet far
above a loopback bot's answer time on a busy machine."""


@dataclass
class Env:
    db: Store
    server: ServerProcess


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp(f"relay-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'msgcube.db'}"
        db = open_store(url)
    else:
        db, url = _pg_store(), PG_URL
    server = ServerProcess(url, workdir, now=NOW, relay_timeout=RELAY_TIMEOUT)
    with server:
        yield Env(db, server)
    db.dispose()


def new_account(db: Store, upstream: str | None = None) -> Account:
    appid = fresh_appid("wxrelay")
    with db.write() as conn:
        add_account(
            conn,
            appid=appid,
            secret="s",
            tz=TZ,
            original_id="gh_test",
            callback_token=TOKEN,
            aes_key=KEY,
            now=int(NOW_DT.timestamp()),
        )
        return set_account(conn, appid, upstream_url=upstream)


def set_upstream(db: Store, account: Account, upstream: str | None) -> None:
    with db.write() as conn:
        set_account(conn, account.appid, upstream_url=upstream)


# --------------------------------------------------------------------------- WeChat's side


@dataclass
class Sent:
    """One push as WeChat sent it (every try is the same request) and what each try got."""

    record: dict[str, Any]
    mode: str
    query_string: str
    body: bytes
    answers: list[httpx.Response | str]

    @property
    def acked(self) -> bool:
        last = self.answers[-1] if self.answers else None
        return isinstance(last, httpx.Response) and last.status_code == 200

    @property
    def key(self) -> str:
        r = self.record
        if r["MsgType"] == "event":
            return f"{r['FromUserName']}/{r['CreateTime']}/{r['Event'].lower()}"
        return str(r["MsgId"])


async def push_like_wechat(
    url: str,
    wechat: WeChat,
    items: list[tuple[dict[str, Any], str]],
    *,
    tries: int = 3,
    concurrency: int = 16,
    on_ack: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """Send each push the way WeChat does: ``text/xml``, 5 s to answer, and the same request
    again after a failure (a non-200 answer, a broken connection or no answer), three
    tries in all. ``on_ack`` is called the moment a push is answered 200."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"content-type": "text/xml"}
    async with httpx.AsyncClient(timeout=5) as client:

        async def one(record: dict[str, Any], mode: str) -> Sent:
            query, body = wechat.request(record, mode)
            sent = Sent(record, mode, urlencode(query), body, [])
            async with sem:
                for _ in range(tries):
                    try:
                        answer = await client.post(
                            f"{url}?{sent.query_string}", content=body, headers=headers
                        )
                    except httpx.TimeoutException:
                        sent.answers.append("timeout")
                        continue
                    except httpx.TransportError as exc:
                        sent.answers.append(type(exc).__name__)
                        continue
                    sent.answers.append(answer)
                    if answer.status_code == 200:
                        if on_ack is not None:
                            on_ack(sent)
                        break
            return sent

        return await asyncio.gather(*(one(r, m) for r, m in items))


def callback_url(server: ServerProcess, account: Account) -> str:
    return f"{server.base_url}/wechat/callback/{account.appid}"


def open_reply(answer: bytes, mode: str, appid: str) -> Any:
    """The passive reply WeChat would show the user, opened with wechatpy."""
    xml = answer.decode("utf-8")
    if mode != "plain":
        sealed = ET.fromstring(xml)
        crypto = WeChatCrypto(TOKEN, KEY, appid)
        xml = crypto.decrypt_message(
            xml,
            sealed.findtext("MsgSignature"),
            sealed.findtext("TimeStamp"),
            sealed.findtext("Nonce"),
        )
    return parse_message(xml)


# --------------------------------------------------------------------------- msgcube's side


def calls_of(db: Store, account: Account, expected: int, timeout: float = 15.0) -> list[Any]:
    """The account's relay_calls once ``expected`` rows are there (they land within ~1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(relay_calls)
                .where(relay_calls.c.account_id == account.id)
                .order_by(relay_calls.c.id)
            ).all()
        if len(rows) >= expected or time.monotonic() > deadline:
            return list(rows)
        time.sleep(0.1)


def assert_stored_once(db: Store, account: Account, sent: list[Sent]) -> None:
    """Every push is stored exactly once (they all reached the gate at least once)."""
    with db.read() as conn:
        per_msg = dict(
            conn.execute(
                select(messages.c.msg_id, func.count())
                .where(messages.c.account_id == account.id)
                .group_by(messages.c.msg_id)
            ).all()
        )
        n_events = conn.execute(
            select(func.count()).where(events.c.account_id == account.id)
        ).scalar_one()
    msg_ids = [s.record["MsgId"] for s in sent if "MsgId" in s.record]
    assert sorted(per_msg) == sorted(msg_ids)
    assert set(per_msg.values()) <= {1}
    assert n_events == len({s.key for s in sent if "MsgId" not in s.record})


# --------------------------------------------------------------------------- the happy path


def test_replies_arrive_byte_for_byte_in_all_modes_and_statistics_match(env: Env) -> None:
    account = new_account(env.db)
    bot = Bot(account.appid, TOKEN, KEY)
    wechat = WeChat(account.appid)
    pushes = traffic(71, 240, users=25)
    items = [(p, MODES[i % 3]) for i, p in enumerate(pushes)]
    with serving(bot) as bot_url:
        set_upstream(env.db, account, bot_url + "/wechat?from=msgcube")
        sent = asyncio.run(push_like_wechat(callback_url(env.server, account), wechat, items))
        # The same kind of pushes straight to the bot: the answers have the same shape.
        direct = asyncio.run(push_like_wechat(bot_url + "/wechat", wechat, items[:9]))

    assert [len(s.answers) for s in sent] == [1] * len(sent)
    journal = {s.query_string.removeprefix(b"from=msgcube&"): s for s in bot.journal}
    assert len(journal) == len(bot.journal) == len(sent) + len(direct)
    texts = 0
    for s in sent:
        answer = s.answers[0]
        assert isinstance(answer, httpx.Response)
        seen = journal[s.query_string.encode()]
        # The bot got WeChat's request unchanged ...
        assert (seen.method, seen.content_type, seen.body) == ("POST", "text/xml", s.body)
        assert seen.status == 200 and seen.attempt == 1
        # ... and WeChat got the bot's answer unchanged.
        assert answer.status_code == 200
        assert answer.content == seen.answer
        assert answer.headers.get("content-type") == seen.answer_type
        kind = s.record["MsgType"]
        if kind == "text":
            reply = open_reply(answer.content, s.mode, account.appid)
            assert (reply.type, reply.content) == ("text", f"echo: {s.record['Content']}")
            assert (reply.source, reply.target) == ("gh_test", s.record["FromUserName"])
            texts += 1
        elif kind == "event":
            assert answer.content == b"success"
        else:
            assert answer.content == b"" and "content-type" not in answer.headers
    assert texts >= 20
    for d in direct:
        answer = d.answers[0]
        assert isinstance(answer, httpx.Response)
        if d.record["MsgType"] == "text":
            reply = open_reply(answer.content, d.mode, account.appid)
            assert reply.content == f"echo: {d.record['Content']}"

    oracle = OracleAccount(TZ)
    oracle.store(pushes)
    m, e, q = stored_counts(env.db, account)
    assert (m, e, q) == (len(oracle.messages), len(oracle.events), 0)
    assert assert_endpoints_match(env.db, account.appid, oracle) > 50

    calls = calls_of(env.db, account, len(sent))
    assert len(calls) == len(sent)
    assert not any(c.failed for c in calls)
    received_at = int(NOW_DT.timestamp())  # the server's clock is pinned
    assert {(c.received_at, c.day, c.hour) for c in calls} == {
        (received_at, *local_day_hour(received_at, TZ))
    }
    assert all(0 <= c.cost_ms < RELAY_TIMEOUT * 1000 for c in calls)


# --------------------------------------------------------------------------- faults


def fault_run(
    env: Env, upstream: str, pushes: list[dict[str, Any]], account: Account
) -> list[Sent]:
    set_upstream(env.db, account, upstream)
    wechat = WeChat(account.appid)
    items = [(p, MODES[i % 3]) for i, p in enumerate(pushes)]
    return asyncio.run(push_like_wechat(callback_url(env.server, account), wechat, items))


def statuses(s: Sent) -> list[int | str]:
    return [a.status_code if isinstance(a, httpx.Response) else a for a in s.answers]


def test_upstream_answering_500_gets_wechats_retry(env: Env) -> None:
    account = new_account(env.db)
    bot = Bot(account.appid, TOKEN, KEY, plan=lambda key, attempt: "500" if attempt == 1 else "")
    pushes = traffic(72, 18)
    with serving(bot) as url:
        sent = fault_run(env, url, pushes, account)
    assert [statuses(s) for s in sent] == [[502, 200]] * len(sent)
    assert all(s.answers[0].text == "upstream answered 500" for s in sent)  # type: ignore[union-attr]
    for s in sent:  # the retry reached the bot, which answered it
        assert [(x.attempt, x.status) for x in bot.seen(s.key)] == [(1, 500), (2, 200)]
    assert_stored_once(env.db, account, sent)
    calls = calls_of(env.db, account, 2 * len(sent))
    assert len(calls) == 2 * len(sent)
    assert sum(c.failed for c in calls) == len(sent)


def test_upstream_slower_than_relay_timeout_gets_wechats_retry(env: Env) -> None:
    account = new_account(env.db)
    bot = Bot(
        account.appid,
        TOKEN,
        KEY,
        slow_seconds=RELAY_TIMEOUT + 1.5,
        plan=lambda key, attempt: "slow" if attempt == 1 else "",
    )
    pushes = traffic(73, 12)
    with serving(bot) as url:
        sent = fault_run(env, url, pushes, account)
    assert [statuses(s) for s in sent] == [[504, 200]] * len(sent)
    assert all(bot.attempts[s.key] == 2 for s in sent)
    assert_stored_once(env.db, account, sent)
    calls = calls_of(env.db, account, 2 * len(sent))
    failed = [c.cost_ms for c in calls if c.failed]
    assert len(calls) == 2 * len(sent) and len(failed) == len(sent)
    # A timed-out call costs the whole relay_timeout: max_time_cost shows the slow upstream.
    assert min(failed) >= RELAY_TIMEOUT * 1000
    assert max(c.cost_ms for c in calls if not c.failed) < min(failed)


def test_upstream_down_then_back(env: Env) -> None:
    account = new_account(env.db)
    port = free_port()
    pushes = traffic(74, 12)
    sent = fault_run(env, f"http://127.0.0.1:{port}/wx", pushes, account)
    # Every try failed: WeChat gave up after three, yet each push is stored, once.
    assert [statuses(s) for s in sent] == [[502, 502, 502]] * len(sent)
    first = sent[0].answers[0]
    assert isinstance(first, httpx.Response) and first.text.startswith("upstream unreachable")
    assert_stored_once(env.db, account, sent)
    calls = calls_of(env.db, account, 3 * len(sent))
    assert len(calls) == 3 * len(sent) and all(c.failed for c in calls)
    # The bot comes back on its port: the next push of each (a retry) reaches it.
    bot = Bot(account.appid, TOKEN, KEY)
    with serving(bot, port=port):
        again = fault_run(env, f"http://127.0.0.1:{port}/wx", pushes, account)
    assert [statuses(s) for s in again] == [[200]] * len(again)
    assert len(bot.journal) == len(pushes)
    assert_stored_once(env.db, account, sent)
    assert len(calls_of(env.db, account, 4 * len(sent))) == 4 * len(sent)


@pytest.mark.parametrize("kind", ["garbage", "reset"])
def test_upstream_answering_garbage_or_resetting(env: Env, kind: str) -> None:
    account = new_account(env.db)
    pushes = traffic(75, 9)
    with raw_server(kind) as upstream:
        sent = fault_run(env, upstream.url + "/wx", pushes, account)
    assert [statuses(s) for s in sent] == [[502, 502, 502]] * len(sent)
    assert len(upstream.hits) == 3 * len(sent)  # every retry reached it
    assert all(h.startswith(b"POST /wx?signature=") for h in upstream.hits)
    assert_stored_once(env.db, account, sent)
    calls = calls_of(env.db, account, 3 * len(sent))
    assert len(calls) == 3 * len(sent) and all(c.failed for c in calls)


# --------------------------------------------------------------------------- durability


@pytest.mark.slow
def test_acknowledged_pushes_survive_sigkill_with_an_upstream(env: Env, tmp_path: Path) -> None:
    """SIGKILL mid-stream: every push the bot's answer reached WeChat for is stored once;
    WeChat's retries after the restart store the rest, still once each."""
    account = new_account(env.db)
    bot = Bot(account.appid, TOKEN, KEY)
    wechat = WeChat(account.appid)
    pushes = traffic(76, 1500, users=120)
    proc = ServerProcess(env.server.db, tmp_path, now=NOW, relay_timeout=RELAY_TIMEOUT)
    acked: list[dict[str, Any]] = []
    killed = threading.Event()
    with serving(bot) as url:
        set_upstream(env.db, account, url + "/wx")
        proc.start()

        def kill_at_500(sent: Sent) -> None:
            acked.append(sent.record)
            if len(acked) == 500 and proc.proc is not None:
                os.killpg(proc.proc.pid, signal.SIGKILL)
                killed.set()

        items = [(p, MODES[i % 3]) for i, p in enumerate(pushes)]
        try:
            target = callback_url(proc, account)
            asyncio.run(
                push_like_wechat(target, wechat, items, tries=1, concurrency=32, on_ack=kill_at_500)
            )
            assert killed.is_set()
            proc.stop()
            assert 500 <= len(acked) < len(pushes)
            with env.db.read() as conn:
                stored = set(
                    conn.execute(
                        select(messages.c.msg_id).where(messages.c.account_id == account.id)
                    ).scalars()
                )
            assert [p["MsgId"] for p in acked if "MsgId" in p and p["MsgId"] not in stored] == []

            proc.start()  # WeChat's retries reach the restarted server
            resent = asyncio.run(
                push_like_wechat(
                    callback_url(proc, account),
                    wechat,
                    [(p, "safe") for p in pushes],
                    concurrency=32,
                )
            )
            assert all(s.acked for s in resent)
        finally:
            proc.stop()
    assert_stored_once(env.db, account, resent)
    oracle = OracleAccount(TZ)
    oracle.store(pushes)
    assert_endpoints_match(env.db, account.appid, oracle)


# --------------------------------------------------------------------------- what is not relayed


def test_handshake_and_refused_pushes_never_reach_the_upstream(env: Env) -> None:
    account = new_account(env.db)
    bot = Bot(account.appid, TOKEN, KEY)
    wechat = WeChat(account.appid)
    target = callback_url(env.server, account)
    with serving(bot) as url:
        set_upstream(env.db, account, url)
        query, _ = wechat.request(traffic(77, 1)[0], "plain")
        handshake = httpx.get(target, params=query | {"echostr": "4375120948345356249"})
        assert (handshake.status_code, handshake.text) == (200, "4375120948345356249")
        query, body = wechat.request(traffic(77, 1)[0], "safe")
        forged = httpx.post(target, params=query | {"signature": "0" * 40}, content=body)
        assert forged.status_code == 403
        bad_msg_sig = httpx.post(target, params=query | {"msg_signature": "0" * 40}, content=body)
        assert bad_msg_sig.status_code == 403
        garbled = httpx.post(target, params=query, content=body.replace(b"<Encrypt>", b"<E>"))
        # Without its Encrypt element msg_signature cannot be checked: refused, not forwarded.
        assert (garbled.status_code, "msg_signature cannot be checked" in garbled.text) == (
            403,
            True,
        )
        query, body = wechat.request(traffic(77, 1)[0], "plain")
        broken = httpx.post(target, params=query, content=body.replace(b"</xml>", b""))
        assert broken.status_code == 400  # signed but unreadable: quarantined, not forwarded
    assert bot.journal == []
    assert stored_counts(env.db, account)[:2] == (0, 0)


def test_a_failed_commit_is_a_failure_even_when_the_upstream_replied(env: Env) -> None:
    """The account vanishes from the database while the server still has it cached: the
    gate lets the push through, the bot answers it, the commit fails → 500, not the
    bot's answer (WeChat retries; nothing is acknowledged that was not stored)."""
    account = new_account(env.db)
    bot = Bot(account.appid, TOKEN, KEY)
    wechat = WeChat(account.appid)
    first, second = traffic(78, 2)
    with serving(bot) as url:
        set_upstream(env.db, account, url)
        target = callback_url(env.server, account)
        ok = asyncio.run(push_like_wechat(target, wechat, [(first, "plain")]))[0]
        assert ok.acked
        with env.db.write() as conn:
            conn.execute(delete(accounts).where(accounts.c.id == account.id))
        failed = asyncio.run(push_like_wechat(target, wechat, [(second, "plain")], tries=1))[0]
    answer = failed.answers[0]
    assert isinstance(answer, httpx.Response)
    assert (answer.status_code, answer.text) == (500, "could not store")
    assert [x.status for x in bot.seen(failed.key)] == [200]
    with env.db.read() as conn:
        assert get_account(conn, account.appid) is None
        assert (
            conn.execute(
                select(func.count()).where(messages.c.msg_id == second.get("MsgId", -1))
            ).scalar_one()
            == 0
        )
