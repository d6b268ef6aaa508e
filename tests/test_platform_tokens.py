"""Tickets, component tokens, authorizer tokens and refresh tokens (contract), over HTTP.

Set-up goes through the library (what the CLI and admin API call); every rule is then
checked on the wire with a pinned, movable clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from msgcube.auth.platforms import (
    TICKET_EVERY,
    authorize_platform,
    current_ticket,
    register_platform,
    revoke_authorization,
)
from msgcube.storage.accounts import get_account, set_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import get_platform
from support.api import get_token, new_account, shanghai
from test_platform_flow import Deployment

from conftest import fresh_appid

T0 = shanghai(2026, 3, 2, 10, 3)
DAY = {"begin_date": "2026-03-01", "end_date": "2026-03-01"}
SECRET = "account-secret-0123456789abcdef"
PLATFORM_SECRET = "platform-secret-0123456789abcdef"
COMPONENT_TOKEN = "/cgi-bin/component/api_component_token"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
TEXT = {
    40001: "invalid credential, access_token is invalid or not latest",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    43002: "require POST method",
    44002: "empty post data",
    47001: "data format error",
    48001: "api unauthorized",
    61003: "component is not authorized by this account",
    61005: "component ticket is expired",
    61006: "component ticket is invalid",
    61007: "api is unauthorized to component",
    61011: "invalid component",
    61014: "must use component token for component api",
    61023: "refresh_token is invalid",
}


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def assert_error(body: dict[str, object], code: int) -> None:
    assert body.get("errcode") == code, body
    assert str(body["errmsg"]).rpartition(" rid: ")[0] == TEXT[code], body


@dataclass
class World:
    d: Deployment
    store: Store
    component_appid: str
    appid: str

    def at(self, moment: datetime) -> None:
        self.d.set(now=moment.isoformat())

    def ticket(self, moment: datetime) -> str:
        with self.store.read() as conn:
            platform = get_platform(conn, self.component_appid)
        assert platform is not None
        return current_ticket(platform, ts(moment)).ticket

    async def component_token(self, moment: datetime) -> str:
        body = await self.d.post(
            COMPONENT_TOKEN,
            {
                "component_appid": self.component_appid,
                "component_appsecret": PLATFORM_SECRET,
                "component_verify_ticket": self.ticket(moment),
            },
        )
        return str(body["component_access_token"])

    def authorize(self, funcs: list[int], appid: str | None = None) -> str:
        with self.store.write() as conn:
            platform = get_platform(conn, self.component_appid)
            account = get_account(conn, appid or self.appid)
            assert platform is not None and account is not None
            return authorize_platform(conn, platform, account, funcs, ts(T0))[1]

    async def exchange(self, component_token: str, refresh: str, appid: str | None = None) -> dict:
        return await self.d.post(
            AUTHORIZER_TOKEN,
            {
                "component_appid": self.component_appid,
                "authorizer_appid": appid or self.appid,
                "authorizer_refresh_token": refresh,
            },
            component_access_token=component_token,
        )


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    d = Deployment(store, T0)
    component_appid, appid = fresh_appid("wxcomp"), fresh_appid("wxacct")
    new_account(store, appid, SECRET)
    with store.write() as conn:
        register_platform(conn, component_appid=component_appid, secret=PLATFORM_SECRET, now=ts(T0))
    async with d.client:
        yield World(d, store, component_appid, appid)


async def test_a_ticket_is_renewed_every_10_minutes_and_accepted_for_12_hours(
    world: World,
) -> None:
    w = world
    first = w.ticket(T0)
    slot_start = datetime.fromtimestamp(ts(T0) // TICKET_EVERY * TICKET_EVERY, T0.tzinfo)
    assert w.ticket(slot_start + timedelta(seconds=TICKET_EVERY - 1)) == first
    second = w.ticket(slot_start + timedelta(seconds=TICKET_EVERY))
    assert second != first and second.startswith("ticket@@@")

    async def exchange(ticket: object, at: datetime) -> dict:
        w.at(at)
        return await w.d.post(
            COMPONENT_TOKEN,
            {
                "component_appid": w.component_appid,
                "component_appsecret": PLATFORM_SECRET,
                "component_verify_ticket": ticket,
            },
        )

    last_second = slot_start + timedelta(hours=12, seconds=-1)
    assert "component_access_token" in await exchange(first, last_second)
    assert_error(await exchange(first, slot_start + timedelta(hours=12)), 61005)
    assert "component_access_token" in await exchange(second, slot_start + timedelta(hours=12))
    # A ticket of a slot that has not begun yet is not one msgcube issued.
    assert_error(await exchange(second, slot_start), 61006)
    tampered = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
    for bad in (tampered, "ticket@@@nonsense", "", None, 12, first + "x"):
        assert_error(await exchange(bad, T0), 61006)

    other = fresh_appid("wxcomp")
    with w.store.write() as conn:
        register_platform(conn, component_appid=other, secret=PLATFORM_SECRET, now=ts(T0))
    w.at(T0)
    body = await w.d.post(
        COMPONENT_TOKEN,
        {
            "component_appid": other,
            "component_appsecret": PLATFORM_SECRET,
            "component_verify_ticket": first,
        },
    )
    assert_error(body, 61006)  # another platform's ticket


async def test_component_token_errors(world: World) -> None:
    w = world
    good = {
        "component_appid": w.component_appid,
        "component_appsecret": PLATFORM_SECRET,
        "component_verify_ticket": w.ticket(T0),
    }
    response = await w.d.client.get(COMPONENT_TOKEN)
    assert_error(response.json(), 43002)
    assert_error((await w.d.client.post(COMPONENT_TOKEN, content=b"")).json(), 44002)
    assert_error((await w.d.client.post(COMPONENT_TOKEN, content=b"{")).json(), 47001)
    assert_error(await w.d.post(COMPONENT_TOKEN, {**good, "component_appid": ""}), 41002)
    assert_error(await w.d.post(COMPONENT_TOKEN, {**good, "component_appsecret": None}), 41004)
    assert_error(await w.d.post(COMPONENT_TOKEN, {**good, "component_appid": "wxnobody"}), 61011)
    assert_error(await w.d.post(COMPONENT_TOKEN, {**good, "component_appsecret": "no"}), 40125)


async def test_component_tokens_supersede_with_5_minutes_of_overlap(world: World) -> None:
    w = world
    refresh = w.authorize([1])
    old = await w.component_token(T0)
    w.at(T0 + timedelta(seconds=10))
    await w.component_token(T0 + timedelta(seconds=10))
    w.at(T0 + timedelta(seconds=10 + 299))
    body = await w.exchange(old, refresh)
    assert "authorizer_access_token" in body
    w.at(T0 + timedelta(seconds=10 + 300))
    assert_error(await w.exchange(old, body["authorizer_refresh_token"]), 40001)


async def test_authorizer_token_errors(world: World) -> None:
    w = world
    refresh = w.authorize([1])
    component = await w.component_token(T0)
    own = await get_token(w.d.client, w.appid, SECRET)
    good = {
        "component_appid": w.component_appid,
        "authorizer_appid": w.appid,
        "authorizer_refresh_token": refresh,
    }
    assert_error((await w.d.client.get(AUTHORIZER_TOKEN)).json(), 43002)
    assert_error(await w.d.post(AUTHORIZER_TOKEN, good), 41001)
    assert_error(await w.d.post(AUTHORIZER_TOKEN, good, component_access_token="nope"), 40001)
    assert_error(await w.d.post(AUTHORIZER_TOKEN, good, component_access_token=own), 61014)
    ok = {"component_access_token": component}
    assert_error(await w.d.post(AUTHORIZER_TOKEN, {**good, "authorizer_appid": ""}, **ok), 41002)
    assert_error(
        await w.d.post(AUTHORIZER_TOKEN, {**good, "component_appid": "wxother"}, **ok), 61011
    )
    stranger = fresh_appid("wxstranger")
    new_account(w.store, stranger, SECRET)
    assert_error(
        await w.d.post(AUTHORIZER_TOKEN, {**good, "authorizer_appid": stranger}, **ok), 61003
    )
    assert_error(
        await w.d.post(AUTHORIZER_TOKEN, {**good, "authorizer_appid": "wxnobody"}, **ok), 61003
    )
    for bad in ("refreshtoken@@@nope", "", None):
        body = {**good, "authorizer_refresh_token": bad}
        assert_error(await w.d.post(AUTHORIZER_TOKEN, body, **ok), 61023)
    # Another account's refresh token does not work for this account.
    other = fresh_appid("wxacct")
    new_account(w.store, other, SECRET)
    other_refresh = w.authorize([1], appid=other)
    body = {**good, "authorizer_refresh_token": other_refresh}
    assert_error(await w.d.post(AUTHORIZER_TOKEN, body, **ok), 61023)
    # "access_token" is accepted for the component token too (WeChat's newer pages).
    assert "authorizer_access_token" in await w.d.post(
        AUTHORIZER_TOKEN, good, access_token=component
    )


async def test_refresh_tokens_rotate_with_5_minutes_of_grace(world: World) -> None:
    w = world
    r0 = w.authorize([1])
    component = await w.component_token(T0)
    r1 = (await w.exchange(component, r0))["authorizer_refresh_token"]
    w.at(T0 + timedelta(seconds=299))
    r2 = (await w.exchange(component, r0))["authorizer_refresh_token"]  # the answer got lost
    assert len({r0, r1, r2}) == 3
    w.at(T0 + timedelta(seconds=300))
    assert_error(await w.exchange(component, r0), 61023)
    r3 = (await w.exchange(component, r2))["authorizer_refresh_token"]
    # Re-authorization ends every earlier refresh token at once.
    r_new = w.authorize([1, 2])
    assert_error(await w.exchange(component, r3), 61023)
    assert "authorizer_access_token" in await w.exchange(component, r_new)


async def test_authorizer_tokens_overlap_and_are_independent_of_the_accounts_own(
    world: World,
) -> None:
    w = world
    component = await w.component_token(T0)
    grant = await w.exchange(component, w.authorize([1]))
    first = grant["authorizer_access_token"]

    async def day(token: str) -> dict:
        return await w.d.post("/datacube/getupstreammsg", DAY, access_token=token)

    assert "list" in await day(first)
    await get_token(w.d.client, w.appid, SECRET)  # the account's own tokens: another kind
    assert "list" in await day(first)
    w.at(T0 + timedelta(seconds=60))
    second = (await w.exchange(component, grant["authorizer_refresh_token"]))[
        "authorizer_access_token"
    ]
    w.at(T0 + timedelta(seconds=60 + 299))
    assert "list" in await day(first)
    w.at(T0 + timedelta(seconds=60 + 300))
    assert_error(await day(first), 40001)
    assert "list" in await day(second)
    w.at(T0 + timedelta(seconds=60 + 7200))
    body = await day(second)
    assert body["errcode"] == 42001


async def test_a_second_platform_is_not_affected_by_the_first_ones_revocation(
    world: World,
) -> None:
    w = world
    token_a = (await w.exchange(await w.component_token(T0), w.authorize([1])))[
        "authorizer_access_token"
    ]
    b = World(w.d, w.store, fresh_appid("wxcompb"), w.appid)
    with w.store.write() as conn:
        register_platform(
            conn, component_appid=b.component_appid, secret=PLATFORM_SECRET, now=ts(T0)
        )
    token_b = (await b.exchange(await b.component_token(T0), b.authorize([1])))[
        "authorizer_access_token"
    ]
    with w.store.write() as conn:
        platform = get_platform(conn, w.component_appid)
        account = get_account(conn, w.appid)
        assert platform is not None and account is not None
        assert revoke_authorization(conn, platform, account, ts(T0)) == 1
    bodies = [
        await w.d.post("/datacube/getupstreammsg", DAY, access_token=t) for t in (token_a, token_b)
    ]
    assert_error(bodies[0], 40001)
    assert "list" in bodies[1]


async def test_permission_sets_and_the_account_are_checked_on_every_call(world: World) -> None:
    w = world
    component = await w.component_token(T0)
    token = (await w.exchange(component, w.authorize([1, 2])))["authorizer_access_token"]
    call = {"access_token": token}
    assert "list" in await w.d.post("/datacube/getupstreammsg", DAY, **call)
    w.authorize([2])  # the owner narrows the grant: the live token loses set 1 at once
    assert_error(await w.d.post("/datacube/getupstreammsg", DAY, **call), 61007)
    w.authorize([1])
    assert "list" in await w.d.post("/datacube/getupstreammsg", DAY, **call)
    with w.store.write() as conn:
        set_account(conn, w.appid, verified=False)
    assert_error(await w.d.post("/datacube/getupstreammsg", DAY, **call), 48001)
