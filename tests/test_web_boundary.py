"""The app's one exception boundary, its log lines and its fault log.

* a fault (here: an account whose stored time zone does not exist) is ``-1 system error``
  in WeChat's envelope with a rid on every WeChat path — never a bare 500;
* what the access log echoes (a ``%0A`` in the path, a ``\\n`` in a JSON field) cannot
  forge a log line;
* a client that disconnects mid-request is not a fault and logs no error;
* ``FaultLog`` writes the first failure with its traceback, then one line per interval.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from msgcube.errors import ApiError
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.storage.schema import accounts
from msgcube.web.access_log import printable
from msgcube.web.app import create_app
from msgcube.web.faults import FaultLog
from support.api import assert_envelope, at, get_token, new_account, shanghai

from conftest import fresh_appid

T0 = shanghai(2026, 6, 1, 10)
SECRET = "boundary-secret-0123456789abcdef"
BODY = b'{"begin_date": "2026-05-31", "end_date": "2026-05-31"}'


def _messages(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


async def test_a_broken_stored_time_zone_is_minus_1_with_a_rid(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    appid = fresh_appid("wxbadtz")
    new_account(store, appid, SECRET)
    async with at(store, T0 - timedelta(minutes=5)) as api:
        token = await get_token(api, appid, SECRET)
    broken = update(accounts).where(accounts.c.appid == appid)
    with store.write() as conn:  # as an older msgcube could have stored it
        conn.execute(broken.values(tz="Mars/Olympus"))
    caplog.clear()
    try:
        async with at(store, T0) as api:
            query = {"grant_type": "client_credential", "appid": appid, "secret": SECRET}
            auth = {"access_token": token}
            quota_body = b'{"cgi_path": "/cgi-bin/token"}'
            answers = [
                await api.get("/cgi-bin/token", params=query),
                await api.post("/datacube/getupstreammsg", params=auth, content=BODY),
                await api.post("/cgi-bin/openapi/quota/get", params=auth, content=quota_body),
            ]
    finally:  # the store is shared with other tests (the dashboard lists every account)
        with store.write() as conn:
            conn.execute(broken.values(tz="Asia/Shanghai"))
    rids = [assert_envelope(answer, -1) for answer in answers]
    access = _messages(caplog, "msgcube.access")
    for rid in rids:
        assert any(f"rid={rid}" in line and "errcode=-1" in line for line in access), access
    # Three faults of one kind: at most one traceback (none if the streak was open).
    tracebacks = [r for r in caplog.records if r.name == "msgcube.errors" and r.exc_info]
    assert len(tracebacks) <= 1
    async with at(store, T0) as api:  # answered again: the streak ends
        assert list(
            (
                await api.post(
                    "/datacube/getupstreammsg", params={"access_token": token}, content=BODY
                )
            ).json()
        ) == ["list"]


@pytest.mark.parametrize(
    ("path", "echoed"),
    [
        ("/datacube/getupstreammsg%0A2026-06-01 INFO msgcube.access forged", "\\n2026"),
        ("/cgi-bin/token%0D%0Aforged", "\\r\\nforged"),
        ("/healthz%E2%80%A8forged", "\\u2028forged"),
    ],
)
async def test_the_access_log_escapes_the_path(
    path: str, echoed: str, sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    async with at(sqlite_store, T0) as api:
        response = await api.get(path)
    assert response.status_code == 404
    [line] = _messages(caplog, "msgcube.access")
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert echoed in line


async def test_the_access_log_escapes_json_fields_it_echoes(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    appid = fresh_appid("wxlogfield")
    new_account(sqlite_store, appid, SECRET)
    async with at(sqlite_store, T0) as api:
        token = await get_token(api, appid, SECRET)
        caplog.clear()
        body = b'{"cgi_path": "/x\\n2026-06-01 INFO msgcube.access GET / 200 errcode=0"}'
        answer = await api.post(
            "/cgi-bin/openapi/quota/get", params={"access_token": token}, content=body
        )
    assert_envelope(answer, 76021)
    [line] = _messages(caplog, "msgcube.access")
    assert "\n" not in line
    assert "(no quota for /x\\n2026-06-01 INFO" in line


def test_printable_escapes_only_what_breaks_a_line() -> None:
    assert printable("消息 ok") == "消息 ok"
    assert printable("a\nb\rc\td\\e\x00f\x7fg\x85h\u2029") == (
        "a\\nb\\rc\\td\\\\e\\x00f\\x7fg\\x85h\\u2029"
    )


async def test_a_client_disconnecting_mid_body_is_not_a_fault(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The body never arrives: no answer, no error log, the access log says so."""
    caplog.set_level(logging.INFO)
    app = create_app(Settings(now=T0.isoformat()), sqlite_store)
    path = "/cgi-bin/stable_token"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"msgcube.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("msgcube.test", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [line] = _messages(caplog, "msgcube.access")
    assert " client-disconnected " in line


def test_fault_log_writes_the_first_failure_then_a_count_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.faults")
    now = [100.0]
    faults = FaultLog(logging.getLogger("test.faults"), interval=10.0, clock=lambda: now[0])
    for _ in range(200):  # 200 failures over 25 s
        try:
            raise ConnectionError("database down\nforged line")
        except ConnectionError as exc:
            faults.failed("wechat requests", exc)
        now[0] += 0.125
    faults.failed("quota flush", ApiError(-1))
    faults.succeeded("wechat requests")
    records = [r for r in caplog.records if r.name == "test.faults"]
    messages = [r.getMessage() for r in records]
    assert messages[0] == "wechat requests failed: database down\\nforged line"
    assert records[0].exc_info is not None
    still = [m for m in messages if "still failing" in m]
    assert [m.split(": ")[1].split(" more")[0] for m in still] == ["80", "80"]
    assert "quota flush failed: " in messages[-2]
    assert messages[-1].startswith("wechat requests: ConnectionError recovered after 200 failures")
    assert all("\n" not in m for m in messages)
    assert sum(r.exc_info is not None for r in records) == 2  # one per kind of fault
    assert faults.failing  # the quota flush has not recovered


async def test_a_wrong_method_on_every_route_of_the_table_is_enveloped(
    sqlite_store: Store,
) -> None:
    """Every route of the table answers inside the envelope, whatever the method."""
    from msgcube.web.api_table import API

    async with at(sqlite_store, T0) as api:
        for route in API:
            wrong = "POST" if route.method == "GET" else "GET"
            code = 43001 if route.method == "GET" else 43002
            assert code in route.answerable, route.path
            answer: httpx.Response = await api.request(wrong, route.path)
            assert_envelope(answer, code)
