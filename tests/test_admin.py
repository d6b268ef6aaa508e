"""The admin API (``/admin/``): bearer-token access, and what the CLI does, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from msgcube.auth.platforms import check_ticket
from msgcube.settings import Settings
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import get_platform
from msgcube.web.app import create_app
from support.api import get_token, shanghai, token_response

from conftest import fresh_appid

T0 = shanghai(2026, 3, 10, 10)
ADMIN = "admin-token-for-tests-0123456789"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class Admin:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(
        self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        content = orjson.dumps(body) if body is not None else None
        return await self.client.request(method, "/admin" + path, headers=headers, content=content)


@pytest.fixture
async def admin(store: Store) -> AsyncIterator[Admin]:
    app = create_app(Settings(now=T0.isoformat(), admin_token=ADMIN), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as client:
        yield Admin(client)


async def test_without_an_admin_token_the_api_does_not_exist(store: Store) -> None:
    app = create_app(Settings(now=T0.isoformat()), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as client:
        for method, path in (
            ("GET", "/admin/accounts"),
            ("POST", "/admin/platforms"),
            ("DELETE", "/admin/authorizations/a/b"),
            ("PUT", "/admin/accounts"),
        ):
            response = await client.request(method, path, headers={"Authorization": "Bearer "})
            assert response.status_code == 404, (method, path)


async def test_the_bearer_token_is_required(admin: Admin) -> None:
    for token in (None, "wrong", ADMIN + "x", ADMIN[:-1], ""):
        response = await admin("GET", "/accounts", token=token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "admin token required"}
    raw = await admin.client.get("/admin/accounts", headers={"Authorization": ADMIN})
    assert raw.status_code == 401  # the scheme is part of it
    assert (await admin("GET", "/accounts")).status_code == 200
    assert (await admin("PUT", "/accounts")).status_code == 405


async def test_accounts_create_list_update(admin: Admin, store: Store) -> None:
    appid = fresh_appid("wxadm")
    created = await admin(
        "POST", "/accounts", {"appid": appid, "tz": "UTC", "ip_whitelist": ["203.0.113.7"]}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body.pop("secret")
    assert len(secret) == 32
    assert body == {
        "appid": appid,
        "original_id": "",
        "tz": "UTC",
        "verified": True,
        "follower_base": False,
        "ip_whitelist": ["203.0.113.7"],
        "stats_since": None,
        "daily_quota": None,
        "upstream": None,
    }
    # The secret works, and the whitelist set through the admin API is in force: the
    # test client calls from 127.0.0.1, outside it.
    refused = (await token_response(admin.client, appid, secret)).json()
    assert refused["errcode"] == 40164, refused
    assert refused["errmsg"].startswith("invalid ip 127.0.0.1, not in whitelist rid: ")
    assert (await admin("POST", "/accounts", {"appid": appid})).status_code == 409
    listed = (await admin("GET", "/accounts")).json()["accounts"]
    assert next(a for a in listed if a["appid"] == appid)["tz"] == "UTC"

    changed = await admin(
        "PATCH",
        f"/accounts/{appid}",
        {
            "verified": False,
            "ip_whitelist": "",
            "daily_quota": 50,
            "secret": "new-secret",
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["verified"] is False
    assert changed.json()["ip_whitelist"] == []
    assert changed.json()["daily_quota"] == 50
    assert await get_token(admin.client, appid, "new-secret")
    largest = await admin("PATCH", f"/accounts/{appid}", {"daily_quota": 2**31 - 1})
    assert largest.status_code == 200, largest.text
    assert largest.json()["daily_quota"] == 2**31 - 1
    back = await admin("PATCH", f"/accounts/{appid}", {"daily_quota": None})
    assert back.json()["daily_quota"] is None

    bad_changes: list[dict[str, Any]] = [
        {"verified": "yes"},
        {"daily_quota": -1},
        {"daily_quota": True},
        {"daily_quota": 2**31},  # PostgreSQL's INTEGER could not hold it; SQLite could
        {"ip_whitelist": "example.com"},
        {"tz": "Mars/Olympus"},
        {"secret": 5},
        {"secret": ""},
        {"aes_key": "short"},
    ]
    for bad in bad_changes:
        response = await admin("PATCH", f"/accounts/{appid}", bad)
        assert response.status_code == 400, (bad, response.text)
        assert "error" in response.json()
    assert (await admin("PATCH", "/accounts/wxnobody", {"verified": True})).status_code == 404
    # A new EncodingAESKey keeps the old one as the previous key, as the CLI does.
    second_key = AES_KEY[::-1]
    for key in (AES_KEY, second_key):
        assert (await admin("PATCH", f"/accounts/{appid}", {"aes_key": key})).status_code == 200
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    assert (account.aes_key, account.prev_aes_key) == (second_key, AES_KEY)
    assert (await admin("POST", "/accounts", {})).status_code == 400
    assert (await admin("POST", "/accounts", [1])).status_code == 400
    raw = await admin.client.post(
        "/admin/accounts", content=b"{", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert raw.status_code == 400


async def test_platforms_tickets_and_authorizations(admin: Admin, store: Store) -> None:
    component_appid, appid = fresh_appid("wxadmc"), fresh_appid("wxadma")
    assert (await admin("POST", "/accounts", {"appid": appid})).status_code == 201
    created = await admin(
        "POST",
        "/platforms",
        {
            "component_appid": component_appid,
            "component_appsecret": "platform-secret",
            "ticket_url": "https://platform.test/events",
            "token": "t",
            "aes_key": AES_KEY,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["component_appsecret"] == "platform-secret"
    again = await admin("POST", "/platforms", {"component_appid": component_appid})
    assert again.status_code == 400 and "already exists" in again.json()["error"]
    bad_key = await admin(
        "POST", "/platforms", {"component_appid": fresh_appid("wxadmc"), "aes_key": "short"}
    )
    assert bad_key.status_code == 400
    listed = (await admin("GET", "/platforms")).json()["platforms"]
    assert any(p["component_appid"] == component_appid for p in listed)

    ticket = (await admin("GET", f"/platforms/{component_appid}/ticket")).json()
    assert ticket["expires_in"] == 12 * 3600 - (int(T0.timestamp()) % 600)
    with store.read() as conn:
        platform = get_platform(conn, component_appid)
    assert platform is not None
    check_ticket(platform, ticket["component_verify_ticket"], int(T0.timestamp()))
    assert (await admin("GET", "/platforms/wxnobody/ticket")).status_code == 404

    granted = await admin(
        "POST",
        "/authorizations",
        {
            "component_appid": component_appid,
            "authorizer_appid": appid,
            "func_info": [3, 1, 1],
        },
    )
    assert granted.status_code == 201, granted.text
    assert granted.json()["func_info"] == [
        {"funcscope_category": {"id": 1}},
        {"funcscope_category": {"id": 3}},
    ]
    assert granted.json()["authorizer_refresh_token"].startswith("refreshtoken@@@")
    for bad in (
        {"component_appid": component_appid, "authorizer_appid": appid, "func_info": []},
        {"component_appid": component_appid, "authorizer_appid": appid, "func_info": ["x"]},
        {"component_appid": component_appid, "authorizer_appid": appid},
    ):
        assert (await admin("POST", "/authorizations", bad)).status_code == 400
    missing = await admin(
        "POST",
        "/authorizations",
        {
            "component_appid": component_appid,
            "authorizer_appid": "wxnobody",
            "func_info": [1],
        },
    )
    assert missing.status_code == 404
    revoked = await admin("DELETE", f"/authorizations/{component_appid}/{appid}")
    assert revoked.json() == {
        "component_appid": component_appid,
        "authorizer_appid": appid,
        "revoked": True,
        "tokens_ended": 0,
    }
    assert (await admin("DELETE", f"/authorizations/{component_appid}/{appid}")).status_code == 404
