"""The callback over real HTTP: ``msgcube serve`` in a subprocess, pushes built by wechatpy.

Encrypted pushes are sealed by wechatpy's ``WeChatCrypto`` (a third-party implementation
of WeChat's scheme) and the push XML is written here by hand, so the server is not
checked only against its own ``wechat`` package. The clock is pinned (``MSGCUBE_NOW``)
after the pushed days, so afterwards every one of the seven endpoints can be compared
with the brute-force oracle over the very pushes that were acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest
from sqlalchemy import func, select
from wechatpy.crypto import WeChatCrypto  # type: ignore[import-untyped]

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.ingest.batch import import_followers
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account, set_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import events, messages, quarantine
from support.server import ServerProcess, msgcube_env, run_msgcube

from conftest import STAMP
from oracle import OracleAccount

NOW = "2026-03-10T09:00:00+08:00"
NOW_DT = datetime.fromisoformat(NOW)
TZ = "Asia/Shanghai"
FIRST_DAY = date(2026, 2, 16)  # a Monday; pushes cover three closed weeks and February
LAST_DAY = date(2026, 3, 8)
TOKEN = "cb-token-0123"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
MODES = ("plain", "compat", "safe")


# --------------------------------------------------------------------------- WeChat's side


def xml_of(record: dict[str, Any]) -> str:
    """A push as WeChat writes it: strings in CDATA, numbers bare (written here by hand)."""
    parts = []
    for name, value in record.items():
        text = str(value) if isinstance(value, int) else f"<![CDATA[{value}]]>"
        parts.append(f"<{name}>{text}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


class WeChat:
    """Builds pushes for one account the way WeChat's servers do."""

    def __init__(self, appid: str, token: str = TOKEN, key: str = KEY) -> None:
        self.appid, self.token = appid, token
        self.crypto = WeChatCrypto(token, key, appid)

    def sign(self, timestamp: str, nonce: str) -> str:
        joined = "".join(sorted([self.token, timestamp, nonce]))
        return hashlib.sha1(joined.encode()).hexdigest()

    def request(self, record: dict[str, Any] | str, mode: str) -> tuple[dict[str, str], bytes]:
        """``(query, body)``; ``record`` may be raw XML text to send as the plaintext."""
        xml = record if isinstance(record, str) else xml_of(record)
        ts, nonce = str(int(time.time())), str(random.randrange(10**9, 10**10))
        query = {"signature": self.sign(ts, nonce), "timestamp": ts, "nonce": nonce}
        if mode == "plain":
            return query, xml.encode()
        sealed = ET.fromstring(self.crypto.encrypt_message(xml, nonce, ts))
        encrypted = sealed.findtext("Encrypt") or ""
        query |= {"encrypt_type": "aes", "msg_signature": sealed.findtext("MsgSignature") or ""}
        if mode == "compat":
            body = xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
        else:
            body = (
                f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
            )
        return query, body.encode()


def traffic(seed: int, n: int, users: int = 12) -> list[dict[str, Any]]:
    """Every message type and event, spread over the pushed days, in CreateTime order."""
    rng = random.Random(seed)
    openids = [f"o{seed}_{i:03d}_{secrets.token_hex(4)}" for i in range(users)]
    start = int(datetime(2026, 2, 16, tzinfo=NOW_DT.tzinfo).timestamp())
    span = int((LAST_DAY - FIRST_DAY + timedelta(days=1)).total_seconds())
    extras: dict[str, dict[str, Any]] = {
        "text": {"Content": "你好 <b>&amp; ]]"},
        "image": {"PicUrl": "http://mmbiz.qpic.cn/x/0", "MediaId": "m1"},
        "voice": {"MediaId": "m2", "Format": "amr", "MediaId16K": "m3"},
        "video": {"MediaId": "m4", "ThumbMediaId": "t4"},
        "shortvideo": {"MediaId": "m5", "ThumbMediaId": "t5"},
        "location": {
            "Location_X": "23.134521",
            "Location_Y": "113.358803",
            "Scale": 20,
            "Label": "广州",
        },
        "link": {"Title": "t", "Description": "d", "Url": "http://example.com/"},
    }
    kinds = [*extras, "event"]
    out = []
    for i in range(n):
        ct = start + rng.randrange(span)
        base: dict[str, Any] = {
            "ToUserName": "gh_test",
            "FromUserName": rng.choice(openids),
            "CreateTime": ct,
        }
        kind = kinds[i % len(kinds)] if i < 2 * len(kinds) else rng.choice(kinds)
        if kind == "event":
            event = rng.choice(["subscribe", "unsubscribe", "subscribe", "CLICK", "SCAN", "VIEW"])
            out.append(base | {"MsgType": "event", "Event": event, "EventKey": ""})
        else:
            msg_id = seed * 10**12 + i + 1
            out.append(base | {"MsgType": kind} | extras[kind] | {"MsgId": msg_id})
    out.sort(key=lambda r: r["CreateTime"])
    return out


