"""Hostile input at every ingest edge, on SQLite and PostgreSQL: the same answer on both.

Numbers must be ASCII digits in WeChat's ranges, identifiers must fit their columns and
carry no control character (``domain/identifiers.py``). The callback answers 400 and
quarantines a signed push that breaks those rules, the token endpoints answer 40013, the
admin API 400/404, the import rejects the line and keeps the rest. The quarantine keeps a
signed request at most once, stays within its per-account bounds and is pruned.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from msgcube.cli.main import cli
from msgcube.domain.identifiers import (
    APPID_MAX,
    CALLBACK_TOKEN_MAX,
    CREATE_TIME_MAX,
    CREATE_TIME_MIN,
    EVENT_MAX,
    MSG_ID_MAX,
    MSG_TYPE_MAX,
    OPENID_MAX,
    ORIGINAL_ID_MAX,
)
from msgcube.domain.messages import Message, parse_record
from msgcube.errors import IngestError
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.ingest.files import follower_openids
from msgcube.ingest.gate import RawPush
from msgcube.settings import Settings
from msgcube.storage.accounts import Account, add_account
from msgcube.storage.db import Store
from msgcube.storage.quarantine import add_entry, list_entries
from msgcube.storage.schema import accounts, events, followers, messages, quarantine, senders
from msgcube.web.app import create_app
from msgcube.wechat import AESKey, build_push_xml, cdata, encrypt, msg_signature, signature
from support.api import shanghai

from conftest import PG_URL, STAMP, fresh_appid

NOW = shanghai(2026, 3, 10, 9)
CT = int(shanghai(2026, 3, 2, 12).timestamp())
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TOKEN = "tok"

BAD_NUMBERS: list[Any] = [
    "²",  # str.isdigit() is True, int() raises
    "¹",
    "9" * 5000,  # int() refuses more than 4300 digits
    "١٧٧٢٦٠٠٠٠٠",  # Arabic-Indic digits: int() would accept them
    "１７７２６０００００",  # fullwidth digits
    "1e9",
    "-1772600000",
    "0x69a0",
    1.7726e9,
    True,
    [1772600000],
]


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ToUserName": "gh_x",
        "FromUserName": "o1",
        "CreateTime": CT,
        "MsgType": "text",
        "MsgId": 1,
    }
    return base | changes


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("field", ["CreateTime", "MsgId"])
@pytest.mark.parametrize("value", BAD_NUMBERS, ids=lambda v: repr(v)[:12])
def test_only_ascii_digits_in_range_are_numbers(field: str, value: Any) -> None:
    with pytest.raises(IngestError, match=field):
        parse_record(record(**{field: value}))


def test_number_ranges_are_wechats() -> None:
    for ct in (CREATE_TIME_MIN, CREATE_TIME_MAX, f" {CT}\n"):
        assert isinstance(parse_record(record(CreateTime=ct)), Message)
    for ct in (CREATE_TIME_MIN - 1, CREATE_TIME_MAX + 1, 1, 2009, CT * 1000):
        with pytest.raises(IngestError, match=r"CreateTime .* out of range"):
            parse_record(record(CreateTime=ct))
    for msg_id in (0, MSG_ID_MAX, str(MSG_ID_MAX), "0" * 30 + "7"):
        assert isinstance(parse_record(record(MsgId=msg_id)), Message)
    for msg_id in (-1, MSG_ID_MAX + 1, str(MSG_ID_MAX + 1), "1" * 21):
        with pytest.raises(IngestError, match="MsgId"):
            parse_record(record(MsgId=msg_id))


@pytest.mark.parametrize(
    ("field", "limit"), [("FromUserName", OPENID_MAX), ("MsgType", MSG_TYPE_MAX)]
)
def test_text_fields_fit_their_column_and_carry_no_control_character(
    field: str, limit: int
) -> None:
    assert parse_record(record(**{field: "a" * limit}))
    for bad in ("a" * (limit + 1), "o\x00", "o\u0000x", "a\nb", "\x7f", "\x85", "\ud800"):
        with pytest.raises(IngestError, match=field):
            parse_record(record(**{field: bad}))
    event = record(MsgType="event", Event="e" * (EVENT_MAX + 1))
    with pytest.raises(IngestError, match="Event is longer"):
        parse_record(event)


def test_the_rules_match_the_schema_columns() -> None:
    """The identifier limits are the column lengths: a value that passes always fits."""
    assert accounts.c.appid.type.length == APPID_MAX  # type: ignore[attr-defined]
    assert accounts.c.original_id.type.length == ORIGINAL_ID_MAX  # type: ignore[attr-defined]
    assert accounts.c.callback_token.type.length == CALLBACK_TOKEN_MAX  # type: ignore[attr-defined]
    assert senders.c.openid.type.length == OPENID_MAX  # type: ignore[attr-defined]
    assert events.c.openid.type.length == OPENID_MAX  # type: ignore[attr-defined]
    assert events.c.event.type.length == EVENT_MAX  # type: ignore[attr-defined]
    assert messages.c.msg_type_name.type.length == MSG_TYPE_MAX  # type: ignore[attr-defined]


def test_unsigned_msgids_are_stored_and_deduplicated(store: Store) -> None:
    account = new_account(store)
    ids = [0, 2**63 - 1, 2**63, MSG_ID_MAX]
    batch = [Message(msg_id=i, openid="o1", create_time=CT, msg_type_name="text") for i in ids]
    with store.write() as conn:
        first = write_batch(conn, account, batch, NOW.date(), received_at=STAMP)
        again = write_batch(conn, account, batch, NOW.date(), received_at=STAMP)
    assert (first.messages_new, again.messages_new, again.messages_duplicate) == (4, 0, 4)


# --------------------------------------------------------------------------- helpers


def new_account(store: Store, **kwargs: Any) -> Account:
    with store.write() as conn:
        return add_account(
            conn,
            appid=fresh_appid("wxedge"),
            secret="s",
            tz="Asia/Shanghai",
            callback_token=TOKEN,
            aes_key=KEY,
            now=STAMP,
            **kwargs,
        )


@contextlib.asynccontextmanager
async def client(store: Store, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(now=NOW.isoformat(), **settings), store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


def plain(xml: bytes | str, nonce: str = "12345") -> tuple[dict[str, str], bytes]:
    ts = str(int(time.time()))
    body = xml.encode() if isinstance(xml, str) else xml
    return {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}, body


def sealed(appid: str, xml: bytes, nonce: str = "12345") -> tuple[dict[str, str], bytes]:
    ts = str(int(time.time()))
    encrypted = encrypt(AESKey(KEY), xml, appid)
    query = {
        "signature": signature(TOKEN, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": msg_signature(TOKEN, ts, nonce, encrypted),
    }
    return query, f"<xml><Encrypt>{cdata(encrypted)}</Encrypt></xml>".encode()


def counts(store: Store, account: Account) -> tuple[int, int]:
    """(stored messages, quarantined pushes) of the account."""
    with store.read() as conn:
        m = conn.execute(select(func.count()).where(messages.c.account_id == account.id))
        q = conn.execute(select(func.count()).where(quarantine.c.appid == account.appid))
        return m.scalar_one(), q.scalar_one()


def bare(fields: dict[str, Any]) -> bytes:
    """Push XML with every value written bare (numbers as WeChat writes them)."""
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f"<xml>{inner}</xml>".encode()


# --------------------------------------------------------------------------- the callback


async def test_bad_numbers_in_a_push_are_400_and_quarantined(store: Store) -> None:
    account = new_account(store)
    url = f"/wechat/callback/{account.appid}"
    async with client(store) as c:
        for i, value in enumerate(["²", "¹", "9" * 5000, "١٧٧٢٦٠٠٠٠٠"]):
            for field, mode in (("CreateTime", "plain"), ("MsgId", "safe")):
                xml = bare(record(**({"MsgId": 100 + i} | {field: value})))
                if mode == "plain":
                    params, body = plain(xml, nonce=f"{i}{field}")
                else:
                    params, body = sealed(account.appid, xml, nonce=f"{i}{field}")
                response = await c.post(url, params=params, content=body)
                assert response.status_code == 400, (field, value[:10], response.text)
                assert f"record: {field}" in response.text
        params, body = plain(build_push_xml(record(MsgId=7)), nonce="ok")
        assert (await c.post(url, params=params, content=body)).text == "success"
    assert counts(store, account) == (1, 8)


async def test_appids_that_cannot_exist_get_the_same_answer_on_every_backend(
    store: Store,
) -> None:
    account = new_account(store)
    bad = ["wx\x00abc", account.appid + "\x00", "a" * (APPID_MAX + 1), "wx é", "wx/..", "wx\n"]
    async with client(store, admin_token="admin-0123456789") as c:
        for appid in bad:
            q = {"grant_type": "client_credential", "appid": appid, "secret": "s"}
            body = (await c.get("/cgi-bin/token", params=q)).json()
            assert body["errcode"] == 40013, (appid, body)
            body = (await c.post("/cgi-bin/stable_token", content=orjson.dumps(q))).json()
            assert body["errcode"] == 40013, (appid, body)
            params, push = plain(build_push_xml(record()))
            path = "/wechat/callback/" + quote(appid, safe="")
            response = await c.post(path, params=params, content=push)
            assert response.status_code == 404, (appid, response.text)
        # The admin API: 400 for an identifier that cannot be stored, 404 in a path.
        auth = {"Authorization": "Bearer admin-0123456789"}
        refused = [fresh_appid("wxrefused")]
        for field, value in (
            ("appid", "wx\x00y"),
            ("appid", "w" * (APPID_MAX + 1)),
            ("original_id", "g" * (ORIGINAL_ID_MAX + 1)),
            ("original_id", "gh_\x00"),
            ("token", "t" * (CALLBACK_TOKEN_MAX + 1)),
        ):
            data = {"appid": refused[-1]} | {field: value}
            response = await c.post("/admin/accounts", content=orjson.dumps(data), headers=auth)
            assert response.status_code == 400, (field, response.text)
            assert field in response.json()["error"]
            refused.append(fresh_appid("wxrefused"))
        for path in (
            "/admin/accounts/wx%00y",
            "/admin/platforms/wx%00y/ticket",
            f"/admin/authorizations/wx%00y/{account.appid}",
        ):
            method = "DELETE" if "authorizations" in path else "GET"
            if "accounts" in path:
                method = "PATCH"
            response = await c.request(method, path, content=b"{}", headers=auth)
            assert response.status_code == 404, (path, response.text)
    with store.read() as conn:
        stored = conn.execute(select(func.count()).where(accounts.c.appid.in_(refused)))
        assert stored.scalar_one() == 0


# --------------------------------------------------------------------------- the quarantine


async def test_a_captured_plaintext_query_string_adds_one_entry_whatever_the_bodies(
    store: Store,
) -> None:
    account = new_account(store)
    url = f"/wechat/callback/{account.appid}"
    params, _ = plain(b"")
    async with client(store) as c:
        for i in range(40):
            body = b"<xml>" + bytes([65 + i % 26]) * (60 * 1024)  # malformed, 60 KiB
            response = await c.post(url, params=params, content=body)
            assert response.status_code == 400
            assert response.text.startswith("quarantined" if i == 0 else "already quarantined")
    assert counts(store, account) == (0, 1)


async def test_the_quarantine_refuses_new_entries_at_its_bounds(store: Store) -> None:
    account = new_account(store)
    url = f"/wechat/callback/{account.appid}"
    async with client(store, quarantine_max_entries=3, quarantine_max_bytes=10**9) as c:
        for i in range(5):
            params, body = plain(b"<xml>broken", nonce=f"n{i}")
            response = await c.post(url, params=params, content=body)
            assert response.status_code == (400 if i < 3 else 503), (i, response.text)
    assert counts(store, account) == (0, 3)
    other = new_account(store)
    async with client(store, quarantine_max_bytes=3000) as c:
        for i in range(3):
            params, body = plain(b"<xml>" + b"x" * 995, nonce=f"b{i}")  # 1000 bytes each
            response = await c.post(f"/wechat/callback/{other.appid}", params=params, content=body)
            assert response.status_code == 400
        params, body = plain(b"<xml>x", nonce="b4")
        response = await c.post(f"/wechat/callback/{other.appid}", params=params, content=body)
        assert response.status_code == 503
        assert "quarantine full" in response.text
    assert counts(store, other) == (0, 3)
    with store.read() as conn:
        assert [e.body_size for e in list_entries(conn, appid=other.appid)] == [1000] * 3


async def test_expired_entries_are_pruned_on_insert(store: Store) -> None:
    account = new_account(store)
    now = int(NOW.timestamp())
    with store.write() as conn:
        for age_days in (40, 31, 29):
            entry = RawPush(account.appid, f"signature=old{age_days}", b"<x").quarantined(
                "old", now - age_days * 86_400
            )
            add_entry(conn, entry)
    async with client(store, quarantine_retention_days=30) as c:
        params, body = plain(b"<xml>broken", nonce="fresh")
        response = await c.post(f"/wechat/callback/{account.appid}", params=params, content=body)
        assert response.status_code == 400
    with store.read() as conn:
        kept = sorted(e.received_at for e in list_entries(conn, appid=account.appid))
    assert kept == [now - 29 * 86_400, now]


def no_config(tmp_path: Path) -> str:
    """An empty config file: no ``msgcube.toml`` of the working directory is read."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    return str(path)


