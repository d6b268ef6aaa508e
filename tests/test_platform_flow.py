"""Issue 5's end-to-end flow over HTTP: a third-party platform reads an account's statistics.

Everything goes through the app's HTTP interface (in-process, ``httpx.ASGITransport``),
set up through the admin API as an operator's automation would: register a platform,
read its ticket, exchange it for a component token, have accounts authorize it, get
authorizer tokens, call the seven endpoints, switch the access policy, revoke.

WeChat's texts are spelled out here, independently of ``msgcube.errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from msgcube.domain.endpoints import BY_NAME, ENDPOINTS
from msgcube.ingest.synthetic import generate_into
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.web.app import create_app
from support.api import get_token, new_account, shanghai
from support.relay_calls import seed_calls

from conftest import fresh_appid

T0 = shanghai(2026, 3, 2, 10)  # a Monday: yesterday ends a week and a month
YESTERDAY = date(2026, 3, 1)
ADMIN = "admin-token-for-tests-0123456789"
SECRET = "account-secret-0123456789abcdef"
TEXT = {
    40001: "invalid credential, access_token is invalid or not latest",
    48001: "api unauthorized",
    61003: "component is not authorized by this account",
    61007: "api is unauthorized to component",
}


class Deployment:
    """One app over ``store`` whose clock and settings a test can move."""

    def __init__(self, store: Store, now: datetime, **settings: Any) -> None:
        self.app = create_app(Settings(now=now.isoformat(), admin_token=ADMIN, **settings), store)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://msgcube.test"
        )

    def set(self, **changes: Any) -> None:
        ctx = self.app.state.ctx
        ctx.settings = ctx.settings.with_(**changes)

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.client.request(
            method,
            f"/admin{path}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            content=orjson.dumps(body) if body is not None else None,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def post(self, path: str, body: Any, **params: str) -> dict[str, Any]:
        response = await self.client.post(path, params=params, content=orjson.dumps(body))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json; encoding=utf-8"
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def deployment(store: Store) -> AsyncIterator[Deployment]:
    d = Deployment(store, T0)
    async with d.client:
        yield d


def ranges() -> list[tuple[str, str, str]]:
    """(endpoint, begin, end): the widest range each endpoint accepts, ending yesterday."""
    return [
        (
            ep.name,
            (YESTERDAY - timedelta(days=ep.span_classic - 1)).isoformat(),
            YESTERDAY.isoformat(),
        )
        for ep in ENDPOINTS
    ]


async def read_all(d: Deployment, token: str) -> dict[str, Any]:
    return {
        name: await d.post(
            f"/datacube/{name}", {"begin_date": b, "end_date": e}, access_token=token
        )
        for name, b, e in ranges()
    }


def assert_error(body: dict[str, Any], code: int) -> None:
    assert body["errcode"] == code, body
    assert body["errmsg"].rpartition(" rid: ")[0] == TEXT[code], body


async def test_a_platform_reads_an_account_the_way_wechat_allows(
    deployment: Deployment, store: Store
) -> None:
    d = deployment
    full, partial = fresh_appid("wxfull"), fresh_appid("wxpart")
    component_appid = fresh_appid("wxcomp")
    account = new_account(store, full, SECRET)
    new_account(store, partial, SECRET)
    generate_into(
        store,
        account,
        days=70,
        users=40,
        seed=11,
        end=YESTERDAY,
        today=YESTERDAY + timedelta(days=1),
    )
    seed_calls(store, account, YESTERDAY - timedelta(days=69), YESTERDAY, seed=11)

    # The operator registers the platform; the platform gets its ticket and its token.
    created = await d.admin("POST", "/platforms", {"component_appid": component_appid})
    secret = created["component_appsecret"]
    ticket = (await d.admin("GET", f"/platforms/{component_appid}/ticket"))[
        "component_verify_ticket"
    ]
    grant = await d.post(
        "/cgi-bin/component/api_component_token",
        {
            "component_appid": component_appid,
            "component_appsecret": secret,
            "component_verify_ticket": ticket,
        },
    )
    assert set(grant) == {"component_access_token", "expires_in"}
    assert grant["expires_in"] == 7200
    component_token = grant["component_access_token"]

    # One account grants permission set 1 (with others), the other only sets 2 and 3.
    refresh = {}
    for appid, funcs in ((full, [1, 2, 3]), (partial, [2, 3])):
        auth = await d.admin(
            "POST",
            "/authorizations",
            {
                "component_appid": component_appid,
                "authorizer_appid": appid,
                "func_info": funcs,
            },
        )
        assert auth["func_info"] == [{"funcscope_category": {"id": f}} for f in funcs]
        refresh[appid] = auth["authorizer_refresh_token"]

    async def authorizer_token(appid: str) -> str:
        body = await d.post(
            "/cgi-bin/component/api_authorizer_token",
            {
                "component_appid": component_appid,
                "authorizer_appid": appid,
                "authorizer_refresh_token": refresh[appid],
            },
            component_access_token=component_token,
        )
        assert set(body) == {"authorizer_access_token", "expires_in", "authorizer_refresh_token"}
        assert body["expires_in"] == 7200
        assert body["authorizer_refresh_token"] != refresh[appid]  # it rotates
        refresh[appid] = body["authorizer_refresh_token"]
        return str(body["authorizer_access_token"])

    full_token = await authorizer_token(full)
    partial_token = await authorizer_token(partial)
    own_token = await get_token(d.client, full, SECRET)

    # Set 1 reads all seven endpoints, exactly what the account's own token reads.
    with_own = await read_all(d, own_token)
    assert all("list" in body for body in with_own.values()), with_own
    assert all(body["list"] for body in with_own.values()), "the account needs data everywhere"
    assert await read_all(d, full_token) == with_own

    # Without set 1: 61007 on every message endpoint, while set 3 opens interface analysis;
    # a component token is no account token: 48001.
    for name, body in (await read_all(d, partial_token)).items():
        if BY_NAME[name].func_id == 1:
            assert_error(body, 61007)
        else:
            assert body == {"list": []}  # the partial account has no upstream
    for body in (await read_all(d, component_token)).values():
        assert_error(body, 48001)

    # The invitation-beta policy: the account's own token is refused, the platform's works.
    d.set(access_policy="third_party_only")
    for body in (await read_all(d, own_token)).values():
        assert_error(body, 48001)
    assert await read_all(d, full_token) == with_own
    for name, body in (await read_all(d, partial_token)).items():
        if BY_NAME[name].func_id == 1:
            assert_error(body, 61007)
    d.set(access_policy="open")

    # Revocation: the authorizer token answers 40001 at once, the refresh token is dead.
    revoked = await d.admin("DELETE", f"/authorizations/{component_appid}/{full}")
    assert revoked["revoked"] is True
    for body in (await read_all(d, full_token)).values():
        assert_error(body, 40001)
    again = await d.post(
        "/cgi-bin/component/api_authorizer_token",
        {
            "component_appid": component_appid,
            "authorizer_appid": full,
            "authorizer_refresh_token": refresh[full],
        },
        component_access_token=component_token,
    )
    assert_error(again, 61003)
    # The account's own token never depended on the platform.
    assert await read_all(d, own_token) == with_own
    listed = await d.admin("GET", "/authorizations")
    mine = {
        a["authorizer_appid"]: a
        for a in listed["authorizations"]
        if a["component_appid"] == component_appid
    }
    assert mine[full]["revoked_at"] is not None
    assert mine[partial]["revoked_at"] is None
    assert mine[partial]["func_info"] == [2, 3]
