"""A third-party platform's message URL, against a real ``msgcube serve`` (SQLite and PostgreSQL).

Pushes are sealed the way WeChat seals a platform's pushes, with wechatpy's own AES
(``PrpCrypto``) and SHA-1 signatures computed here: the platform's Token signs, the
platform's EncodingAESKey encrypts for the *component* appid, the body is
``<xml><ToUserName/><Encrypt/></xml>`` and the URL is the platform's template with
``$APPID$`` replaced by the authorized account's appid. Statistics are compared with the
brute-force oracle (tests/oracle.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import secrets
import string
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from wechatpy.crypto import PrpCrypto, WeChatCrypto  # type: ignore[import-untyped]

from msgcube.client.replay import push_fields
from msgcube.domain.endpoints import ENDPOINTS
from msgcube.domain.traffic import generate_traffic
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import messages, quarantine
from msgcube.web.platform_callback import CACHE_TTL
from msgcube.wechat import build_push_xml
from support.server import ServerProcess, msgcube_env, run_msgcube
from support.upstream import Bot, serving

from conftest import PG_URL
from oracle import OracleAccount

pytestmark = pytest.mark.slow

NOW = "2026-02-15T10:00:00+08:00"
NOW_DT = datetime.fromisoformat(NOW)
END = date(2026, 2, 14)
TOKEN = "platform-token-0123"
COMPONENT_SECRET = "component-secret-0123456789abcdef"


def new_key() -> str:
    """A fresh EncodingAESKey: 43 characters of A-Z, a-z, 0-9 (WeChat generates them so)."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))


def wx_appid() -> str:
    return "wx" + secrets.token_hex(8)


def sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@dataclass(frozen=True)
class Sealer:
    """Seals pushes as WeChat does for one platform (or, in the refusal tests, wrongly)."""

    token: str
    aes_key: str
    envelope_appid: str

    def seal(
        self, record: Mapping[str, Any], *, mode: str = "safe"
    ) -> tuple[dict[str, str], bytes]:
        ts, nonce = str(int(NOW_DT.timestamp())), str(secrets.randbelow(10**9))
        xml = build_push_xml(push_fields(record))
        query = {"signature": sha1_sorted(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if mode == "plain":
            return query, xml
        key = base64.b64decode(self.aes_key + "=")
        encrypted = PrpCrypto(key).encrypt(xml.decode(), self.envelope_appid)
        encrypted = encrypted.decode() if isinstance(encrypted, bytes) else encrypted
        query |= {
            "encrypt_type": "aes",
            "msg_signature": sha1_sorted(self.token, ts, nonce, encrypted),
        }
        if "AppId" in record:  # WeChat's notices to a platform
            head = f"<AppId><![CDATA[{record['AppId']}]]></AppId>"
        else:
            head = f"<ToUserName><![CDATA[{record.get('ToUserName', '')}]]></ToUserName>"
        if mode == "compat":
            head = xml.decode()[5:-6]
        return query, f"<xml>{head}<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()


@dataclass
class Deployment:
    db: str
    workdir: Path
    env: dict[str, str]
    store: Store
    server: ServerProcess

    def msgcube(self, *args: str) -> str:
        return run_msgcube(*args, env=self.env, cwd=self.workdir)

    def add_platform(self, *args: str, component_appid: str = "", key: str = "") -> tuple[str, str]:
        component_appid, key = component_appid or wx_appid(), key or new_key()
        self.msgcube(
            "platform",
            "add",
            "--component-appid",
            component_appid,
            "--token",
            TOKEN,
            "--aes-key",
            key,
            "--component-secret",
            COMPONENT_SECRET,
            *args,
        )
        return component_appid, key

    def authorize(self, component_appid: str, appid: str) -> str:
        """``platform authorize … --func 1``; the refresh token it prints."""
        args = ("--component-appid", component_appid, "--appid", appid, "--func", "1")
        return self.msgcube("platform", "authorize", *args).splitlines()[-1]

    def url(self, component_appid: str, appid: str) -> str:
        return f"{self.server.base_url}/wechat/platform/{component_appid}/callback/{appid}"

    def message_count(self, appid: str) -> int:
        with self.store.read() as conn:
            account = get_account(conn, appid)
            if account is None:
                return -1
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(messages)
                    .where(messages.c.account_id == account.id)
                ).scalar_one()
            )

    def quarantined(self, appid: str) -> list[str]:
        with self.store.read() as conn:
            return list(
                conn.execute(
                    select(quarantine.c.reason).where(quarantine.c.appid == appid)
                ).scalars()
            )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        db = str(tmp_path / "msgcube.db")
        url = f"sqlite:///{db}"
    else:
        request.getfixturevalue("pg_store")  # reachable and migrated, or skipped/failed
        db = url = PG_URL
    env = msgcube_env(db, NOW)
    store = open_store(url)
    with ServerProcess(db, tmp_path, now=NOW) as server:
        yield Deployment(db, tmp_path, env, store, server)
    store.dispose()