async def send_all(
    base_url: str,
    wechat: WeChat,
    items: list[tuple[dict[str, Any] | str, str]],
    concurrency: int = 16,
) -> list[httpx.Response]:
    url = f"{base_url}/wechat/callback/{wechat.appid}"
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(record: dict[str, Any] | str, mode: str) -> httpx.Response:
            query, body = wechat.request(record, mode)
            async with sem:
                return await client.post(url, params=query, content=body)

        return await asyncio.gather(*(one(r, m) for r, m in items))


def post(
    server: ServerProcess, wechat: WeChat, record: dict[str, Any] | str, mode: str, **overrides: str
) -> httpx.Response:
    query, body = wechat.request(record, mode)
    return httpx.post(
        f"{server.base_url}/wechat/callback/{wechat.appid}",
        params=query | overrides,
        content=body,
        timeout=10,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("callback")


@pytest.fixture(scope="module")
def db(workdir: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{workdir / 'msgcube.db'}")
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def server(db: Store, workdir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(workdir / "msgcube.db", workdir, now=NOW) as proc:
        yield proc


_accounts = iter(range(1, 10_000))


def new_account(
    db: Store, *, token: str = TOKEN, key: str | None = KEY, prev: str | None = None
) -> Account:
    appid = f"wxcb{os.getpid()}n{next(_accounts)}"
    with db.write() as conn:
        add_account(
            conn, appid=appid, secret="s", tz=TZ, callback_token=token, aes_key=key, now=STAMP
        )
        if prev:
            from msgcube.storage.accounts import set_account

            set_account(conn, appid, prev_aes_key=prev)
        account = get_account(conn, appid)
    assert account is not None
    return account


def stored_counts(db: Store, account: Account) -> tuple[int, int, int]:
    """(message rows, event rows, quarantine rows) of the account."""
    with db.read() as conn:
        m = conn.execute(select(func.count()).where(messages.c.account_id == account.id))
        e = conn.execute(select(func.count()).where(events.c.account_id == account.id))
        q = conn.execute(select(func.count()).where(quarantine.c.appid == account.appid))
        return m.scalar_one(), e.scalar_one(), q.scalar_one()


def quarantine_rows(db: Store, account: Account) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                select(quarantine)
                .where(quarantine.c.appid == account.appid)
                .order_by(quarantine.c.id)
            )
        )


def windows(first: date, last: date, span: int) -> Iterator[tuple[str, str]]:
    d = first
    while d <= last:
        end = min(last, d + timedelta(days=span - 1))
        yield d.isoformat(), end.isoformat()
        d = end + timedelta(days=1)


def assert_endpoints_match(db: Store, appid: str, oracle: OracleAccount) -> int:
    """All seven endpoints over the pushed days equal the oracle's; returns rows compared."""
    with db.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    compared = 0
    for ep in ENDPOINTS:
        span = 1 if ep.name == "getupstreammsghour" else min(ep.span_classic, 7)
        for begin, end in windows(
            FIRST_DAY - timedelta(days=1), LAST_DAY + timedelta(days=1), span
        ):
            got = served_list(db, account, ep, begin, end, NOW_DT)
            want = oracle.served(ep.name, begin, end, NOW_DT)
            assert got == want, (ep.name, begin, end)
            compared += len(got)
    return compared


# --------------------------------------------------------------------------- handshake


def test_get_handshake_echoes_echostr_verbatim(server: ServerProcess, db: Store) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    ts, nonce = "1714036504", "1514711492"
    echostr = "4375120948345356249 <&>\"' 中文"
    url = f"{server.base_url}/wechat/callback/{account.appid}"
    ok = httpx.get(
        url,
        params={
            "signature": wechat.sign(ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echostr,
        },
    )
    assert ok.status_code == 200
    assert ok.text == echostr
    assert ok.headers["content-type"].startswith("text/plain")
    bad = httpx.get(
        url, params={"signature": "0" * 40, "timestamp": ts, "nonce": nonce, "echostr": echostr}
    )
    assert bad.status_code == 403
    assert echostr not in bad.text
    assert httpx.get(url).status_code == 403


def test_wechat_documented_handshake_example(server: ServerProcess, db: Store) -> None:
    """wechat-notes §4.1's worked example: Token AAAAA → f464b24f…"""
    account = new_account(db, token="AAAAA")
    response = httpx.get(
        f"{server.base_url}/wechat/callback/{account.appid}",
        params={
            "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
            "timestamp": "1714036504",
            "nonce": "1514711492",
            "echostr": "4375120948345356249",
        },
    )
    assert (response.status_code, response.text) == (200, "4375120948345356249")


def test_unknown_appid_is_404(server: ServerProcess) -> None:
    wechat = WeChat("wxnosuchaccount")
    assert post(server, wechat, traffic(1, 1)[0], "plain").status_code == 404
    assert httpx.get(f"{server.base_url}/wechat/callback/wxnosuchaccount").status_code == 404


# --------------------------------------------------------------------------- the data path


def test_every_type_and_event_in_all_modes_matches_the_oracle(
    server: ServerProcess, db: Store
) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    pushes = traffic(7, 420)
    base = sorted({p["FromUserName"] for p in pushes})[::2]
    oracle = OracleAccount(TZ)
    with db.write() as conn:  # a known follower base, so count_interval 0 is served too
        import_followers(conn, account, base, NOW_DT.date())
    oracle.import_followers(base, today=NOW_DT.date())

    items = [(p, MODES[i % 3]) for i, p in enumerate(pushes)]
    responses = asyncio.run(send_all(server.base_url, wechat, items))
    assert [(r.status_code, r.text) for r in responses] == [(200, "success")] * len(pushes)
    oracle.store(pushes)

    m, e, q = stored_counts(db, account)
    assert m == sum(p["MsgType"] != "event" for p in pushes)
    assert e == len(
        {
            (p["FromUserName"], p["CreateTime"], p["Event"])
            for p in pushes
            if p["MsgType"] == "event"
        }
    )
    assert q == 0
    with db.read() as conn:  # location is stored, not counted
        query = select(messages.c.msg_type_name).where(messages.c.account_id == account.id)
        names = set(conn.execute(query).scalars())
    assert names == {"text", "image", "voice", "video", "shortvideo", "location", "link"}
    assert assert_endpoints_match(db, account.appid, oracle) > 50


def test_same_push_four_times_concurrently_and_retried_in_another_mode_counts_once(
    server: ServerProcess, db: Store
) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    pushes = traffic(11, 24)
    oracle = OracleAccount(TZ)
    for i, mode in enumerate(MODES):
        batch = pushes[i * 8 : (i + 1) * 8]
        items = [(p, mode) for p in batch for _ in range(4)]
        random.Random(i).shuffle(items)
        responses = asyncio.run(send_all(server.base_url, wechat, items, concurrency=32))
        assert {(r.status_code, r.text) for r in responses} == {(200, "success")}
        retry_mode = MODES[(i + 1) % 3]
        responses = asyncio.run(send_all(server.base_url, wechat, [(p, retry_mode) for p in batch]))
        assert {(r.status_code, r.text) for r in responses} == {(200, "success")}
        oracle.store(batch)
    m, e, _ = stored_counts(db, account)
    assert m == len(oracle.messages)
    assert e == len(oracle.events)
    with db.read() as conn:
        worst = conn.execute(
            select(func.count())
            .where(messages.c.account_id == account.id)
            .group_by(messages.c.msg_id)
            .order_by(func.count().desc())
            .limit(1)
        ).scalar_one()
    assert worst == 1
    assert_endpoints_match(db, account.appid, oracle)


def test_previous_aes_key_still_opens_pushes(server: ServerProcess, db: Store) -> None:
    account = new_account(db, key=OTHER_KEY, prev=KEY)  # rotated: WeChat still uses KEY
    push = traffic(13, 1)[0]
    for mode in ("compat", "safe"):
        response = post(server, WeChat(account.appid, key=KEY), push, mode)
        assert (response.status_code, response.text) == (200, "success")
        response = post(server, WeChat(account.appid, key=OTHER_KEY), push, mode)
        assert (response.status_code, response.text) == (200, "success")
    assert stored_counts(db, account)[:2] in ((1, 0), (0, 1))


def test_a_key_changed_a_moment_ago_is_used_at_once(server: ServerProcess, db: Store) -> None:
    """The server caches accounts for a second; a push that fails to open re-reads first."""
    account = new_account(db, key=OTHER_KEY)
    pushes = traffic(43, 2)
    response = post(server, WeChat(account.appid, key=OTHER_KEY), pushes[0], "safe")
    assert (response.status_code, response.text) == (200, "success")  # now cached
    with db.write() as conn:
        set_account(conn, account.appid, aes_key=KEY)
    response = post(server, WeChat(account.appid, key=KEY), pushes[1], "safe")
    assert (response.status_code, response.text) == (200, "success")
    assert stored_counts(db, account) == (2, 0, 0)


# --------------------------------------------------------------------------- hardening


def test_bad_signatures_are_403_and_store_nothing(server: ServerProcess, db: Store) -> None:
    account = new_account(db)
    push = traffic(17, 1)[0] | {"MsgType": "text", "MsgId": 99, "Content": "x"}
    impostor = WeChat(account.appid, token="not-the-token")
    for mode in MODES:
        assert post(server, impostor, push, mode).status_code == 403
    wechat = WeChat(account.appid)
    assert post(server, wechat, push, "plain", signature="f" * 40).status_code == 403
    assert post(server, wechat, push, "plain", signature="").status_code == 403
    assert post(server, wechat, push, "safe", msg_signature="0" * 40).status_code == 403
    assert post(server, wechat, push, "compat", msg_signature="").status_code == 403
    # A valid signature but a different nonce than the one signed:
    assert post(server, wechat, push, "plain", nonce="123").status_code == 403
    # Swapping the ciphertext under a valid msg_signature (the envelope has no MAC).
    query, _ = wechat.request(push, "safe")
    _, other = wechat.request(push | {"MsgId": 100}, "safe")
    swapped = httpx.post(
        f"{server.base_url}/wechat/callback/{account.appid}", params=query, content=other
    )
    assert swapped.status_code == 403
    assert stored_counts(db, account) == (0, 0, 0)


def test_account_without_token_refuses_everything(server: ServerProcess, db: Store) -> None:
    account = new_account(db, token="")
    wechat = WeChat(account.appid, token="")
    assert post(server, wechat, traffic(19, 1)[0], "plain").status_code == 403
    assert stored_counts(db, account) == (0, 0, 0)


def test_body_over_64_kib_is_413(server: ServerProcess, db: Store) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    big = {
        "ToUserName": "gh",
        "FromUserName": "o1",
        "CreateTime": 1771900000,
        "MsgType": "text",
        "Content": "x" * (64 * 1024),
        "MsgId": 5,
    }
    for mode in MODES:
        assert post(server, wechat, big, mode).status_code == 413
    fits = big | {"Content": "x" * (60 * 1024)}
    assert post(server, wechat, fits, "plain").status_code == 200
    assert stored_counts(db, account) == (1, 0, 0)


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
    + "".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]><xml><ToUserName>gh</ToUserName><FromUserName>&i;</FromUserName>"
    "<CreateTime>1771900000</CreateTime><MsgType>text</MsgType><MsgId>7</MsgId></xml>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<xml><FromUserName>&x;</FromUserName><CreateTime>1771900000</CreateTime>"
    "<MsgType>text</MsgType><MsgId>8</MsgId></xml>"
)


