"""Changes to a token, an account, a grant or a quota reach both workers of a real server
on the very next call.

``msgcube serve --workers 2`` keeps each caller's checks in memory per process
(``auth/caller_cache.py``). Every call here opens a new connection, so the two workers
share the calls; each step first warms both workers' caches with calls that succeed, then
changes the database from this test's own process (as the CLI or another server would)
and asserts that every one of the following calls, from the first, sees the change. A
cache invalidated by time, or not at all, keeps answering ``{"list": []}`` and fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Connection

from msgcube.auth.platforms import authorize_platform, exchange_refresh_token, register_platform
from msgcube.storage.accounts import Account, get_account, set_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.usage import set_daily_limit_override
from support.server import ServerProcess, msgcube_env, run_msgcube

pytestmark = pytest.mark.slow

NOW = "2026-03-10T10:00:00+08:00"
NOW_TS = int(datetime.fromisoformat(NOW).timestamp())
APPID = "wxcacheworkers0001"
SECRET = "cache-workers-secret-0123456789a"
MSG = "/datacube/getupstreammsg"
BODY = orjson.dumps({"begin_date": "2026-03-09", "end_date": "2026-03-09"})
CALLS = 12


class Deployment:
    def __init__(self, server: ServerProcess, store: Store) -> None:
        self.server = server
        self.store = store

    def account(self) -> Account:
        with self.store.read() as conn:
            account = get_account(conn, APPID)
        assert account is not None
        return account

    def change(self, edit: Callable[[Connection], object]) -> None:
        with self.store.write() as conn:
            edit(conn)

    def call(self, token: str) -> dict[str, Any]:
        """One datacube call on a new connection (either worker may take it)."""
        answer = httpx.post(
            self.server.base_url + MSG, params={"access_token": token}, content=BODY
        )
        body: dict[str, Any] = answer.json()
        return body

    def outcomes(self, token: str) -> list[int]:
        """The errcode of each of ``CALLS`` calls (0 for an answer with a list)."""
        return [self.call(token).get("errcode", 0) for _ in range(CALLS)]

    def token(self, path: str = "/cgi-bin/token", **extra: object) -> str:
        body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, **extra}
        if path == "/cgi-bin/token":
            answer = httpx.get(self.server.base_url + path, params=body)
        else:
            answer = httpx.post(self.server.base_url + path, content=orjson.dumps(body))
        token: str = answer.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("cache_workers")
    db = tmp / "msgcube.db"
    run_msgcube("account", "add", "--appid", APPID, "--secret", SECRET, env=msgcube_env(db, NOW))
    store = open_store(f"sqlite:///{db}")
    try:
        with ServerProcess(db, tmp, now=NOW, workers=2, quota_datacube=10**6) as server:
            yield Deployment(server, store)
    finally:
        store.dispose()


def test_a_new_whitelist_and_verification_apply_on_the_next_call(deployment: Deployment) -> None:
    d = deployment
    token = d.token()
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: set_account(conn, APPID, ip_whitelist="10.9.8.7"))
    assert d.outcomes(token) == [40164] * CALLS
    d.change(lambda conn: set_account(conn, APPID, ip_whitelist="10.9.8.7,127.0.0.1"))
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: set_account(conn, APPID, verified=False))
    assert d.outcomes(token) == [48001] * CALLS
    d.change(lambda conn: set_account(conn, APPID, ip_whitelist="", verified=True))
    assert d.outcomes(token) == [0] * CALLS


def test_a_quota_change_applies_on_the_next_call(deployment: Deployment) -> None:
    d = deployment
    token = d.token()
    account = d.account()
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: set_daily_limit_override(conn, account.id, 0))
    assert d.outcomes(token) == [45009] * CALLS
    d.change(lambda conn: set_daily_limit_override(conn, account.id, None))
    assert d.outcomes(token) == [0] * CALLS


def test_a_revoked_token_fails_on_the_next_call(deployment: Deployment) -> None:
    d = deployment
    stable = d.token("/cgi-bin/stable_token")
    assert d.outcomes(stable) == [0] * CALLS
    fresh = d.token("/cgi-bin/stable_token", force_refresh=True)  # ends the old one at once
    assert fresh != stable
    assert d.outcomes(stable) == [40001] * CALLS
    assert d.outcomes(fresh) == [0] * CALLS


def test_a_secret_reset_applies_on_the_next_call(deployment: Deployment) -> None:
    """The old AppSecret stops issuing tokens at once; tokens already issued keep working,
    as in WeChat, and the cached account carries the new secret's hash."""
    d = deployment
    token = d.token()
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: set_account(conn, APPID, secret="a-new-secret-0123456789abcdef01"))
    refused = httpx.get(
        d.server.base_url + "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": APPID, "secret": SECRET},
    ).json()
    assert refused["errcode"] == 40125, refused
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: set_account(conn, APPID, secret=SECRET))


def test_a_narrowed_or_revoked_grant_applies_on_the_next_call(deployment: Deployment) -> None:
    d = deployment
    account = d.account()
    with d.store.write() as conn:
        platform = register_platform(
            conn, component_appid="wxcacheworkerscomp", secret="c" * 32, now=NOW_TS
        )
        _, refresh = authorize_platform(conn, platform, account, [1, 2, 3], NOW_TS)
        grant = exchange_refresh_token(conn, platform, account, refresh, NOW_TS)
    token = grant.authorizer_access_token
    assert d.outcomes(token) == [0] * CALLS
    d.change(lambda conn: authorize_platform(conn, platform, account, [2, 3], NOW_TS))
    assert d.outcomes(token) == [61007] * CALLS
    d.change(lambda conn: authorize_platform(conn, platform, account, [1], NOW_TS))
    assert d.outcomes(token) == [0] * CALLS
    with d.store.write() as conn:  # the grant alone, not its tokens: the check must notice
        conn.exec_driver_sql(
            "UPDATE authorizations SET revoked_at = ? WHERE account_id = ?", (NOW_TS, account.id)
        )
    assert d.outcomes(token) == [40001] * CALLS