def test_quarantine_prune_command(store: Store, tmp_path: Path) -> None:
    a, b = new_account(store), new_account(store)
    now = int(NOW.timestamp())
    with store.write() as conn:
        for account in (a, b):
            for age_days in (10, 2, 0):
                add_entry(
                    conn,
                    RawPush(account.appid, "q", b"x").quarantined("r", now - age_days * 86_400),
                )
    env = {
        "MSGCUBE_DB": db_of(store, tmp_path),
        "MSGCUBE_NOW": NOW.isoformat(),
        "MSGCUBE_CONFIG": no_config(tmp_path),
    }
    runner = CliRunner()

    def prune(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["quarantine", "prune", *args], env=env)
        return result.exit_code, result.output

    assert prune()[0] == 2  # neither --older-than nor --all: a usage error
    assert prune("--all", "--older-than", "3")[0] == 2
    assert prune("--older-than", "5", "--appid", a.appid) == (0, "1 quarantined pushes deleted\n")
    assert prune("--older-than", "1", "--appid", a.appid) == (0, "1 quarantined pushes deleted\n")
    assert prune("--all", "--appid", b.appid) == (0, "3 quarantined pushes deleted\n")
    with store.read() as conn:
        assert [e.received_at for e in list_entries(conn, appid=a.appid)] == [now]
        assert list_entries(conn, appid=b.appid) == []


