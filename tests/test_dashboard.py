"""The dashboard in-process (httpx ``ASGITransport``): sign-in, session, CSRF, data, i18n.

Every number the dashboard serves is checked against ``served_list`` asked one day at a
time (``support.dashboard.truth``) and against the real ``/datacube`` API.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from msgcube.cli.demo import DEMO_APPID, demo_secret
from msgcube.domain.endpoints import BY_NAME, ENDPOINTS
from msgcube.rollup.query import served_list
from msgcube.settings import Settings
from msgcube.storage.accounts import set_account
from msgcube.storage.db import Store, open_store
from msgcube.web.app import create_app
from msgcube.web.dashboard.assets import plotly_path
from msgcube.web.dashboard.i18n import missing_labels, pick_language
from support.api import datacube, get_token
from support.dashboard import NOW, YESTERDAY, day_totals, reload, seed_account, truth
from support.server import msgcube_env, run_msgcube

from conftest import fresh_appid

ADMIN = "admin-token-for-tests-0123456789"
SECRET = "dash-secret-0123456789abcdef0123"
OTHER_SECRET = "other-secret-0123456789abcdef012"
BASE = "http://msgcube.test"
SRC = Path(__file__).resolve().parents[1] / "src" / "msgcube"


@dataclass
class World:
    store: Store
    appid: str
    other: str
    empty: str


@pytest.fixture(scope="module")
def world(sqlite_store: Store) -> World:
    appid, other, empty = fresh_appid("wxdash"), fresh_appid("wxdashb"), fresh_appid("wxdashe")
    seed_account(sqlite_store, appid, SECRET)
    seed_account(sqlite_store, other, OTHER_SECRET, days=20, users=40, seed=3)
    seed_account(sqlite_store, empty, SECRET, days=0)
    return World(sqlite_store, appid, other, empty)


@contextlib.asynccontextmanager
async def browser(
    store: Store, *, base: str = BASE, lang: str = "zh-CN,zh;q=0.9", **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client of the app, clock pinned at NOW, as a browser would be."""
    values: dict[str, Any] = {"now": NOW.isoformat(), "admin_token": ADMIN, **settings}
    app = create_app(Settings(**values), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=base, headers={"accept-language": lang}
    ) as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, appid: str, secret: str) -> httpx.Response:
    page = await client.get("/dashboard/login")
    return await client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(page.text), "kind": "account", "appid": appid, "secret": secret},
    )


async def sign_in_admin(client: httpx.AsyncClient, token: str = ADMIN) -> httpx.Response:
    page = await client.get("/dashboard/login")
    return await client.post(
        "/dashboard/login", data={"csrf": csrf_of(page.text), "kind": "admin", "token": token}
    )


