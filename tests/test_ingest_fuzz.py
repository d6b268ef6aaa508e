"""Hypothesis drives the push gate and the import parser with arbitrary text and bytes.

What must hold whatever arrives, on SQLite and PostgreSQL:

* the gate raises only ``BadSignature`` (403) or ``IngestError`` (400, quarantined);
* over HTTP the callback never answers 500, and every valid push sent between the
  garbage is stored;
* the importer never raises, stores every valid line interleaved with garbage (exact
  counts) and writes exactly the garbage lines to the rejects file.
"""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from msgcube.domain.identifiers import (
    CREATE_TIME_MAX,
    CREATE_TIME_MIN,
    MSG_ID_MAX,
    MSG_ID_MIN,
    OPENID_MAX,
)
from msgcube.errors import BadSignature, IngestError
from msgcube.ingest.files import import_stream
from msgcube.ingest.gate import RawPush, open_push
from msgcube.storage.accounts import Account, add_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import messages
from msgcube.wechat import AESKey, build_push_xml, cdata, encrypt, msg_signature, signature
from support.api import shanghai
from support.server import ServerProcess

from conftest import PG_URL, STAMP, fresh_appid

NOW = shanghai(2026, 3, 10, 9)
CT = int(shanghai(2026, 3, 2, 12).timestamp())
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TOKEN = "tok"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_msg_ids = itertools.count(1)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db(request: pytest.FixtureRequest) -> Store:
    """One backend's session database; each example registers a new account."""
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def new_account(store: Store) -> Account:
    with store.write() as conn:
        return add_account(
            conn,
            appid=fresh_appid("wxfz"),
            secret="s",
            tz="Asia/Shanghai",
            callback_token=TOKEN,
            aes_key=KEY,
            now=STAMP,
        )


# --------------------------------------------------------------------------- strategies

# Text that XML and UTF-8 can carry or not, control characters included.
any_text = st.text(st.characters(codec="utf-8"), max_size=80)
field_names = st.sampled_from(
    ["ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId", "Event", "Content"]
)


def bad_numbers(low: int, high: int) -> st.SearchStrategy[Any]:
    """Values that are not an integer in ``low..high`` by the importer's rules."""
    return st.one_of(
        any_text.filter(lambda t: not (t.strip().isascii() and t.strip().isdigit())),
        st.integers().filter(lambda n: not low <= n <= high),
        st.integers(min_value=2**64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text("0123456789²¹٠١٢٣٤٥٦٧٨٩", min_size=21, max_size=5000).filter(
            lambda t: not t.isascii() or len(t.lstrip("0")) > 20
        ),
        st.lists(st.integers(), max_size=2),
        st.booleans(),
        st.none(),
    )


bad_openids = st.one_of(
    st.just(""),
    st.text(min_size=OPENID_MAX + 1, max_size=OPENID_MAX + 40),
    any_text.map(lambda t: t + "\x00"),
    st.sampled_from(["o\n1", "o\x1f", "\x7f", "o\x85"]),
    st.integers(),
    st.none(),
)


def valid_record(kind: str, openid: str) -> dict[str, Any]:
    n = next(_msg_ids)
    if kind == "event":
        return {
            "ToUserName": "gh",
            "FromUserName": openid,
            "CreateTime": CT + n,
            "MsgType": "event",
            "Event": "subscribe",
        }
    return {
        "ToUserName": "gh",
        "FromUserName": openid,
        "CreateTime": CT + n % 86400,
        "MsgType": kind,
        "MsgId": 10**12 + n,
    }


openids = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=OPENID_MAX
).filter(lambda t: t.strip() == t and t)
kinds = st.sampled_from(["text", "image", "voice", "link", "location", "txt", "event"])


@st.composite
def broken_records(draw: st.DrawFn) -> dict[str, Any]:
    """A record made invalid in exactly one field, by construction."""
    base = valid_record(draw(kinds), draw(openids))
    field = draw(st.sampled_from(["CreateTime", "MsgId", "FromUserName", "MsgType"]))
    if field == "MsgId" and "MsgId" not in base:
        field = "CreateTime"
    if field == "FromUserName":
        base[field] = draw(bad_openids)
    elif field == "MsgType":
        base[field] = draw(st.sampled_from(["", " ", "t\x00", "x" * 33, 7]))
    elif field == "MsgId":
        base[field] = draw(bad_numbers(MSG_ID_MIN, MSG_ID_MAX))
    else:
        base[field] = draw(bad_numbers(CREATE_TIME_MIN, CREATE_TIME_MAX))
    return base


# --------------------------------------------------------------------------- the gate


def _xml_of(fields: dict[str, Any]) -> bytes:
    """Fields written without escaping: the result may or may not be well-formed."""
    return ("<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>").encode()


bodies = st.one_of(
    st.binary(max_size=2048),
    any_text.map(str.encode),
    st.dictionaries(field_names, any_text, max_size=7).map(_xml_of),
    broken_records().map(_xml_of),
)


