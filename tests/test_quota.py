"""Daily quotas (contract): counting, 45009, clear_quota, quota/get — and no write per call.

Over HTTP with the app in-process (one app = one worker's counter; the clock moves by
changing the app's settings), plus the counter itself for the multi-worker rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from msgcube.auth.platforms import (
    authorize_platform,
    exchange_refresh_token,
    issue_component_token,
    register_platform,
)
from msgcube.auth.quotas import QuotaCounter
from msgcube.errors import ApiError
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store
from msgcube.storage.schema import quota_usage
from msgcube.storage.usage import set_daily_limit_override
from support.api import get_token, new_account, shanghai
from test_platform_flow import Deployment

from conftest import fresh_appid

T0 = shanghai(2026, 3, 10, 10)
DAY = {"begin_date": "2026-03-09", "end_date": "2026-03-09"}
MSG = "/datacube/getupstreammsg"
HOUR = "/datacube/getupstreammsghour"
SECRET = "account-secret-0123456789abcdef"
TEXT = {
    40013: "invalid appid",
    41001: "access_token missing",
    41002: "appid missing",
    43002: "require POST method",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    48006: "forbid to clear quota because of reaching the limit",
    76003: "cgi_path format error",
    76021: "cgi_path not found, please check",
    76022: "token type error",
}


def assert_error(body: dict[str, Any], code: int) -> None:
    assert body.get("errcode") == code, body
    assert body["errmsg"].rpartition(" rid: ")[0] == TEXT[code], body


@dataclass
class Account:
    d: Deployment
    appid: str
    token: str

    async def call(self, path: str = MSG, token: str | None = None) -> dict[str, Any]:
        return await self.d.post(path, DAY, access_token=token or self.token)

    async def quota(self, cgi_path: str = MSG, token: str | None = None) -> dict[str, Any]:
        return await self.d.post(
            "/cgi-bin/openapi/quota/get", {"cgi_path": cgi_path}, access_token=token or self.token
        )

    async def used(self, cgi_path: str = MSG) -> int:
        body = await self.quota(cgi_path)
        assert "quota" in body, body
        return int(body["quota"]["used"])

    async def clear(self, appid: str | None = None, token: str | None = None) -> dict[str, Any]:
        return await self.d.post(
            "/cgi-bin/clear_quota", {"appid": appid or self.appid}, access_token=token or self.token
        )

    async def at(self, moment: datetime) -> None:
        """Move the clock; the account fetches a token that is valid then."""
        self.d.set(now=moment.isoformat())
        self.token = await get_token(self.d.client, self.appid, SECRET)


async def make_account(store: Store, **settings: Any) -> AsyncIterator[Account]:
    d = Deployment(store, T0, **settings)
    appid = fresh_appid("wxquota")
    new_account(store, appid, SECRET)
    async with d.client:
        yield Account(d, appid, await get_token(d.client, appid, SECRET))


@pytest.fixture
async def acct(store: Store) -> AsyncIterator[Account]:
    async for a in make_account(store):
        yield a


@pytest.fixture
async def small(store: Store) -> AsyncIterator[Account]:
    async for a in make_account(store, quota_datacube=3):
        yield a


def authorizer_token(store: Store, appid: str, funcs: list[int]) -> str:
    """An authorizer token for ``appid`` from a fresh platform (through the library)."""
    now = int(T0.timestamp())
    with store.write() as conn:
        platform = register_platform(conn, component_appid=fresh_appid("wxqp"), secret="s", now=now)
        account = get_account(conn, appid)
        assert account is not None
        _, refresh = authorize_platform(conn, platform, account, funcs, now)
        return exchange_refresh_token(conn, platform, account, refresh, now).authorizer_access_token


def db_used(store: Store, appid: str, api: str = MSG) -> int:
    with store.read() as conn:
        account = get_account(conn, appid)
        assert account is not None
        q = quota_usage.c
        value = conn.execute(
            select(q.used).where(q.account_id == account.id, q.api == api)
        ).scalar_one_or_none()
    return int(value or 0)


async def test_used_grows_by_exactly_the_number_of_calls(acct: Account, store: Store) -> None:
    assert (await acct.quota())["quota"] == {"daily_limit": 5000, "used": 0, "remain": 5000}
    for n in range(1, 6):
        assert "list" in await acct.call()
        assert await acct.used() == n
    assert await acct.used(HOUR) == 0  # per API
    # A third party calling for the account spends the account's quota.
    third = authorizer_token(store, acct.appid, [1])
    await acct.call(token=third)
    await acct.call(token=third)
    assert await acct.used() == 7
    assert (await acct.quota(token=third))["quota"]["used"] == 7
    # Calls refused before the quota check are not counted; calls past it are, as at WeChat.
    await acct.d.post(MSG, DAY, access_token="no-such-token")
    await acct.d.post(MSG, DAY, access_token=authorizer_token(store, acct.appid, [2]))
    assert (
        await acct.d.post(
            MSG, {"begin_date": "2026-03-10", "end_date": "2026-03-10"}, access_token=acct.token
        )
    )["errcode"] == 61501
    assert await acct.used() == 8


async def test_the_limit_answers_45009_until_clear_quota_resets_it(small: Account) -> None:
    for _ in range(3):
        assert "list" in await small.call()
    assert_error(await small.call(), 45009)
    assert_error(await small.call(), 45009)
    assert (await small.quota())["quota"] == {"daily_limit": 3, "used": 3, "remain": 0}
    assert "list" in await small.call(HOUR)  # another API has its own count
    assert await small.clear() == {"errcode": 0, "errmsg": "ok"}
    assert (await small.quota())["quota"] == {"daily_limit": 3, "used": 0, "remain": 3}
    assert await small.used(HOUR) == 0
    assert "list" in await small.call()


async def test_the_day_is_the_accounts_local_day(small: Account) -> None:
    await small.at(shanghai(2026, 3, 10, 23, 59, 59))
    for _ in range(3):
        await small.call()
    assert_error(await small.call(), 45009)
    await small.at(shanghai(2026, 3, 11, 0, 0, 0))
    assert await small.used() == 0
    assert "list" in await small.call()


async def test_the_11th_clear_of_a_month_answers_48006(acct: Account, store: Store) -> None:
    for _ in range(10):
        assert await acct.clear() == {"errcode": 0, "errmsg": "ok"}
    assert_error(await acct.clear(), 48006)
    assert_error(await acct.clear(token=authorizer_token(store, acct.appid, [1])), 48006)
    await acct.at(shanghai(2026, 3, 31, 23, 59))
    assert_error(await acct.clear(), 48006)
    await acct.at(shanghai(2026, 4, 1, 0, 0))  # a new calendar month, local time
    assert await acct.clear() == {"errcode": 0, "errmsg": "ok"}


async def test_clear_quota_errors(acct: Account, store: Store) -> None:
    other = fresh_appid("wxquota")
    new_account(store, other, SECRET)
    assert_error(await acct.clear(appid=other), 40013)
    assert_error(await acct.d.post("/cgi-bin/clear_quota", {}, access_token=acct.token), 41002)
    assert_error(await acct.d.post("/cgi-bin/clear_quota", {"appid": acct.appid}), 41001)
    assert_error((await acct.d.client.get("/cgi-bin/clear_quota")).json(), 43002)
    # A platform may clear its own (empty) quota with its component token, nobody else's.
    now = int(T0.timestamp())
    with store.write() as conn:
        platform = register_platform(conn, component_appid=fresh_appid("wxqp"), secret="s", now=now)
        component = issue_component_token(conn, platform, now).component_access_token
    assert await acct.clear(appid=platform.component_appid, token=component) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    assert_error(await acct.clear(appid=acct.appid, token=component), 40013)


async def test_quota_get_errors_and_the_token_quota(acct: Account, store: Store) -> None:
    assert_error(await acct.quota("datacube/getupstreammsg"), 76003)
    assert_error(await acct.quota("https://api.weixin.qq.com/datacube/getupstreammsg"), 76003)
    assert_error(await acct.quota("/cgi-bin/nothing"), 76021)
    assert_error(await acct.quota("/sns/oauth2/access_token"), 76022)
    assert_error(
        await acct.d.post("/cgi-bin/openapi/quota/get", {}, access_token=acct.token), 47001
    )
    now = int(T0.timestamp())
    with store.write() as conn:
        platform = register_platform(conn, component_appid=fresh_appid("wxqp"), secret="s", now=now)
        component = issue_component_token(conn, platform, now).component_access_token
    assert_error(await acct.quota(token=component), 76022)
    # /cgi-bin/token has its own daily quota (the quota_token setting): one call so far.
    assert (await acct.quota("/cgi-bin/token"))["quota"] == {
        "daily_limit": 2000,
        "used": 1,
        "remain": 1999,
    }


async def test_counting_writes_nothing_per_call(acct: Account, store: Store) -> None:
    for _ in range(25):
        await acct.call()
    assert db_used(store, acct.appid) == 0, "a call must not write"
    counter: QuotaCounter = acct.d.app.state.quotas
    assert counter.flush() == 25
    assert db_used(store, acct.appid) == 25
    assert await acct.used() == 25  # flushed and pending are never counted twice
    for _ in range(5):
        await acct.call()
    assert await acct.used() == 30
    assert counter.flush() == 5
    assert counter.flush() == 0
    assert db_used(store, acct.appid) == 30
    assert await acct.used() == 30


async def test_the_lifespan_flushes_counts_at_shutdown(store: Store) -> None:
    async for a in make_account(store):
        async with a.d.app.router.lifespan_context(a.d.app):
            for _ in range(7):
                await a.call()
        assert db_used(store, a.appid) == 7


async def test_an_accounts_own_daily_limit_overrides_the_setting(
    acct: Account, store: Store
) -> None:
    with store.write() as conn:
        account = get_account(conn, acct.appid)
        assert account is not None
        set_daily_limit_override(conn, account.id, 2)
    acct.d.app.state.quotas = QuotaCounter(store)  # a worker started after the change
    await acct.call()
    await acct.call()
    assert_error(await acct.call(), 45009)
    assert (await acct.quota())["quota"] == {"daily_limit": 2, "used": 2, "remain": 0}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_workers_share_the_quota_through_the_database(store: Store) -> None:
    appid = fresh_appid("wxquota")
    account = new_account(store, appid, SECRET)
    day = date(2026, 3, 10)
    clock = Clock()
    a, b = (QuotaCounter(store, cache_seconds=1.0, clock=clock) for _ in range(2))
    limit = 10
    for _ in range(6):
        a.admit(account.id, MSG, day, limit)
    assert b.status(account.id, MSG, day, limit).used == 0  # a has not flushed yet
    a.flush()
    assert b.status(account.id, MSG, day, limit).used == 0  # b's view is < 1 s old
    clock.t += 1.0
    assert b.status(account.id, MSG, day, limit).used == 6
    for _ in range(4):
        b.admit(account.id, MSG, day, limit)
    with pytest.raises(ApiError) as refused:
        b.admit(account.id, MSG, day, limit)
    assert refused.value.errcode == 45009
    b.flush()
    clock.t += 1.0
    assert a.status(account.id, MSG, day, limit).used == 10
    assert db_used(store, appid) == 10


def test_over_admission_is_bounded_by_what_other_workers_have_not_flushed(store: Store) -> None:
    """The documented window: each worker sees the others' calls only after a flush."""
    appid = fresh_appid("wxquota")
    account = new_account(store, appid, SECRET)
    day = date(2026, 3, 10)
    clock = Clock()
    workers = [QuotaCounter(store, clock=clock) for _ in range(3)]
    limit = 5
    admitted = 0
    for w in workers:
        for _ in range(limit + 2):
            try:
                w.admit(account.id, MSG, day, limit)
                admitted += 1
            except ApiError:
                pass
    assert admitted == 3 * limit  # nothing flushed: each worker only knows its own calls
    for w in workers:
        w.flush()
    clock.t += 1.0
    for w in workers:
        with pytest.raises(ApiError):
            w.admit(account.id, MSG, day, limit)
    assert db_used(store, appid) == 3 * limit


def test_counts_survive_a_failed_flush(store: Store) -> None:
    appid = fresh_appid("wxquota")
    account = new_account(store, appid, SECRET)
    day = date(2026, 3, 10)
    counter = QuotaCounter(store)
    for _ in range(4):
        counter.admit(account.id, MSG, day, 100)
    real_store, counter.store = counter.store, None  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        counter.flush()
    counter.store = real_store
    assert counter.pending() == 4
    assert counter.flush() == 4
    assert db_used(store, appid) == 4
