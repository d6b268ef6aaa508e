"""IP whitelists, trusted proxies and the access policy (contract).

The peer addresses are labels given to ``httpx.ASGITransport`` (no traffic leaves the
process); they come from the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and
203.0.113.0/24 and 2001:db8::/32.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from msgcube.auth.platforms import authorize_platform, exchange_refresh_token, register_platform
from msgcube.auth.policy import client_address, normalize_whitelist
from msgcube.cli.main import cli
from msgcube.settings import Settings
from msgcube.storage.accounts import get_account, set_account
from msgcube.storage.db import Store
from msgcube.storage.usage import daily_limit_override
from msgcube.web.app import create_app
from support.api import get_token, new_account, shanghai

from conftest import PG_URL, fresh_appid

T0 = shanghai(2026, 3, 10, 10)
DAY = orjson.dumps({"begin_date": "2026-03-09", "end_date": "2026-03-09"})
SECRET = "account-secret-0123456789abcdef"
PROXY = "192.0.2.10"
CLIENT = "203.0.113.7"
OTHER = "198.51.100.20"


# --------------------------------------------------------------------------- client address


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        (CLIENT, None, "", CLIENT),
        (CLIENT, OTHER, "", CLIENT),  # an untrusted peer cannot claim another address
        (CLIENT, OTHER, PROXY, CLIENT),
        (PROXY, OTHER, PROXY, OTHER),
        (PROXY, f"{CLIENT}, {OTHER}", PROXY, OTHER),  # the rightmost untrusted hop
        (PROXY, f"{CLIENT}, 192.0.2.11", "192.0.2.0/28", CLIENT),  # a chain of our proxies
        (PROXY, "192.0.2.12, 192.0.2.11", "192.0.2.0/28", "192.0.2.12"),
        (PROXY, "", PROXY, PROXY),
        (PROXY, "garbage", PROXY, "garbage"),
        ("::ffff:203.0.113.7", None, "", CLIENT),  # an IPv4 client on a dual-stack socket
        ("2001:db8::1", None, "", "2001:db8::1"),
        (None, CLIENT, PROXY, None),
    ],
)
def test_client_address(
    peer: str | None, forwarded: str | None, trusted: str, expected: str | None
) -> None:
    assert client_address(peer, forwarded, trusted) == expected


def test_whitelists_are_normalized_and_checked() -> None:
    assert normalize_whitelist(" 203.0.113.7, 198.51.100.0/24 ,,") == "203.0.113.7,198.51.100.0/24"
    assert normalize_whitelist(["2001:db8::1/128", "203.0.113.9/32"]) == "2001:db8::1,203.0.113.9"
    with pytest.raises(ValueError, match=r"not an IP address or network: 'example\.com'"):
        normalize_whitelist("203.0.113.7,example.com")


# --------------------------------------------------------------------------- over HTTP


class Caller:
    def __init__(self, store: Store, **settings: Any) -> None:
        self.store = store
        self.app = create_app(Settings(now=T0.isoformat(), **settings), store)

    async def datacube(
        self, token: str, peer: str, forwarded: str | list[str] | None = None
    ) -> dict[str, Any]:
        """``forwarded``: one X-Forwarded-For header, or a list of them (one line each)."""
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        lines = [forwarded] if isinstance(forwarded, str) else forwarded or []
        headers = [("X-Forwarded-For", line) for line in lines]
        async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as c:
            response = await c.post(
                "/datacube/getupstreammsg",
                params={"access_token": token},
                content=DAY,
                headers=headers,
            )
            result: dict[str, Any] = response.json()
            return result

    async def token(self, appid: str, peer: str = CLIENT) -> str:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as c:
            return await get_token(c, appid, SECRET)

    async def token_body(self, appid: str, peer: str, *, stable: bool = False) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as c:
            if stable:
                body = {"grant_type": "client_credential", "appid": appid, "secret": SECRET}
                response = await c.post("/cgi-bin/stable_token", json=body)
            else:
                response = await c.get(
                    "/cgi-bin/token",
                    params={"grant_type": "client_credential", "appid": appid, "secret": SECRET},
                )
            result: dict[str, Any] = response.json()
            return result


def ip_error(body: dict[str, Any], ip: str) -> None:
    assert body["errcode"] == 40164, body
    assert body["errmsg"].rpartition(" rid: ")[0] == f"invalid ip {ip}, not in whitelist", body


@pytest.fixture
def whitelisted(store: Store) -> str:
    appid = fresh_appid("wxip")
    new_account(store, appid, SECRET)
    with store.write() as conn:
        set_account(conn, appid, ip_whitelist=normalize_whitelist(f"{CLIENT},2001:db8::/64"))
    return appid


async def test_the_ip_whitelist_admits_listed_addresses_only(
    store: Store, whitelisted: str
) -> None:
    caller = Caller(store)
    token = await caller.token(whitelisted)
    assert "list" in await caller.datacube(token, CLIENT)
    assert "list" in await caller.datacube(token, "2001:db8::42")
    assert "list" in await caller.datacube(token, "::ffff:203.0.113.7")
    ip_error(await caller.datacube(token, OTHER), OTHER)
    # Without trusted proxies the header is the client's word, and not believed.
    ip_error(await caller.datacube(token, OTHER, forwarded=CLIENT), OTHER)


async def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    store: Store, whitelisted: str
) -> None:
    caller = Caller(store, trusted_proxies=f"{PROXY},127.0.0.1")
    token = await caller.token(whitelisted)
    assert "list" in await caller.datacube(token, PROXY, forwarded=CLIENT)
    ip_error(await caller.datacube(token, PROXY, forwarded=OTHER), OTHER)
    # A client cannot smuggle a whitelisted address in front of its own.
    ip_error(await caller.datacube(token, PROXY, forwarded=f"{CLIENT}, {OTHER}"), OTHER)
    # Nor in a line of its own before the one its proxy adds (HAProxy's option forwardfor).
    ip_error(await caller.datacube(token, PROXY, forwarded=[CLIENT, OTHER]), OTHER)
    ip_error(await caller.datacube(token, PROXY, forwarded=[f" {CLIENT}\t", f"{OTHER} "]), OTHER)
    assert "list" in await caller.datacube(token, PROXY, forwarded=[OTHER, CLIENT])
    # The proxy's own address is not the client's.
    ip_error(await caller.datacube(token, PROXY), PROXY)
    # A direct, untrusted peer still cannot claim an address.
    ip_error(await caller.datacube(token, OTHER, forwarded=CLIENT), OTHER)


async def test_the_whitelist_binds_the_accounts_own_tokens_not_a_platforms(
    store: Store, whitelisted: str
) -> None:
    now = int(T0.timestamp())
    with store.write() as conn:
        platform = register_platform(
            conn, component_appid=fresh_appid("wxipc"), secret="s", now=now
        )
        account = get_account(conn, whitelisted)
        assert account is not None
        _, refresh = authorize_platform(conn, platform, account, [1], now)
        token = exchange_refresh_token(conn, platform, account, refresh, now)
    caller = Caller(store)
    assert "list" in await caller.datacube(token.authorizer_access_token, OTHER)


async def test_the_whitelist_also_guards_the_quota_apis(store: Store, whitelisted: str) -> None:
    caller = Caller(store)
    token = await caller.token(whitelisted)
    transport = httpx.ASGITransport(app=caller.app, client=(OTHER, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://msgcube.test") as c:
        calls = [
            ("/cgi-bin/clear_quota", {"appid": whitelisted}),
            ("/cgi-bin/openapi/quota/get", {"cgi_path": "/datacube/getupstreammsg"}),
        ]
        for path, body in calls:
            response = await c.post(
                path, params={"access_token": token}, content=orjson.dumps(body)
            )
            ip_error(response.json(), OTHER)


async def test_unverified_accounts_and_the_third_party_only_policy(store: Store) -> None:
    appid, unverified = fresh_appid("wxpol"), fresh_appid("wxpolu")
    new_account(store, appid, SECRET)
    new_account(store, unverified, SECRET, verified=False)
    open_caller, beta_caller = Caller(store), Caller(store, access_policy="third_party_only")
    own, own_unverified = await open_caller.token(appid), await open_caller.token(unverified)
    assert "list" in await open_caller.datacube(own, CLIENT)
    assert (await open_caller.datacube(own_unverified, CLIENT))["errcode"] == 48001
    assert (await beta_caller.datacube(own, CLIENT))["errcode"] == 48001


# --------------------------------------------------------------------------- the CLI


def cli_db(store: Store) -> str:
    return str(store.engine.url) if store.is_sqlite else PG_URL


def test_account_set_ip_whitelist_and_daily_quota(store: Store) -> None:
    runner = CliRunner()
    appid = fresh_appid("wxcli")
    new_account(store, appid, SECRET)
    env = {"MSGCUBE_CONFIG": "/dev/null", "MSGCUBE_DB": cli_db(store)}
    args = ["account", "set", "--appid", appid, "--ip-whitelist", f"{CLIENT}, 198.51.100.0/24"]
    ok = runner.invoke(cli, [*args, "--daily-quota", "7"], env=env)
    assert ok.exit_code == 0, ok.output
    with store.read() as conn:
        account = get_account(conn, appid)
        assert account is not None
        assert account.ip_whitelist == (CLIENT, "198.51.100.0/24")
        assert daily_limit_override(conn, account.id) == 7
    bad = runner.invoke(
        cli, ["account", "set", "--appid", appid, "--ip-whitelist", "nope"], env=env
    )
    assert bad.exit_code == 1 and "not an IP address or network: 'nope'" in bad.output
    cleared = runner.invoke(
        cli,
        ["account", "set", "--appid", appid, "--ip-whitelist", "", "--daily-quota", "default"],
        env=env,
    )
    assert cleared.exit_code == 0, cleared.output
    with store.read() as conn:
        account = get_account(conn, appid)
        assert account is not None
        assert account.ip_whitelist == ()
        assert daily_limit_override(conn, account.id) is None


async def test_the_whitelist_also_guards_the_token_apis(store: Store, whitelisted: str) -> None:
    caller = Caller(store)
    assert "access_token" in await caller.token_body(whitelisted, CLIENT)
    ip_error(await caller.token_body(whitelisted, OTHER), OTHER)
    ip_error(await caller.token_body(whitelisted, OTHER, stable=True), OTHER)
    assert "access_token" in await caller.token_body(whitelisted, CLIENT, stable=True)


async def test_a_platforms_appid_on_the_token_api_answers_61024(store: Store) -> None:
    component = fresh_appid("wxcomp")
    with store.write() as conn:
        register_platform(conn, component_appid=component, secret="s", now=int(T0.timestamp()))
    body = await Caller(store).token_body(component, CLIENT)
    assert body["errcode"] == 61024
    assert body["errmsg"].startswith(
        "must use api(api_component_token) to get token for component acct rid: "
    )
