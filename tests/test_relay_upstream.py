"""Setting an account's upstream: the URL rules, ``msgcube account set|list``, the admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from msgcube.cli.main import cli
from msgcube.relay import check_upstream_url, shown_upstream, upstream_or_none
from msgcube.relay.upstream import upstream_target
from msgcube.settings import Settings
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store
from msgcube.web.app import create_app
from support.api import new_account

from conftest import PG_URL, fresh_appid

ADMIN = "admin-token-for-relay-tests-0123456789"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/wx",
        "https://bot.example.com/wechat?account=1",
        "https://user:pa%40ss@bot.example.com/",
        "http://[::1]:9000",
        "http://[fe80::1%25eth0]:9000/wx",  # a link-local address and its zone (RFC 6874)
    ],
)
def test_good_upstream_urls(url: str) -> None:
    assert check_upstream_url(f"  {url} ") == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("bot.example.com/wx", "http:// or https://"),
        ("ftp://bot.example.com/wx", "http:// or https://"),
        ("http:///wx", "no host"),
        ("http://bot.example.com:99999/", "invalid upstream URL"),
        ("http://bot.example.com:port/", "invalid upstream URL"),
        ("https://bot.example.com/wx#top", "#fragment"),
    ],
)
def test_bad_upstream_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_upstream_url(url)


def test_empty_clears_and_passwords_are_never_shown() -> None:
    assert upstream_or_none("") is None and upstream_or_none("  ") is None
    assert (
        shown_upstream("https://bot:s3cret@h.example/wx?a=1") == "https://bot:***@h.example/wx?a=1"
    )
    assert shown_upstream("https://h.example/wx") == "https://h.example/wx"
    assert shown_upstream("https://tok3n@h.example/wx") == "https://***@h.example/wx"
    assert shown_upstream("https://:s3cret@h.example/") == "https://:***@h.example/"
    assert shown_upstream(None) is None


def test_the_query_string_is_appended_unchanged() -> None:
    qs = b"signature=ab12&timestamp=1714036504&nonce=1514711492&openid=o_x-Y&encrypt_type=aes"
    assert upstream_target("http://h/wx", qs) == "http://h/wx?" + qs.decode()
    assert upstream_target("http://h/wx?acct=7", qs) == "http://h/wx?acct=7&" + qs.decode()
    assert upstream_target("http://h/wx", b"") == "http://h/wx"
    assert upstream_target("http://h/wx", b"a=%2F+b&c=\xe4 ") == "http://h/wx?a=%2F+b&c=%E4%20"


def run(store: Store, *args: str) -> Result:
    db = str(store.engine.url) if store.is_sqlite else PG_URL
    return CliRunner().invoke(
        cli, list(args), env={"MSGCUBE_CONFIG": "/dev/null", "MSGCUBE_DB": db}
    )


def listed(store: Store, appid: str) -> str:
    result = run(store, "account", "list")
    assert result.exit_code == 0, result.output
    return next(line for line in result.output.splitlines() if line.startswith(appid + "\t"))


def test_account_set_upstream_list_and_clear(store: Store) -> None:
    appid = fresh_appid("wxrelaycli")
    new_account(store, appid, "s")
    assert listed(store, appid).endswith("\tupstream:-")
    url = "https://relay:hunter2@bot.example.com/wechat"
    result: Result = run(store, "account", "set", "--appid", appid, "--upstream", url)
    assert result.exit_code == 0, result.output
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None and account.upstream_url == url
    line = listed(store, appid)
    assert line.endswith("\tupstream:https://relay:***@bot.example.com/wechat")
    assert "hunter2" not in line

    bad = run(store, "account", "set", "--appid", appid, "--upstream", "bot.example.com")
    assert bad.exit_code == 1  # the CLI's one error edge: one line, exit 1
    assert "must start with http:// or https://" in bad.output
    assert "Traceback" not in bad.output

    assert run(store, "account", "set", "--appid", appid, "--upstream", "").exit_code == 0
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None and account.upstream_url is None
    assert listed(store, appid).endswith("\tupstream:-")


@pytest.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(admin_token=ADMIN), store)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://msgcube.test/admin", headers=headers
    ) as client:
        yield client


async def test_admin_api_sets_shows_and_clears_the_upstream(
    api: httpx.AsyncClient, store: Store
) -> None:
    async def admin(method: str, path: str, body: Any) -> httpx.Response:
        return await api.request(method, path, json=body)

    appid = fresh_appid("wxrelayadm")
    created = await admin(
        "POST", "/accounts", {"appid": appid, "upstream": "http://127.0.0.1:9/wx"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["upstream"] == "http://127.0.0.1:9/wx"
    changed = await admin("PATCH", f"/accounts/{appid}", {"upstream": "https://u:pw@bot.test/"})
    assert changed.json()["upstream"] == "https://u:***@bot.test/"
    bad = await admin("PATCH", f"/accounts/{appid}", {"upstream": "gopher://bot.test/"})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("upstream: the upstream URL must start with http://")
    assert (await admin("PATCH", f"/accounts/{appid}", {"upstream": 7})).status_code == 400
    cleared = await admin("PATCH", f"/accounts/{appid}", {"upstream": None})
    assert cleared.json()["upstream"] is None
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None and account.upstream_url is None