@pytest.mark.parametrize("mode", ["plain", "safe"])  # compat: see the envelope test
def test_dtd_and_entities_rejected_and_quarantined(
    server: ServerProcess, db: Store, mode: str
) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    for body in (BILLION_LAUGHS, XXE):
        # Refused, never expanded (&i; would be 1 GB of text); its speed: bench/speed.py.
        response = post(server, wechat, body, mode)
        assert response.status_code == 400
    rows = quarantine_rows(db, account)
    assert len(rows) == 2
    assert all("DTD" in r.reason for r in rows), [r.reason for r in rows]
    if mode == "plain":
        assert rows[0].body == BILLION_LAUGHS.encode()  # verbatim, never expanded
    assert "timestamp=" in rows[0].query
    assert "nonce=" in rows[0].query
    assert stored_counts(db, account)[:2] == (0, 0)


@pytest.mark.parametrize("mode", ["compat", "safe"])
def test_an_envelope_msg_signature_cannot_cover_is_403_and_never_quarantined(
    server: ServerProcess, db: Store, mode: str
) -> None:
    """A captured signed query string replayed with bodies whose ``Encrypt`` cannot be
    found: nothing about those bodies is authenticated, so nothing is kept."""
    account = new_account(db)
    wechat = WeChat(account.appid)
    query, _ = wechat.request(traffic(23, 1)[0], mode)
    bodies = [
        b'<!DOCTYPE xml [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>',
        BILLION_LAUGHS.replace("</xml>", "<Encrypt>AAAA</Encrypt></xml>").encode(),
        b"\xff\xfe not xml at all" * 1000,
        b"<xml><ToUserName>gh</ToUserName></xml>",  # no Encrypt
        b"<xml><Encrypt></Encrypt></xml>",
    ]
    for body in bodies:
        response = httpx.post(
            f"{server.base_url}/wechat/callback/{account.appid}", params=query, content=body
        )
        assert response.status_code == 403, (body[:40], response.text)
        assert "msg_signature cannot be checked" in response.text
    assert stored_counts(db, account) == (0, 0, 0)