async def send_all(
    pushes: list[tuple[str, dict[str, str], bytes]], concurrency: int = 16
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(url: str, query: dict[str, str], body: bytes) -> httpx.Response:
            async with gate:
                return await client.post(url, params=query, content=body)

        return await asyncio.gather(*(one(*p) for p in pushes))


def post(url: str, query: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(url, params=query, content=body, timeout=30)


def text_message(original_id: str, msg_id: int, content: str = "hello") -> dict[str, Any]:
    return {
        "ToUserName": original_id,
        "FromUserName": "oUser000000000000000000001",
        "CreateTime": int(NOW_DT.timestamp()) - 3600,
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id,
    }


# --------------------------------------------------------------------------- 50 authorizers


def test_fifty_authorizers_through_one_url_template(deployment: Deployment) -> None:
    d = deployment
    component_appid, key = d.add_platform()
    sealer = Sealer(TOKEN, key, component_appid)
    authorizers = {wx_appid(): "gh_" + secrets.token_hex(6) for _ in range(50)}
    oracles: dict[str, OracleAccount] = {}
    pushes: list[tuple[str, dict[str, str], bytes]] = []
    rng = random.Random(5)
    for i, (appid, original_id) in enumerate(authorizers.items()):
        records = list(
            generate_traffic(
                appid=appid,
                original_id=original_id,
                days=8,
                users=10,
                seed=i,
                end=END,
                messages_per_day=6,
            )
        )
        oracles[appid] = OracleAccount("Asia/Shanghai")
        oracles[appid].store(records)
        retried = rng.sample(records, k=max(1, len(records) // 20))  # WeChat's retries
        for record in records + retried:
            pushes.append((d.url(component_appid, appid), *sealer.seal(record)))
    rng.shuffle(pushes)  # the authorizers' pushes interleave on the one URL
    notice = {
        "AppId": component_appid,
        "CreateTime": int(NOW_DT.timestamp()),
        "InfoType": "unauthorized",
        "AuthorizerAppid": wx_appid(),
    }
    some_appid = next(iter(authorizers))
    pushes.append((d.url(component_appid, some_appid), *sealer.seal(notice)))

    answers = asyncio.run(send_all(pushes))
    assert [(a.status_code, a.text) for a in answers] == [(200, "success")] * len(pushes)

    # The GET handshake of the same URL is answered by msgcube with the platform's Token.
    ts, nonce = "1771120800", "424242"
    echo = httpx.get(
        d.url(component_appid, some_appid),
        params={
            "signature": sha1_sorted(TOKEN, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": "echo-4711",
        },
    )
    assert (echo.status_code, echo.text) == (200, "echo-4711")

    listed = d.msgcube("platform", "accounts", "--component-appid", component_appid)
    lines = listed.splitlines()
    assert len(lines) == 50  # the notice created nothing
    for line in lines:
        appid, *fields = line.split("\t")
        assert f"original_id:{authorizers[appid]}" in fields
        assert {
            "created_by:platform",
            "func_info:1",
            "authorization:active",
            "verified:yes",
        } <= set(fields)

    d.msgcube("rollup")
    total = 0
    for appid, oracle in oracles.items():
        with d.store.read() as conn:
            account = get_account(conn, appid)
        assert account is not None
        assert account.original_id == authorizers[appid]
        for ep in ENDPOINTS:
            begin = (END - timedelta(days=ep.span_classic - 1)).isoformat()
            got = served_list(d.store, account, ep, begin, END.isoformat(), NOW_DT)
            assert got == oracle.served(ep.name, begin, END.isoformat(), NOW_DT), (appid, ep.name)
            total += len(got)
    assert total > 50 * 20, "too little data to mean anything"

    # An authorizer token of the platform reads one account's statistics as today.
    appid = some_appid
    refresh = d.authorize(component_appid, appid)
    listing = d.msgcube("platform", "list")  # secrets are never listed
    assert TOKEN not in listing and key not in listing and COMPONENT_SECRET not in listing
    assert f"{component_appid}\tticket_url:-\ttoken:set\taes_key:set\t" in listing
    token = authorizer_token(d, component_appid, appid, refresh)
    body = httpx.post(
        f"{d.server.base_url}/datacube/getupstreammsg",
        params={"access_token": token},
        content=orjson.dumps({"begin_date": "2026-02-08", "end_date": "2026-02-14"}),
    ).json()
    assert body == {
        "list": oracles[appid].served("getupstreammsg", "2026-02-08", "2026-02-14", NOW_DT)
    }


def authorizer_token(d: Deployment, component_appid: str, appid: str, refresh: str) -> str:
    """The platform's way in: ticket → component token → authorizer token."""
    ticket = d.msgcube("platform", "ticket", "--component-appid", component_appid).split()[-1]
    base = d.server.base_url
    component = httpx.post(
        f"{base}/cgi-bin/component/api_component_token",
        content=orjson.dumps(
            {
                "component_appid": component_appid,
                "component_appsecret": COMPONENT_SECRET,
                "component_verify_ticket": ticket,
            }
        ),
    ).json()
    grant = httpx.post(
        f"{base}/cgi-bin/component/api_authorizer_token",
        params={"component_access_token": component["component_access_token"]},
        content=orjson.dumps(
            {
                "component_appid": component_appid,
                "authorizer_appid": appid,
                "authorizer_refresh_token": refresh,
            }
        ),
    ).json()
    return str(grant["authorizer_access_token"])


# --------------------------------------------------------------------------- refusals


def test_only_the_platforms_own_seal_creates_or_feeds_an_account(deployment: Deployment) -> None:
    d = deployment
    component_appid, key = d.add_platform()
    other_component, other_key = d.add_platform()
    good = Sealer(TOKEN, key, component_appid)

    # An operator's account with its own callback Token and key (not authorized to us).
    own_appid, own_key, own_token = wx_appid(), new_key(), "own-token-42"
    d.msgcube(
        "account",
        "add",
        "--appid",
        own_appid,
        "--original-id",
        "gh_own000000001",
        "--token",
        own_token,
        "--aes-key",
        own_key,
    )

    def attempt(
        sealer: Sealer,
        appid: str,
        *,
        mode: str = "safe",
        component: str = "",
        original_id: str = "gh_abcdef012345",
    ) -> httpx.Response:
        query, body = sealer.seal(text_message(original_id, secrets.randbelow(10**15)), mode=mode)
        return post(d.url(component or component_appid, appid), query, body)

    cases = [
        # (sealer, path appid, mode, status, what the answer says)
        (Sealer(own_token, own_key, own_appid), wx_appid(), "safe", 403, "bad signature"),
        (Sealer(TOKEN, own_key, own_appid), wx_appid(), "safe", 400, "decrypt"),
        (Sealer(TOKEN, own_key, component_appid), wx_appid(), "safe", 400, "decrypt"),
        (Sealer(TOKEN, other_key, other_component), wx_appid(), "safe", 400, "decrypt"),
        (Sealer(TOKEN, key, wx_appid()), wx_appid(), "safe", 400, "appid mismatch"),
        (Sealer("other-token", key, component_appid), wx_appid(), "safe", 403, "bad signature"),
        (good, wx_appid(), "plain", 403, "must be encrypted"),
        (good, wx_appid(), "compat", 403, "compatible mode"),
        (good, "wxNOT-AN-APPID", "safe", 403, "not an appid"),
        (good, own_appid, "safe", 403, "has not authorized"),
    ]
    for sealer, appid, mode, status, reason in cases:
        answer = attempt(sealer, appid, mode=mode)
        assert (answer.status_code, reason in answer.text) == (status, True), (sealer, mode)
        assert d.message_count(appid) == (0 if appid == own_appid else -1), appid  # nothing
        if status == 400:  # signed with the platform's Token: kept for inspection
            assert len(d.quarantined(appid)) == 1
    # Another platform's pushes for our appids go nowhere near us, and vice versa.
    answer = attempt(
        Sealer(TOKEN, other_key, other_component),
        wx_appid(),
        component=other_component,
        original_id="not-an-original-id",
    )
    assert (answer.status_code, "ToUserName is not an original id" in answer.text) == (403, True)
    unknown = attempt(good, wx_appid(), component=wx_appid())
    assert (unknown.status_code, unknown.text) == (404, "unknown platform")
    assert d.msgcube("platform", "accounts", "--component-appid", component_appid) == ""

    # The good seal works; ToUserName must then stay the account's original id.
    appid = wx_appid()
    assert attempt(good, appid, original_id="gh_first0000001").text == "success"
    assert d.message_count(appid) == 1
    wrong = attempt(good, appid, original_id="gh_other000001")
    assert (wrong.status_code, "not the original id" in wrong.text) == (403, True)

    # Revoking stops the account's pushes (and no push re-creates it); authorizing resumes.
    d.msgcube("platform", "revoke", "--component-appid", component_appid, "--appid", appid)
    time.sleep(CACHE_TTL)  # documented: a revocation takes effect within the cache's TTL
    refused = attempt(good, appid, original_id="gh_first0000001")
    assert (refused.status_code, "revoked" in refused.text) == (403, True)
    d.authorize(component_appid, appid)
    assert attempt(good, appid, original_id="gh_first0000001").text == "success"
    assert d.message_count(appid) == 2

    # Forgetting deletes the account and its data; the next push starts it afresh.
    d.msgcube("platform", "forget", "--component-appid", component_appid, "--appid", appid)
    assert d.message_count(appid) == -1
    with pytest.raises(RuntimeError, match="not an account created by"):
        d.msgcube("platform", "forget", "--component-appid", component_appid, "--appid", own_appid)

    # The account limit bounds creation; 0 turns it off.
    d.msgcube("platform", "set", "--component-appid", component_appid, "--account-limit", "0")
    time.sleep(CACHE_TTL)  # the cached platform (and its limit) is re-read within its TTL
    blocked = wx_appid()
    limited = attempt(good, blocked)
    assert (limited.status_code, "limit of 0 accounts" in limited.text) == (403, True)
    assert d.message_count(blocked) == -1


def test_key_rotation_and_handshake(deployment: Deployment) -> None:
    d = deployment
    component_appid, old_key = d.add_platform()
    new = new_key()
    d.msgcube("platform", "set", "--component-appid", component_appid, "--aes-key", new)
    listing = d.msgcube("platform", "list")
    assert "prev_aes_key:set" in listing and new not in listing and old_key not in listing
    appid = wx_appid()
    for i, key in enumerate((old_key, new)):  # sealed before and after the switch
        query, body = Sealer(TOKEN, key, component_appid).seal(text_message("gh_rot000000001", i))
        assert post(d.url(component_appid, appid), query, body).text == "success"
    assert d.message_count(appid) == 2
    bad = httpx.get(
        d.url(component_appid, appid),
        params={"signature": "0" * 40, "timestamp": "1", "nonce": "2", "echostr": "x"},
    )
    assert bad.status_code == 403
    with pytest.raises(RuntimeError, match="EncodingAESKey"):
        d.msgcube("platform", "set", "--component-appid", component_appid, "--aes-key", "short")


def test_quarantined_platform_pushes_replay_with_the_platforms_keys(
    deployment: Deployment,
) -> None:
    """WeChat already seals with a key the operator has not set yet: the pushes are kept
    (400), and once the key is set, ``quarantine replay`` opens them with the platform's
    Token and keys — not the account's — creating the account their first push names."""
    d = deployment
    component_appid, _ = d.add_platform()
    unknown_key = new_key()
    sealer = Sealer(TOKEN, unknown_key, component_appid)
    appid = wx_appid()
    for i in range(3):
        query, body = sealer.seal(text_message("gh_replay000001", 100 + i))
        answer = post(d.url(component_appid, appid), query, body)
        assert (answer.status_code, "quarantined" in answer.text) == (400, True)
    notice_query, notice = sealer.seal({"AppId": component_appid, "InfoType": "x"})
    assert post(d.url(component_appid, appid), notice_query, notice).status_code == 400
    assert d.message_count(appid) == -1 and len(d.quarantined(appid)) == 4

    with pytest.raises(RuntimeError, match=r"0 replayed .*, 4 still failing"):
        d.msgcube("quarantine", "replay", "--appid", appid)  # the key is still unknown
    d.msgcube("platform", "set", "--component-appid", component_appid, "--aes-key", unknown_key)
    done = d.msgcube("quarantine", "replay", "--appid", appid)
    assert done.startswith("4 replayed (3 new messages, 0 duplicates"), done
    assert d.message_count(appid) == 3
    accounts = d.msgcube("platform", "accounts", "--component-appid", component_appid)
    assert appid in accounts
    again = d.msgcube("quarantine", "replay", "--appid", appid)
    assert again.startswith("0 replayed") and "0 still failing" in again, again


# --------------------------------------------------------------------------- relayed


def test_pushes_are_relayed_to_the_platforms_own_server(deployment: Deployment) -> None:
    """The platform's real server (a wechatpy bot holding the platform's Token and key)
    behind msgcube: each push reaches it unchanged at the URL with ``$APPID$`` replaced,
    and WeChat gets its answer byte for byte — a passive reply sealed with the platform's
    key that wechatpy opens."""
    d = deployment
    component_appid, key = wx_appid(), new_key()
    bot = Bot(component_appid, TOKEN, key)
    paths: list[str] = []

    async def platform_server(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            paths.append(scope["path"])
        await bot(scope, receive, send)

    sealer = Sealer(TOKEN, key, component_appid)
    authorizers = {wx_appid(): "gh_" + secrets.token_hex(6) for _ in range(3)}
    with serving(platform_server) as bot_url:
        d.add_platform(
            "--upstream", f"{bot_url}/wx/$APPID$/msg", component_appid=component_appid, key=key
        )
        assert f"upstream_url:{bot_url}/wx/$APPID$/msg" in d.msgcube("platform", "list")
        sent = []
        for n, (appid, original_id) in enumerate(authorizers.items()):
            for i in range(4):
                record = text_message(original_id, 10_000 * n + i, f"hi {appid} {i}")
                if i == 3:  # an image: the bot answers the empty string
                    record |= {"MsgType": "image", "PicUrl": "http://x/p.jpg", "MediaId": "m1"}
                    del record["Content"]
                query, body = sealer.seal(record)
                url = f"{d.url(component_appid, appid)}?{urlencode(query)}"
                answer = httpx.post(url, content=body, timeout=30)
                sent.append((appid, record, urlencode(query).encode(), body, answer))
        notice = {"AppId": component_appid, "CreateTime": 1, "InfoType": "unauthorized"}
        query, body = sealer.seal(notice)
        assert post(d.url(component_appid, wx_appid()), query, body).text == "success"
        wrong = Sealer(TOKEN, new_key(), component_appid).seal(text_message("gh_x000000000001", 1))
        assert post(d.url(component_appid, wx_appid()), *wrong).status_code == 400

    assert len(bot.journal) == len(sent) == 12  # the notice and the refused push: not relayed
    crypto = WeChatCrypto(TOKEN, key, component_appid)
    for (_appid, record, query_bytes, body, answer), seen in zip(sent, bot.journal, strict=True):
        assert (seen.method, seen.query_string, seen.body) == ("POST", query_bytes, body)
        assert seen.key == str(record["MsgId"])
        assert answer.status_code == seen.status == 200
        assert answer.content == seen.answer
        assert answer.headers.get("content-type") == seen.answer_type
        if record["MsgType"] == "text":
            envelope = ET.fromstring(answer.content)
            reply = crypto.decrypt_message(
                answer.content,
                envelope.findtext("MsgSignature"),
                envelope.findtext("TimeStamp"),
                envelope.findtext("Nonce"),
            )
            assert f"<Content><![CDATA[echo: {record['Content']}]]></Content>" in reply
            assert f"<ToUserName><![CDATA[{record['FromUserName']}]]></ToUserName>" in reply
        else:
            assert answer.content == b""
    assert paths == [f"/wx/{appid}/msg" for appid, *_ in sent]
    for appid in authorizers:
        assert d.message_count(appid) == 4


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_new_authorizers_at_once_on_two_workers_stay_within_the_account_limit(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """First pushes of 30 new appids (each sent 3 times at once, as retries arrive) on
    ``serve --workers 2`` with an account limit of 25: exactly 25 accounts, each created
    once with its one message; the other appids' pushes are refused (403)."""
    if backend == "sqlite":
        db = url = str(tmp_path / "msgcube.db")
        url = f"sqlite:///{db}"
    else:
        request.getfixturevalue("pg_store")
        db = url = PG_URL
    store = open_store(url)
    try:
        with ServerProcess(db, tmp_path, now=NOW, workers=2) as server:
            d = Deployment(db, tmp_path, msgcube_env(db, NOW), store, server)
            component_appid, key = d.add_platform("--account-limit", "25")
            sealer = Sealer(TOKEN, key, component_appid)
            authorizers = {wx_appid(): "gh_" + secrets.token_hex(6) for _ in range(30)}
            pushes = [
                (d.url(component_appid, appid), *sealer.seal(text_message(original_id, 1)))
                for appid, original_id in authorizers.items()
                for _ in range(3)
            ]
            answers = asyncio.run(send_all(pushes, concurrency=32))
            listed = d.msgcube("platform", "accounts", "--component-appid", component_appid)
        by_appid: dict[str, set[int]] = {}
        for (url_, _, _), answer in zip(pushes, answers, strict=True):
            by_appid.setdefault(url_.rsplit("/", 1)[1], set()).add(answer.status_code)
        created = sorted(a for a, codes in by_appid.items() if codes == {200})
        assert len(created) == 25
        assert all(codes == {403} for a, codes in by_appid.items() if a not in created)
        assert sorted(line.split()[0] for line in listed.splitlines()) == created
        # Read through the store before it is disposed: a store used after ``dispose``
        # opens a new pool nobody closes (a ResourceWarning in a later test).
        assert [d.message_count(a) for a in created] == [1] * 25
    finally:
        store.dispose()