async def rows(client: httpx.AsyncClient, name: str, begin: date, end: date) -> dict[str, Any]:
    response = await client.get(
        f"/dashboard/api/rows/{name}", params={"begin": str(begin), "end": str(end)}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def parse_csv(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [
        dict(zip(header, (v if "-" in v else int(v) for v in line), strict=True)) for line in reader
    ]


# --------------------------------------------------------------------------- sign-in


async def test_the_dashboard_asks_for_sign_in(world: World) -> None:
    async with browser(world.store) as client:
        first = await client.get("/dashboard")
        assert first.status_code == 303
        assert first.headers["location"] == "/dashboard/login"
        page = await client.get("/dashboard/login")
    assert page.status_code == 200
    assert '<label for="appid">' in page.text and '<label for="secret">' in page.text
    assert 'id="admin-login"' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith("msgcube_dashboard=")
    for attribute in ("httponly", "samesite=lax", "path=/dashboard", "max-age=43200"):
        assert attribute in cookie
    assert "secure" not in cookie
    assert "content-security-policy" in page.headers
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_the_cookie_is_secure_over_https(world: World) -> None:
    async with browser(world.store, base="https://msgcube.test") as client:
        page = await client.get("/dashboard/login")
        assert "secure" in page.headers["set-cookie"].lower()
        signed = await sign_in(client, world.appid, SECRET)
        assert signed.status_code == 303
        assert (await client.get("/dashboard")).status_code == 200


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(world: World) -> None:
    """A proxy terminating TLS talks http to msgcube; the browser still used https, and
    without Secure it would send the session over any plain-http request to the host."""
    https = {"x-forwarded-proto": "https"}
    async with browser(world.store, trusted_proxies="127.0.0.1") as client:
        page = await client.get("/dashboard/login", headers=https)
        assert "secure" in page.headers["set-cookie"].lower()
        plain = await client.get("/dashboard/login", headers={"x-forwarded-proto": "http"})
        assert "secure" not in plain.headers["set-cookie"].lower()
    async with browser(world.store) as client:  # an untrusted peer's word is not taken
        page = await client.get("/dashboard/login", headers=https)
        assert "secure" not in page.headers["set-cookie"].lower()


async def test_sign_in_with_appid_and_secret(world: World) -> None:
    async with browser(world.store) as client:
        signed = await sign_in(client, world.appid, SECRET)
        assert signed.status_code == 303
        assert signed.headers["location"] == "/dashboard"
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert world.appid in page.text
        assert 'id="key-numbers"' in page.text
        assert (await client.get("/dashboard/login")).headers["location"] == "/dashboard"


@pytest.mark.parametrize("which", ["wrong secret", "unknown appid", "empty"])
async def test_bad_credentials_are_refused_alike(world: World, which: str) -> None:
    appid, secret = {
        "wrong secret": (world.appid, "not-the-secret"),
        "unknown appid": ("wxnobody", SECRET),
        "empty": ("", ""),
    }[which]
    async with browser(world.store) as client:
        refused = await sign_in(client, appid, secret)
        assert refused.status_code == 401
        assert "AppID 或 AppSecret 不正确。" in refused.text
        assert 'role="alert"' in refused.text
        assert (await client.get("/dashboard")).status_code == 303


async def test_an_empty_secret_never_signs_in(sqlite_store: Store) -> None:
    """An account stored with an empty AppSecret (possible before ``update_account``
    refused one) does not open to its appid alone: ``/cgi-bin/token`` calls an empty
    secret missing (41004), and the dashboard agrees."""
    appid = fresh_appid("wxnosecret")
    seed_account(sqlite_store, appid, SECRET, days=1, users=2)
    with sqlite_store.write() as conn:
        set_account(conn, appid, secret="")  # no checks at this layer: an old database
    async with browser(sqlite_store) as client:
        refused = await sign_in(client, appid, "")
        assert refused.status_code == 401
        assert (await client.get("/dashboard")).status_code == 303
        token = await client.get(
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": appid, "secret": ""},
        )
        assert token.json()["errcode"] == 41004


async def test_a_new_secret_ends_old_sessions(sqlite_store: Store) -> None:
    appid = fresh_appid("wxrotate")
    seed_account(sqlite_store, appid, SECRET, days=3, users=5)
    async with browser(sqlite_store) as client:
        await sign_in(client, appid, SECRET)
        assert (await client.get("/dashboard")).status_code == 200
        with sqlite_store.write() as conn:
            set_account(conn, appid, secret="rotated-secret-0123456789abcdef")
        assert (await client.get("/dashboard")).status_code == 303
        api = await client.get(
            "/dashboard/api/rows/getupstreammsg",
            params={"begin": "2026-03-01", "end": "2026-03-02"},
        )
        assert api.status_code == 401


async def test_a_forged_or_tampered_cookie_is_anonymous(world: World) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        value = client.cookies["msgcube_dashboard"]
        payload, _, signature = value.partition(".")
        client.cookies.set("msgcube_dashboard", payload + "." + signature[::-1], path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 303
    async with browser(world.store) as client:
        client.cookies.set("msgcube_dashboard", "garbage", path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 303


# --------------------------------------------------------------------------- CSRF, logout


async def test_posts_without_the_csrf_token_are_refused(world: World) -> None:
    async with browser(world.store) as client:
        await client.get("/dashboard/login")
        form = {"kind": "account", "appid": world.appid, "secret": SECRET}
        missing = await client.post("/dashboard/login", data=form)
        wrong = await client.post("/dashboard/login", data={**form, "csrf": "x" * 32})
        assert missing.status_code == wrong.status_code == 403
        assert (await client.get("/dashboard")).status_code == 303


async def test_a_login_from_another_site_is_refused(world: World) -> None:
    """Login CSRF: a foreign page cannot sign the browser in, even with a valid token."""
    async with browser(world.store) as client:
        page = await client.get("/dashboard/login")
        form = {
            "csrf": csrf_of(page.text),
            "kind": "account",
            "appid": world.appid,
            "secret": SECRET,
        }
        foreign = await client.post(
            "/dashboard/login", data=form, headers={"origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        opaque = await client.post("/dashboard/login", data=form, headers={"origin": "null"})
        assert opaque.status_code == 403
        own = await client.post("/dashboard/login", data=form, headers={"origin": BASE})
        assert own.status_code == 303


async def test_the_origin_check_allows_a_tls_proxy(world: World) -> None:
    """Behind a proxy that terminates TLS the app sees http; the host still has to match."""
    async with browser(world.store) as client:
        page = await client.get("/dashboard/login")
        form = {
            "csrf": csrf_of(page.text),
            "kind": "account",
            "appid": world.appid,
            "secret": SECRET,
        }
        proxied = await client.post(
            "/dashboard/login",
            data=form,
            headers={
                "origin": "https://stats.example.com",
                "x-forwarded-host": "stats.example.com",
            },
        )
        assert proxied.status_code == 303
    async with browser(world.store) as client:
        page = await client.get("/dashboard/login")
        form["csrf"] = csrf_of(page.text)
        tls = await client.post(
            "/dashboard/login", data=form, headers={"origin": "https://msgcube.test"}
        )
        assert tls.status_code == 303


async def test_a_refused_post_leaves_the_session_alone(world: World) -> None:
    """A cross-site POST comes without the SameSite cookie; answering it with a new cookie
    would sign the victim out, so the refusal sets none."""
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        session = client.cookies["msgcube_dashboard"]
        client.cookies.clear()
        refused = await client.post(
            "/dashboard/logout", data={"csrf": "guess"}, headers={"origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
        client.cookies.set("msgcube_dashboard", session, path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 200


async def test_a_post_without_a_session_cookie_is_refused(world: World) -> None:
    async with browser(world.store) as client:
        page = await client.get("/dashboard/login")
        token = csrf_of(page.text)
        client.cookies.clear()
        refused = await client.post(
            "/dashboard/login",
            data={"csrf": token, "kind": "account", "appid": world.appid, "secret": SECRET},
        )
        assert refused.status_code == 403


async def test_logout(world: World) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        page = await client.get("/dashboard")
        assert (await client.post("/dashboard/logout", data={})).status_code == 403
        assert (await client.get("/dashboard")).status_code == 200  # still signed in
        out = await client.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert out.headers["location"] == "/dashboard/login"
        assert (await client.get("/dashboard")).status_code == 303
        api = await client.get(
            "/dashboard/api/rows/getupstreammsg",
            params={"begin": "2026-03-01", "end": "2026-03-02"},
        )
        assert api.status_code == 401


async def test_sign_in_gives_a_new_csrf_token(world: World) -> None:
    async with browser(world.store) as client:
        before = csrf_of((await client.get("/dashboard/login")).text)
        await sign_in(client, world.appid, SECRET)
        after = csrf_of((await client.get("/dashboard")).text)
        assert before != after


# --------------------------------------------------------------------------- admin


async def test_admin_token_signs_in_and_switches_accounts(world: World) -> None:
    async with browser(world.store) as client:
        assert (await sign_in_admin(client)).status_code == 303
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert 'id="switch-appid"' in page.text
        for appid in (world.appid, world.other, world.empty):
            assert f'<option value="{appid}"' in page.text
        switched = await client.post(
            "/dashboard/switch", data={"csrf": csrf_of(page.text), "appid": world.other}
        )
        assert switched.status_code == 303
        page = await client.get("/dashboard")
        assert f'<option value="{world.other}" selected>' in page.text
        body = await rows(client, "getupstreammsg", YESTERDAY - timedelta(days=6), YESTERDAY)
        other = reload(world.store, world.other)
        assert body["list"] == served_list(
            world.store,
            other,
            BY_NAME["getupstreammsg"],
            str(YESTERDAY - timedelta(days=6)),
            str(YESTERDAY),
            NOW,
        )
        unknown = await client.post(
            "/dashboard/switch", data={"csrf": csrf_of(page.text), "appid": "wxnobody"}
        )
        assert unknown.status_code == 303
        assert f'<option value="{world.other}" selected>' in (await client.get("/dashboard")).text


async def test_admin_sign_in_needs_the_right_configured_token(world: World) -> None:
    async with browser(world.store) as client:
        assert (await sign_in_admin(client, "wrong")).status_code == 401
    async with browser(world.store, admin_token="") as client:
        page = await client.get("/dashboard/login")
        assert 'id="admin-login"' not in page.text
        assert (await sign_in_admin(client, "")).status_code == 403
    async with browser(world.store) as client:
        await sign_in_admin(client)
        cookie = client.cookies["msgcube_dashboard"]
    async with browser(world.store, admin_token="a-new-admin-token") as client:
        client.cookies.set("msgcube_dashboard", cookie, path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 303


async def test_an_account_cannot_switch(world: World) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        page = await client.get("/dashboard")
        assert 'id="switch-appid"' not in page.text
        refused = await client.post(
            "/dashboard/switch", data={"csrf": csrf_of(page.text), "appid": world.other}
        )
        assert refused.status_code == 403
        body = await rows(client, "getupstreammsg", YESTERDAY, YESTERDAY)
        account = reload(world.store, world.appid)
        assert body["list"] == served_list(
            world.store, account, BY_NAME["getupstreammsg"], str(YESTERDAY), str(YESTERDAY), NOW
        )


# --------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_json_rows_are_served_list_over_long_ranges(world: World, ep: Any) -> None:
    account = reload(world.store, world.appid)
    begin = YESTERDAY - timedelta(days=80) if ep.name != "getupstreammsghour" else YESTERDAY
    if ep.name == "getupstreammsghour":
        begin = YESTERDAY - timedelta(days=2)
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        body = await rows(client, ep.name, begin, YESTERDAY)
    expected = truth(world.store, account, ep, begin, YESTERDAY)
    assert expected, "the seeded account should have rows"
    assert body["list"] == expected
    assert set(body) == {"list", "periods"}
    assert {r["ref_date"] for r in body["list"]} <= set(body["periods"])


@pytest.mark.parametrize("profile", ["classic", "current"])
async def test_json_rows_equal_the_datacube_api(world: World, profile: str) -> None:
    """Over every range the API accepts in one call, the dashboard returns the same list."""
    async with browser(world.store, span_profile=profile) as client:
        token = await get_token(client, world.appid, SECRET)
        await sign_in(client, world.appid, SECRET)
        for ep in ENDPOINTS:
            begin = YESTERDAY - timedelta(days=ep.max_span(profile) - 1)
            api = await datacube(client, token, ep.name, begin, YESTERDAY)
            assert "list" in api, api
            body = await rows(client, ep.name, begin, YESTERDAY)
            assert body["list"] == api["list"], ep.name


async def test_json_rows_on_both_backends(store: Store) -> None:
    appid = fresh_appid("wxdashpg")
    account = seed_account(store, appid, SECRET, days=20, users=60)
    async with browser(store) as client:
        signed = await sign_in(client, appid, SECRET)
        assert signed.status_code == 303, signed.text
        for name in ("getupstreammsg", "getupstreammsgweek", "getupstreammsgdistmonth"):
            ep = BY_NAME[name]
            begin = YESTERDAY - timedelta(days=40)
            body = await rows(client, name, begin, YESTERDAY)
            assert body["list"] == truth(store, account, ep, begin, YESTERDAY)


@pytest.mark.parametrize("msg_type", [None, 1, 6])
async def test_csv_export_is_the_api_rows(world: World, msg_type: int | None) -> None:
    begin = YESTERDAY - timedelta(days=6)
    async with browser(world.store) as client:
        token = await get_token(client, world.appid, SECRET)
        await sign_in(client, world.appid, SECRET)
        for name in ("getupstreammsg", "getupstreammsghour", "getupstreammsgdist"):
            ep = BY_NAME[name]
            first = YESTERDAY if name == "getupstreammsghour" else begin
            params: dict[str, Any] = {"begin": str(first), "end": str(YESTERDAY)}
            if msg_type is not None:
                params["msg_type"] = msg_type
            response = await client.get(f"/dashboard/export/{name}.csv", params=params)
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            assert (
                f"{world.appid}-{name}-{first}-{YESTERDAY}"
                in response.headers["content-disposition"]
            )
            header, parsed = parse_csv(response.text)
            assert tuple(header) == ep.fields
            api = (await datacube(client, token, name, first, YESTERDAY))["list"]
            assert api  # the seeded account has traffic on every day
            if msg_type is not None and "msg_type" in ep.fields:
                api = [r for r in api if r["msg_type"] == msg_type]
                # One day may lack a rare type (the traffic depends on the random appid),
                # but a week of it never does: the filter is then really exercised.
                assert api or name == "getupstreammsghour"
            assert parsed == api


async def test_key_numbers_are_sums_of_served_rows(world: World) -> None:
    account = reload(world.store, world.appid)
    users, count = day_totals(world.store, account, YESTERDAY)
    before = {
        k: day_totals(world.store, account, YESTERDAY - timedelta(days=n))
        for k, n in (("day", 1), ("week", 7), ("month", 30))
    }
    async with browser(world.store, lang="en") as client:
        await sign_in(client, world.appid, SECRET)
        page = (await client.get("/dashboard")).text
    cards = dict(re.findall(r'data-metric="(\w+)">.*?data-value="([^"]*)"', page, re.S))
    assert float(cards["msg_user"]) == users
    assert float(cards["msg_count"]) == count
    assert float(cards["per_user"]) == pytest.approx(count / users)
    assert f">{users:,}<" in page and f">{count:,}<" in page
    old_users, _old_count = before["day"]
    change = (users - old_users) / old_users * 100
    if change == 0:  # the generated data depends on the (random) appid: equal days happen
        assert "0.0%" in page
    else:
        arrow = "▲" if change > 0 else "▼"
        assert f"{arrow} {abs(change):.1f}%" in page


async def test_before_ready_at_yesterday_is_left_out(world: World) -> None:
    account = reload(world.store, world.appid)
    async with browser(world.store, ready_at="23:00") as client:
        await sign_in(client, world.appid, SECRET)
        page = (await client.get("/dashboard")).text
        assert "昨日数据将于 23:00 后提供。" in page
        begin = YESTERDAY - timedelta(days=9)
        body = await rows(client, "getupstreammsg", begin, YESTERDAY)
    assert body["not_ready"] is True
    assert body["list"] == truth(
        world.store, account, BY_NAME["getupstreammsg"], begin, YESTERDAY - timedelta(days=1)
    )
    assert str(YESTERDAY) not in body["periods"]


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"begin": "2026-3-1", "end": "2026-03-02"}, 61500),
        ({"begin": "2026-02-30", "end": "2026-03-02"}, 61500),
        ({"begin": "2026-03-05", "end": "2026-03-02"}, 61501),
        ({"begin": "2020-01-01", "end": "2026-03-02"}, 61501),
        ({"begin": "2026-03-01"}, 47001),
    ],
)
async def test_bad_ranges_are_explained(world: World, params: dict[str, str], errcode: int) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        response = await client.get("/dashboard/api/rows/getupstreammsg", params=params)
    assert response.status_code == 400
    assert response.json()["errcode"] == errcode


async def test_future_days_are_capped_at_yesterday(world: World) -> None:
    account = reload(world.store, world.appid)
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        body = await rows(
            client, "getupstreammsg", YESTERDAY - timedelta(days=3), YESTERDAY + timedelta(days=30)
        )
    assert body["list"] == truth(
        world.store, account, BY_NAME["getupstreammsg"], YESTERDAY - timedelta(days=3), YESTERDAY
    )


async def test_data_needs_a_session_and_a_known_endpoint(world: World) -> None:
    async with browser(world.store) as client:
        params = {"begin": "2026-03-01", "end": "2026-03-02"}
        assert (
            await client.get("/dashboard/api/rows/getupstreammsg", params=params)
        ).status_code == 401
        assert (
            await client.get("/dashboard/export/getupstreammsg.csv", params=params)
        ).status_code == 401
        await sign_in(client, world.appid, SECRET)
        assert (await client.get("/dashboard/api/rows/nosuch", params=params)).status_code == 404


# --------------------------------------------------------------------------- pages


async def test_empty_state_explains_how_to_get_data_in(world: World) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.empty, SECRET)
        page = (await client.get("/dashboard")).text
        body = await rows(client, "getupstreammsg", YESTERDAY - timedelta(days=6), YESTERDAY)
    assert 'id="empty-state"' in page
    assert f"msgcube import --appid {world.empty}" in page
    assert f"msgcube generate --appid {world.empty}" in page
    assert f"{BASE}/wechat/callback/{world.empty}" in page
    assert "plotly.min.js" not in page
    assert body["list"] == []


async def test_chinese_and_english(world: World) -> None:
    async with browser(world.store, lang="zh-CN,zh;q=0.9,en;q=0.5") as client:
        await sign_in(client, world.appid, SECRET)
        zh = (await client.get("/dashboard")).text
        assert '<html lang="zh-CN">' in zh
        for term in (
            "消息分析",
            "消息发送人数",
            "消息发送次数",
            "人均发送次数",
            "消息类型",
            "文字",
            "图片",
            "语音",
            "视频",
            "第三方应用消息（链接）",
            "1-5次",
            "6-10次",
            "10次以上",
        ):
            assert term in zh, term
        switched = await client.post(
            "/dashboard/language",
            data={"csrf": csrf_of(zh), "lang": "en", "next": "/dashboard?period=week"},
        )
        assert switched.headers["location"] == "/dashboard?period=week"
        en = (await client.get("/dashboard")).text
        assert '<html lang="en">' in en
        for term in (
            "Message analysis",
            "Senders",
            "Messages sent",
            "Messages per sender",
            "Message type",
            "Third-party app message (link)",
        ):
            assert term in en, term
        assert "消息发送人数" not in en
    async with browser(world.store, lang="en-GB,en;q=0.8") as client:
        login = (await client.get("/dashboard/login")).text
        assert '<html lang="en">' in login and "Sign in" in login


async def test_language_switch_only_goes_back_to_the_dashboard(world: World) -> None:
    async with browser(world.store) as client:
        page = (await client.get("/dashboard/login")).text
        for target in ("https://evil.example/", "//evil.example/dashboard", "/dashboard//evil"):
            response = await client.post(
                "/dashboard/language", data={"csrf": csrf_of(page), "lang": "en", "next": target}
            )
            assert response.headers["location"] == "/dashboard"


def test_every_code_and_text_has_both_languages() -> None:
    assert missing_labels() == []
    assert pick_language(None, "en-US,en;q=0.9") == "en"
    assert pick_language(None, "fr-FR, zh-TW;q=0.5") == "zh"
    assert pick_language(None, None) == "zh"
    assert pick_language("en", "zh-CN") == "en"


async def test_filters_in_the_url_are_honoured_and_odd_ones_ignored(world: World) -> None:
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        page = (
            await client.get(
                "/dashboard",
                params={
                    "period": "week",
                    "msg_type": "6",
                    "begin": "2026-01-05",
                    "end": "2026-03-08",
                    "metric": "per_user",
                    "day": "2026-03-02",
                },
            )
        ).text
        assert '<option value="week" selected>' in page
        assert '<option value="6" selected>' in page
        assert 'value="2026-01-05"' in page and 'value="2026-03-08"' in page
        assert 'id="m-per_user" value="per_user" checked' in page
        assert 'name="day" type="date" value="2026-03-02"' in page
        odd_params = {"period": "year", "msg_type": "5", "begin": "x", "metric": "<script>"}
        odd = (await client.get("/dashboard", params=odd_params)).text
        assert '<option value="day" selected>' in odd
        assert "<script>" not in odd.split('id="dashboard-config"')[0]


# --------------------------------------------------------------------------- assets


async def test_plotly_is_served_from_the_installed_package(world: World) -> None:
    path = plotly_path()
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    async with browser(world.store) as client:
        await sign_in(client, world.appid, SECRET)
        page = (await client.get("/dashboard")).text
        url = re.search(r'src="(/dashboard/vendor/plotly\.min\.js\?v=\w+)"', page)
        assert url
        js = await client.get(url.group(1))
        assert js.status_code == 200
        assert js.headers["content-encoding"] == "gzip"
        assert js.content == path.read_bytes()
        again = await client.get(url.group(1), headers={"if-none-match": js.headers["etag"]})
        assert again.status_code == 304
        css = await client.get("/dashboard/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await client.get("/dashboard/static/../routes.py")).status_code == 404
        assert (await client.get("/dashboard/static/nothing.js")).status_code == 404


def test_no_third_party_code_is_in_the_repository() -> None:
    own = {p.name for p in (SRC / "web" / "dashboard" / "static").iterdir()}
    assert own == {"dashboard.css", "dashboard.js"}
    for path in SRC.rglob("*.js"):
        assert path.stat().st_size < 50_000, path
        assert "plotly.js v" not in path.read_text(encoding="utf-8"), path
    for template in (SRC / "web" / "dashboard" / "templates").iterdir():
        assert "http://" not in template.read_text() and "https://" not in template.read_text()


async def test_demo_prints_the_dashboard_and_its_account_signs_in(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = msgcube_env(db, NOW.isoformat(), port=8123)
    printed = run_msgcube("demo", "--no-serve", "--days", "10", "--users", "30", env=env)
    assert "Dashboard: http://127.0.0.1:8123/dashboard" in printed
    store = open_store(f"sqlite:///{db}")
    try:
        async with browser(store) as client:
            assert (await sign_in(client, DEMO_APPID, demo_secret())).status_code == 303
            page = (await client.get("/dashboard")).text
            assert 'id="key-numbers"' in page and 'id="empty-state"' not in page
    finally:
        store.dispose()