def test_invalid_record_is_400_and_quarantined(server: ServerProcess, db: Store) -> None:
    account = new_account(db)
    wechat = WeChat(account.appid)
    no_msgid = {
        "ToUserName": "gh",
        "FromUserName": "o1",
        "CreateTime": 1771900000,
        "MsgType": "text",
        "Content": "hi",
    }
    cases = [(no_msgid, "safe"), ("<xml><a>unclosed</xml>", "plain"), ("\xff", "safe")]
    for record, mode in cases:
        assert post(server, wechat, record, mode).status_code == 400
    reasons = [r.reason for r in quarantine_rows(db, account)]
    assert reasons[0] == "record: MsgId is missing"
    assert reasons[1].startswith("xml: malformed XML")
    assert len(reasons) == 3
    assert stored_counts(db, account)[:2] == (0, 0)


def test_wrong_aes_key_and_appid_are_quarantined_then_replayed_after_the_fix(
    server: ServerProcess, db: Store, workdir: Path
) -> None:
    account = new_account(db, key=OTHER_KEY)  # misconfigured: WeChat encrypts with KEY
    pushes = traffic(29, 3)
    responses = [
        post(server, WeChat(account.appid), p, m)
        for p, m in zip(pushes, ("safe", "compat", "safe"), strict=True)
    ]
    assert [r.status_code for r in responses] == [400, 400, 400]
    # Sealed for another appid with the right key: never opens, whatever the key.
    stranger = WeChat(account.appid)
    stranger.crypto = WeChatCrypto(TOKEN, KEY, "wxsomeoneelse")
    assert post(server, stranger, traffic(31, 1)[0], "safe").status_code == 400
    rows = quarantine_rows(db, account)
    assert len(rows) == 4
    assert all(r.reason.startswith("decrypt: ") for r in rows), [r.reason for r in rows]
    assert stored_counts(db, account)[:2] == (0, 0)

    env = msgcube_env(workdir / "msgcube.db", NOW)
    listing = run_msgcube("quarantine", "list", "--appid", account.appid, env=env)
    assert listing.count("pending") == 4
    shown = run_msgcube("quarantine", "show", str(rows[0].id), env=env)
    assert "encrypt_type=aes" in shown
    assert "<Encrypt>" in shown
    run_msgcube("account", "set", "--appid", account.appid, "--aes-key", KEY, env=env)
    with db.read() as conn:
        rotated = get_account(conn, account.appid)
    assert rotated is not None
    assert (rotated.aes_key, rotated.prev_aes_key) == (KEY, OTHER_KEY)  # the old key stays
    with pytest.raises(RuntimeError, match="43 characters"):
        run_msgcube("account", "set", "--appid", account.appid, "--aes-key", "short", env=env)
    with pytest.raises(RuntimeError, match="1 still failing") as failed:
        run_msgcube("quarantine", "replay", "--appid", account.appid, env=env)
    assert "appid mismatch" in str(failed.value)
    assert stored_counts(db, account)[0] + stored_counts(db, account)[1] == 3
    again = run_msgcube("quarantine", "replay", str(rows[0].id), env=env)
    assert "1 already replayed" in again
    # The replayed pushes count like any others: a WeChat retry now is a duplicate.
    for p in pushes:
        assert post(server, WeChat(account.appid), p, "plain").status_code == 200
    oracle = OracleAccount(TZ)
    oracle.store(pushes)
    assert stored_counts(db, account)[:2] == (len(oracle.messages), len(oracle.events))
    assert_endpoints_match(db, account.appid, oracle)


