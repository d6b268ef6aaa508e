"""The admin API's side of a platform's message URL: Token/keys/upstream/limit, its accounts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from msgcube.settings import Settings
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import get_platform
from msgcube.web.app import create_app
from test_admin import ADMIN, AES_KEY, T0, Admin
from test_platform_callback import TOKEN, Sealer, new_key, text_message, wx_appid


@contextlib.asynccontextmanager
async def running(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (the push committer), in the test's own task."""
    app = create_app(Settings(now=T0.isoformat(), admin_token=ADMIN), store)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as client,
    ):
        yield client


async def test_platform_fields_and_accounts_over_the_admin_api(store: Store) -> None:
    async with running(store) as client:
        await _platform_fields_and_accounts(client, store)


async def _platform_fields_and_accounts(app_client: httpx.AsyncClient, store: Store) -> None:
    admin = Admin(app_client)
    component_appid = wx_appid()
    created = await admin(
        "POST",
        "/platforms",
        {
            "component_appid": component_appid,
            "token": TOKEN,
            "aes_key": AES_KEY,
            "upstream_url": "https://user:pw@bot.example/wx/$APPID$",
            "account_limit": 5,
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["token"], body["aes_key"], body["prev_aes_key"]) == (True, True, False)
    assert body["upstream_url"] == "https://user:***@bot.example/wx/$APPID$"
    assert body["account_limit"] == 5
    listed = (await admin("GET", "/platforms")).text
    assert TOKEN not in listed and AES_KEY not in listed and ":pw@" not in listed

    for bad in (
        {"aes_key": "short"},
        {"upstream_url": "ftp://x"},
        {"account_limit": -1},
        {"account_limit": "5"},
        {},
    ):
        answer = await admin("PATCH", f"/platforms/{component_appid}", bad)
        assert answer.status_code == 400, bad
    key = new_key()
    changed = await admin(
        "PATCH", f"/platforms/{component_appid}", {"aes_key": key, "upstream_url": ""}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["prev_aes_key"], changed.json()["upstream_url"]) == (True, "")
    with store.read() as conn:
        platform = get_platform(conn, component_appid)
    assert platform is not None
    assert (platform.aes_key, platform.prev_aes_key, platform.upstream_url) == (key, AES_KEY, "")

    appid = wx_appid()
    query, body_bytes = Sealer(TOKEN, key, component_appid).seal(text_message("gh_adm000000001", 7))
    pushed = await app_client.post(
        f"/wechat/platform/{component_appid}/callback/{appid}", params=query, content=body_bytes
    )
    assert (pushed.status_code, pushed.text) == (200, "success")
    accounts = (await admin("GET", f"/platforms/{component_appid}/accounts")).json()["accounts"]
    assert [
        (a["appid"], a["original_id"], a["created_by"], a["func_info"], a["authorization"])
        for a in accounts
    ] == [(appid, "gh_adm000000001", "platform", [1], "active")]

    removed = await admin("DELETE", f"/platforms/{component_appid}/accounts/{appid}")
    assert removed.status_code == 200, removed.text
    with store.read() as conn:
        assert get_account(conn, appid) is None
    again = await admin("DELETE", f"/platforms/{component_appid}/accounts/{appid}")
    assert again.status_code == 404
    assert (await admin("GET", f"/platforms/{wx_appid()}/accounts")).status_code == 404
