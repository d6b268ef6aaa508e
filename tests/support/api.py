"""The app in-process, at a pinned time: ``httpx.AsyncClient`` over ``httpx.ASGITransport``.

The clock is ``Settings.now``, so "later" is another app over the same store::

    async with at(store, T0) as api:
        token = await get_token(api, appid, secret)
    async with at(store, T0 + timedelta(minutes=5)) as api:
        ...

WeChat's texts are spelled out here independently of ``msgcube.errors`` (from
shared/reference/wechat-notes.md §2.2 and docs/contract.md), so a typo there fails a test.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from msgcube.settings import Settings
from msgcube.storage.accounts import Account, add_account
from msgcube.storage.db import Store
from msgcube.web.app import create_app

from conftest import STAMP

SHANGHAI = ZoneInfo("Asia/Shanghai")
JSON_TYPE = "application/json; encoding=utf-8"
RID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}")

WECHAT_TEXT: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40125: "invalid appsecret",
    40164: "invalid ip {ip}, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    48001: "api unauthorized",
    61500: "date format error",
    61501: "date range error",
    61503: "data not ready",
    76021: "cgi_path not found, please check",
}


def shanghai(y: int, m: int, d: int, hh: int = 10, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SHANGHAI)


def settings_at(now: datetime, **overrides: Any) -> Settings:
    overrides.setdefault("access_log", "all")  # tests read the log line of every request
    return Settings(now=now.isoformat(), **overrides)


@contextlib.asynccontextmanager
async def at(store: Store, now: datetime, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app`` over ``store`` with the clock pinned at ``now``."""
    app = create_app(settings_at(now, **settings), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as client:
        yield client


def new_account(store: Store, appid: str, secret: str, *, verified: bool = True) -> Account:
    with store.write() as conn:
        return add_account(
            conn, appid=appid, secret=secret, tz="Asia/Shanghai", verified=verified, now=STAMP
        )


async def token_response(api: httpx.AsyncClient, appid: str, secret: str) -> httpx.Response:
    return await api.get(
        "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": appid, "secret": secret},
    )


async def get_token(api: httpx.AsyncClient, appid: str, secret: str) -> str:
    body = (await token_response(api, appid, secret)).json()
    assert set(body) == {"access_token", "expires_in"}, body
    assert body["expires_in"] == 7200
    return str(body["access_token"])


async def stable_token(
    api: httpx.AsyncClient, appid: str, secret: str, *, force: bool | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    if force is not None:
        body["force_refresh"] = force
    response = await api.post("/cgi-bin/stable_token", content=orjson.dumps(body))
    result: dict[str, Any] = response.json()
    return result


def yesterday_of(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date() - timedelta(days=1)


async def datacube(
    api: httpx.AsyncClient,
    token: str,
    name: str = "getupstreammsg",
    begin: date | str | None = None,
    end: date | str | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """POST a range (default: yesterday of ``now``) with no Content-Type, as wechatpy does."""
    if begin is None or end is None:
        assert now is not None
        begin = end = yesterday_of(now)
    body = {"begin_date": str(begin), "end_date": str(end)}
    response = await api.post(
        f"/datacube/{name}", params={"access_token": token}, content=orjson.dumps(body)
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def errcode(body: dict[str, Any]) -> int:
    """0 for a success body, the errcode otherwise."""
    return int(body.get("errcode", 0))


def assert_envelope(response: httpx.Response, code: int, **fields: str) -> str:
    """WeChat's error envelope for ``code`` (``fields`` fill 40164's ``{ip}``); the rid."""
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_TYPE
    body = response.json()
    assert set(body) == {"errcode", "errmsg"}, body
    assert body["errcode"] == code, body
    assert type(body["errcode"]) is int
    text, sep, rid = body["errmsg"].rpartition(" rid: ")
    assert sep, body
    assert text == WECHAT_TEXT[code].format(**fields), body
    assert RID.fullmatch(rid), body
    return rid