def db_of(store: Store, tmp_path: Path) -> str:
    """The ``--db`` value that opens ``store`` from the CLI."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return PG_URL


# --------------------------------------------------------------------------- the import


def test_import_rejects_bad_lines_and_keeps_the_rest(store: Store, tmp_path: Path) -> None:
    account = new_account(store)
    good = [orjson.dumps(record(MsgId=i, CreateTime=CT + i)) for i in range(1, 5)]
    bad = [
        orjson.dumps(record(MsgId=10, CreateTime="²")),
        orjson.dumps(record(MsgId=11, CreateTime="9" * 5000)),
        orjson.dumps(record(MsgId=12, CreateTime="١٧٧٢٦٠٠٠٠٠")),
        orjson.dumps(record(MsgId="¹")),
        orjson.dumps(record(MsgId=13, FromUserName="o\u0000")),
        orjson.dumps(record(MsgId=14, FromUserName="o" * (OPENID_MAX + 1))),
        b'{"FromUserName": "o1", "CreateTime": 1772600000, "MsgType": "text", "MsgId": '
        + b"9" * 5000
        + b"}",
    ]
    lines = [good[0], *bad[:4], good[1], good[2], *bad[4:], good[3]]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    env = {
        "MSGCUBE_DB": db_of(store, tmp_path),
        "MSGCUBE_NOW": NOW.isoformat(),
        "MSGCUBE_CONFIG": no_config(tmp_path),
    }
    result = CliRunner().invoke(
        cli,
        ["import", "--appid", account.appid, "--quiet", str(src)],
        env=env,
        catch_exceptions=False,
    )
    err = result.stderr
    for number in (2, 3, 4, 5, 8, 9, 10):
        assert f"{src}:{number}: " in err, err
    assert f"{src}:2: CreateTime must be an integer, got '²'" in err
    assert f"{src}:5: MsgId must be an integer, got '¹'" in err
    assert f"{src}:8: FromUserName contains the control character U+0000" in err
    assert "11 lines: 4 new messages" in result.stdout and "7 bad" in result.stdout
    assert (tmp_path / "in.jsonl.rejects").read_bytes().splitlines() == bad
    assert counts(store, account) == (4, 0)


def test_cli_appids_that_cannot_exist_are_one_line_errors(store: Store, tmp_path: Path) -> None:
    env = {"MSGCUBE_DB": db_of(store, tmp_path), "MSGCUBE_CONFIG": no_config(tmp_path)}
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps(record()) + b"\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "--appid", "wx\x01a", str(src)], env=env)
    assert (result.exit_code, result.exception.__class__) == (1, SystemExit)
    assert "unknown appid 'wx\\x01a'" in result.stderr
    result = runner.invoke(cli, ["quarantine", "list", "--appid", "wx" * 40], env=env)
    assert result.exit_code == 2
    assert "appid is longer than 64 characters" in result.stderr


@pytest.mark.parametrize("bad", ["o" * (OPENID_MAX + 1), "nul\x00x", "ctl\x01x", "\ud800"])
def test_a_follower_list_obeys_the_sender_rule_on_every_backend(store: Store, bad: str) -> None:
    """A follower list used to reach the table unchecked: SQLite stored a NUL or a
    200-character openid that PostgreSQL refused with a database error. Now both refuse
    it by the sender rule, and the base already imported is left as it was."""
    account = new_account(store)
    today = shanghai(2026, 3, 10).date()
    with store.write() as conn:
        assert import_followers(conn, account, ["fan1", "fan2"], today) == 2
    with pytest.raises(IngestError, match="openid"), store.write() as conn:
        import_followers(conn, account, ["fan3", bad], today)
    with store.read() as conn:
        kept = conn.execute(
            select(followers.c.openid).where(followers.c.account_id == account.id)
        ).scalars()
        assert sorted(kept) == ["fan1", "fan2"]


def test_a_follower_file_names_its_bad_line() -> None:
    lines = [b"fan1\n", b"\n", b"  fan2  \n", b"fan\x01\n"]
    with pytest.raises(IngestError) as raised:
        follower_openids(lines, "f.txt")
    assert raised.value.reason == "f.txt:4: openid contains the control character U+0001"
    with pytest.raises(IngestError, match=r"^f.txt:2: not UTF-8$"):
        follower_openids([b"fan1\n", b"\xff\xfe\n"], "f.txt")
    assert follower_openids(lines[:3], "f.txt") == ["fan1", "fan2"]