@given(query=any_text, body=bodies, mode=st.sampled_from(["plain", "aes-signed", "aes-forged"]))
@FUZZ
def test_the_gate_raises_only_its_two_errors(query: str, body: bytes, mode: str) -> None:
    account = Account(
        id=1,
        appid="wxfuzz",
        original_id="",
        tz="UTC",
        verified=True,
        follower_base=False,
        stats_since=None,
        callback_token=TOKEN,
        aes_key=KEY,
    )
    ts, nonce = "1773100000", "n"
    signed = f"signature={signature(TOKEN, ts, nonce)}&timestamp={ts}&nonce={nonce}"
    if mode == "plain":
        raw = RawPush(account.appid, f"{query}&{signed}", body)
    else:
        encrypted = encrypt(AESKey(KEY), body, account.appid)
        sig = msg_signature(TOKEN, ts, nonce, encrypted) if mode == "aes-signed" else query
        envelope = f"<xml><Encrypt>{cdata(encrypted)}</Encrypt></xml>".encode()
        raw = RawPush(account.appid, f"{signed}&encrypt_type=aes&msg_signature={sig}", envelope)
    try:
        push = open_push(account, raw)
    except (BadSignature, IngestError):
        return
    assert push.raw is raw  # opened: then it was a valid record, and it is handed back whole


@pytest.fixture(scope="module")
def served(
    db: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, httpx.Client]]:
    """``msgcube serve`` (quarantine unbounded) and the database it serves.

    On SQLite a database of its own: the server's background rollups over the session
    database, full of other tests' accounts, would hold its write lock for long stretches.
    """
    workdir = tmp_path_factory.mktemp("fuzz-serve")
    if db.engine.url.get_backend_name() == "sqlite":
        store, target = open_store(f"sqlite:///{workdir / 'fuzz.db'}"), str(workdir / "fuzz.db")
    else:
        store, target = db, PG_URL
    try:
        with (
            ServerProcess(target, workdir, now=NOW.isoformat(), quarantine_max_entries=0) as server,
            httpx.Client(base_url=server.base_url, timeout=10) as client,
        ):
            yield store, client
    finally:
        if store is not db:
            store.dispose()


def _signed_query(nonce: str, encrypted: str | None = None) -> dict[str, str]:
    ts = str(int(time.time()))
    query = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    if encrypted is not None:
        query |= {
            "encrypt_type": "aes",
            "msg_signature": msg_signature(TOKEN, ts, nonce, encrypted),
        }
    return query


@given(garbage=st.lists(st.tuples(bodies, st.booleans()), min_size=1, max_size=6))
@FUZZ
def test_the_callback_never_answers_500_and_never_loses_a_valid_push(
    served: tuple[Store, httpx.Client], garbage: list[tuple[bytes, bool]]
) -> None:
    db, http = served
    account = new_account(db)
    url = f"/wechat/callback/{account.appid}"
    sent: list[int] = []
    for i, (body, sealed) in enumerate(garbage):
        if sealed:
            encrypted = encrypt(AESKey(KEY), body, account.appid)
            query = _signed_query(f"g{i}", encrypted)
            body = f"<xml><Encrypt>{cdata(encrypted)}</Encrypt></xml>".encode()
        else:
            query = _signed_query(f"g{i}")
        response = http.post(url, params=query, content=body)
        assert response.status_code in (200, 400, 403), (response.status_code, response.text)
        valid = valid_record("text", f"o{i}")
        response = http.post(url, params=_signed_query(f"v{i}"), content=build_push_xml(valid))
        assert (response.status_code, response.text) == (200, "success")
        sent.append(valid["MsgId"])
    with db.read() as conn:
        stored = set(
            conn.execute(
                select(messages.c.msg_id).where(messages.c.account_id == account.id)
            ).scalars()
        )
    assert set(sent) <= stored


# --------------------------------------------------------------------------- the import


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


garbage_lines = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    any_text.map(lambda t: t.replace("\n", "").encode()),
    # json, not orjson: it writes integers of any size (orjson reads those as floats)
    broken_records().map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    st.lists(st.integers(), max_size=3).map(lambda v: json.dumps(v).encode()),
    any_text.map(orjson.dumps),
)


@st.composite
def import_files(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], int, int]:
    """(lines, garbage lines, valid messages, valid events) interleaved at random."""
    lines: list[bytes] = []
    garbage: list[bytes] = []
    n_messages = n_events = 0
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.booleans()):
            kind = draw(kinds)
            rec = valid_record(kind, draw(openids))
            if draw(st.booleans()):  # numbers as text, as CSV-born JSON often has them
                rec = {k: (f" {v} " if isinstance(v, int) else v) for k, v in rec.items()}
            lines.append(orjson.dumps(rec))
            n_events += kind == "event"
            n_messages += kind != "event"
        else:
            line = draw(garbage_lines)
            if not line.strip():
                continue  # blank lines are skipped, not rejected
            if _is_object(line) and not line.startswith(b'{"ToUserName"'):
                continue  # an arbitrary JSON object might happen to be a valid record
            lines.append(line)
            garbage.append(line)
    return lines, garbage, n_messages, n_events


@given(data=import_files())
@FUZZ
def test_the_importer_keeps_every_valid_line_and_rejects_exactly_the_rest(
    db: Store, data: tuple[list[bytes], list[bytes], int, int]
) -> None:
    lines, garbage, n_messages, n_events = data
    account = new_account(db)
    rejects = io.BytesIO()
    report = import_stream(
        db,
        account,
        io.BytesIO(b"\n".join(lines) + b"\n"),
        NOW,
        source="fuzz.jsonl",
        rejects=rejects,
    )
    w = report.written
    assert (w.messages_new, w.messages_duplicate) == (n_messages, 0)
    assert (w.events_new, w.events_duplicate) == (n_events, 0)
    assert report.bad_count == len(garbage)
    assert rejects.getvalue().split(b"\n")[:-1] == garbage
    bad_lines = set(garbage)
    assert [bad.line for bad in report.bad] == [
        number for number, line in enumerate(lines, start=1) if line in bad_lines
    ]