def test_unknown_encrypt_type_is_quarantined(server: ServerProcess, db: Store) -> None:
    account = new_account(db)
    response = post(server, WeChat(account.appid), traffic(37, 1)[0], "plain", encrypt_type="rot13")
    assert response.status_code == 400
    assert [r.reason for r in quarantine_rows(db, account)] == ["unknown encrypt_type 'rot13'"]


# --------------------------------------------------------------------------- durability


@pytest.mark.slow
def test_acknowledged_pushes_survive_sigkill(db: Store, workdir: Path) -> None:
    """SIGKILL mid-stream: every push answered ``success`` is stored once; resending all
    (WeChat's retries) then stores the rest, still once each."""
    account = new_account(db)
    wechat = WeChat(account.appid)
    pushes = traffic(41, 4000, users=300)
    acked: list[dict[str, Any]] = []
    killed = threading.Event()
    sub = workdir / "sigkill"
    sub.mkdir()
    proc = ServerProcess(workdir / "msgcube.db", sub, now=NOW).start()

    async def stream() -> None:
        url = f"{proc.base_url}/wechat/callback/{account.appid}"
        queue = iter(enumerate(pushes))
        async with httpx.AsyncClient(timeout=5) as client:

            async def worker() -> None:
                for i, push in queue:
                    query, body = wechat.request(push, MODES[i % 3])
                    try:
                        response = await client.post(url, params=query, content=body)
                    except httpx.HTTPError:
                        continue
                    if response.status_code == 200 and response.text == "success":
                        acked.append(push)
                        if len(acked) == 1200 and proc.proc is not None:
                            os.killpg(proc.proc.pid, signal.SIGKILL)
                            killed.set()

            await asyncio.gather(*(worker() for _ in range(32)))

    asyncio.run(stream())
    assert killed.is_set()
    proc.stop()
    assert 1200 <= len(acked) < len(pushes)

    def stored_once() -> None:
        with db.read() as conn:
            rows = conn.execute(
                select(messages.c.msg_id, func.count())
                .where(messages.c.account_id == account.id)
                .group_by(messages.c.msg_id)
            ).all()
        counts = dict(rows)
        assert set(counts.values()) <= {1}
        missing = [p["MsgId"] for p in acked if "MsgId" in p and p["MsgId"] not in counts]
        assert missing == []

    proc.start()  # the restart: recovery from the WAL, then serve again
    try:
        stored_once()
        resend = [(p, "safe") for p in pushes]
        responses = asyncio.run(send_all(proc.base_url, wechat, resend, concurrency=32))
        assert {r.status_code for r in responses} == {200}
    finally:
        proc.stop()
    stored_once()
    oracle = OracleAccount(TZ)
    oracle.store(pushes)
    assert stored_counts(db, account)[:2] == (len(oracle.messages), len(oracle.events))
    assert_endpoints_match(db, account.appid, oracle)
