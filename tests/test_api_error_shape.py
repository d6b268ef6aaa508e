"""Every errcode the API can return, for each endpoint family, and WeChat's envelope.

Families: the seven ``/datacube/*`` endpoints, ``GET /cgi-bin/token`` and ``POST
/cgi-bin/stable_token``. Each error must be HTTP 200, ``Content-Type: application/json;
encoding=utf-8``, exactly ``{"errcode", "errmsg"}`` with WeChat's text followed by
`` rid: xxxxxxxx-xxxxxxxx-xxxxxxxx``, and that rid must be in the ``msgcube.access`` log
line of the same request. Also: success bodies, 404s, the 64 KiB limit, Content-Type
indifference, and no token or secret in any log record.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
import pytest

from msgcube.domain.endpoints import ENDPOINTS, Endpoint
from msgcube.domain.periods import local_today, period_start
from msgcube.ingest.synthetic import generate_into
from msgcube.storage.accounts import set_account
from msgcube.storage.db import Store
from support.api import (
    JSON_TYPE,
    RID,
    assert_envelope,
    at,
    get_token,
    new_account,
    shanghai,
    stable_token,
)
from support.relay_calls import seed_calls

from conftest import fresh_appid

T0 = shanghai(2026, 6, 1, 10)  # a Monday; yesterday (Sun 31 May) ends a week and a month
YESTERDAY = date(2026, 5, 31)
SECRET = "shape-secret-0123456789abcdef0123"
MAX_BODY = 64 * 1024
WRONG_SECRET = "not-the-secret-7f3a9c"


@dataclass
class World:
    """One verified account with traffic, one unverified, and tokens in every state."""

    store: Store
    appid: str
    unverified_appid: str
    valid: str
    superseded: str
    expired: str
    unverified: str
    whitelisted: str
    rids: set[str] = field(default_factory=set)


@pytest.fixture
async def world(store: Store) -> World:
    appid, other = fresh_appid("wxshape"), fresh_appid("wxshapeu")
    fenced = fresh_appid("wxshapew")
    account = new_account(store, appid, SECRET)
    new_account(store, other, SECRET, verified=False)
    new_account(store, fenced, SECRET)
    generate_into(store, account, days=9, users=20, seed=3, end=YESTERDAY, today=local_today(T0))
    seed_calls(store, account, YESTERDAY - timedelta(days=8), YESTERDAY, seed=3)
    async with at(store, T0 - timedelta(seconds=8000)) as api:
        expired = await get_token(api, appid, SECRET)  # expires at T0 - 800 s
    async with at(store, T0 - timedelta(seconds=1000)) as api:
        superseded = await get_token(api, appid, SECRET)
    async with at(store, T0 - timedelta(seconds=900)) as api:
        valid = await get_token(api, appid, SECRET)  # superseded's overlap ends at T0 - 600 s
        unverified = await get_token(api, other, SECRET)
        whitelisted = await get_token(api, fenced, SECRET)
    # Fenced after its token was issued (the token API checks the whitelist too); the
    # test client calls from 127.0.0.1, outside it.
    with store.write() as conn:
        set_account(conn, fenced, ip_whitelist="10.1.2.3,192.168.0.0/16")
    return World(store, appid, other, valid, superseded, expired, unverified, whitelisted)


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with at(world.store, T0) as client:
        yield client


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "msgcube.access"]


async def expect_error(
    world: World,
    caplog: pytest.LogCaptureFixture,
    send: Callable[[], Any],
    code: int,
    path: str,
    **fields: str,
) -> None:
    """Send one request; check its envelope and that its log line carries its rid."""
    caplog.clear()
    response: httpx.Response = await send()
    rid = assert_envelope(response, code, **fields)
    lines = access_lines(caplog)
    assert len(lines) == 1, lines
    assert f"rid={rid}" in lines[0]
    assert f" {path} 200 errcode={code} " in lines[0]
    assert rid not in world.rids, "rids must differ per request"
    world.rids.add(rid)


def _dates(ep: Endpoint) -> tuple[str, str]:
    """A valid one-period range whose period is yesterday's (rows for every endpoint)."""
    start = period_start(ep.label_period, YESTERDAY).isoformat()
    return start, start


def _body(begin: object, end: object) -> bytes:
    return orjson.dumps({"begin_date": begin, "end_date": end})


# --------------------------------------------------------------------------- datacube

# (case id, errcode, method, token attribute or literal, body, settings)
DatacubeCase = tuple[str, int, str, str | None, Callable[[Endpoint], bytes], dict[str, Any]]

_VALID: Callable[[Endpoint], bytes] = lambda ep: _body(*_dates(ep))  # noqa: E731
DATACUBE_CASES: list[DatacubeCase] = [
    ("get", 43002, "GET", "valid", _VALID, {}),
    ("put", 43002, "PUT", "valid", _VALID, {}),
    ("no-token", 41001, "POST", None, _VALID, {}),
    ("empty-token", 41001, "POST", "", _VALID, {}),
    ("unknown-token", 40001, "POST", "lit:notatoken0123456789", _VALID, {}),
    ("malformed-token", 40001, "POST", "lit:" + "x" * 600, _VALID, {}),
    ("non-ascii-token", 40001, "POST", "lit:токен\u0000", _VALID, {}),
    ("superseded-token", 40001, "POST", "superseded", _VALID, {}),
    ("expired-token", 42001, "POST", "expired", _VALID, {}),
    ("unverified-account", 48001, "POST", "unverified", _VALID, {}),
    ("third-party-only", 48001, "POST", "valid", _VALID, {"access_policy": "third_party_only"}),
    ("empty-body", 44002, "POST", "valid", lambda ep: b"", {}),
    ("blank-body", 44002, "POST", "valid", lambda ep: b" \r\n\t", {}),
    ("not-json", 47001, "POST", "valid", lambda ep: b"begin_date=2026-05-31", {}),
    ("json-array", 47001, "POST", "valid", lambda ep: b'["2026-05-31", "2026-05-31"]', {}),
    ("not-utf8", 47001, "POST", "valid", lambda ep: b'{"begin_date": "\xff"}', {}),
    ("json-null", 47001, "POST", "valid", lambda ep: b"null", {}),
    ("missing-end", 47001, "POST", "valid", lambda ep: b'{"begin_date": "2026-05-31"}', {}),
    ("number-date", 47001, "POST", "valid", lambda ep: _body(20260531, "2026-05-31"), {}),
    ("null-date", 47001, "POST", "valid", lambda ep: _body("2026-05-31", None), {}),
    ("slash-date", 61500, "POST", "valid", lambda ep: _body("2026/05/31", "2026/05/31"), {}),
    ("short-date", 61500, "POST", "valid", lambda ep: _body("2026-5-31", "2026-05-31"), {}),
    ("not-a-day", 61500, "POST", "valid", lambda ep: _body("2026-02-29", "2026-02-29"), {}),
    ("datetime", 61500, "POST", "valid", lambda ep: _body("2026-05-31T00:00", "2026-05-31"), {}),
    ("begin-after-end", 61501, "POST", "valid", lambda ep: _body("2026-05-31", "2026-05-30"), {}),
    ("end-today", 61501, "POST", "valid", lambda ep: _body("2026-06-01", "2026-06-01"), {}),
    ("end-future", 61501, "POST", "valid", lambda ep: _body("2026-05-31", "2027-01-01"), {}),
    (
        "span",
        61501,
        "POST",
        "valid",
        lambda ep: _body(str(YESTERDAY - timedelta(days=ep.span_classic)), str(YESTERDAY)),
        {},
    ),
    (
        "span-current",
        61501,
        "POST",
        "valid",
        lambda ep: _body(str(YESTERDAY - timedelta(days=ep.span_current)), str(YESTERDAY)),
        {"span_profile": "current"},
    ),
    ("ready-at", 61503, "POST", "valid", _VALID, {"ready_at": "10:30"}),
]


def _token(world: World, spec: str | None) -> dict[str, str]:
    if spec is None:
        return {}
    if spec.startswith("lit:"):
        return {"access_token": spec[4:]}
    return {"access_token": getattr(world, spec) if spec else ""}


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_datacube_errors(
    ep: Endpoint, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    for case, code, method, token, body, settings in DATACUBE_CASES:
        async with at(world.store, T0, **settings) as api:

            async def send(
                method: str = method,
                token: str | None = token,
                body: Callable[[Endpoint], bytes] = body,
            ) -> httpx.Response:
                return await api.request(
                    method, ep.path, params=_token(world, token), content=body(ep)
                )

            try:
                await expect_error(world, caplog, send, code, ep.path)
            except AssertionError as exc:
                raise AssertionError(f"{ep.name} case {case!r}: {exc}") from exc


# Each request fails two of the contract's checks; the earlier one must answer.
ORDER_CASES: list[tuple[str, int, str, str | None, bytes, dict[str, Any]]] = [
    ("get-without-token", 43002, "GET", None, b"", {}),
    ("no-token-empty-body", 41001, "POST", None, b"", {}),
    ("unknown-token-bad-json", 40001, "POST", "lit:nope", b"{", {}),
    ("superseded-bad-date", 40001, "POST", "superseded", _body("x", "y"), {}),
    ("expired-empty-body", 42001, "POST", "expired", b"", {}),
    ("unverified-bad-date", 48001, "POST", "unverified", _body("x", "y"), {}),
    ("quota-blank-body", 45009, "POST", "valid", b"   ", {"quota_datacube": 0}),
    ("blank-body", 44002, "POST", "valid", b"   ", {}),
    ("missing-field-bad-date", 47001, "POST", "valid", b'{"begin_date": "x"}', {}),
    ("bad-end-date-reversed", 61500, "POST", "valid", _body("2026-05-31", "2026-05-3"), {}),
    ("bad-begin-future-end", 61500, "POST", "valid", _body("2026-13-01", "2027-01-01"), {}),
    (
        "range-and-not-ready",
        61501,
        "POST",
        "valid",
        _body("2026-05-31", "2026-06-01"),
        {"ready_at": "10:30"},
    ),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=lambda c: c[0])
async def test_datacube_checks_run_in_spec_order(
    case: tuple[str, int, str, str | None, bytes, dict[str, Any]],
    world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    _, code, method, token, body, settings = case
    path = "/datacube/getupstreammsg"
    async with at(world.store, T0, **settings) as api:

        async def send() -> httpx.Response:
            return await api.request(method, path, params=_token(world, token), content=body)

        await expect_error(world, caplog, send, code, path)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_datacube_success_body_is_only_a_list(
    ep: Endpoint, world: World, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    for _ in range(2):  # the second answer comes from the per-process cache
        caplog.clear()
        response = await api.post(
            ep.path, params={"access_token": world.valid}, content=_body(*_dates(ep))
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == JSON_TYPE
        body = response.json()
        assert list(body) == ["list"]
        assert body["list"], f"{ep.name}: expected rows for {_dates(ep)}"
        assert all(tuple(row) == ep.fields for row in body["list"])
        [line] = access_lines(caplog)
        assert f" {ep.path} 200 errcode=0 " in line
        assert RID.search(line)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_datacube_ip_whitelist_40164(
    ep: Endpoint, world: World, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")

    async def send() -> httpx.Response:
        return await api.post(
            ep.path, params={"access_token": world.whitelisted}, content=_body(*_dates(ep))
        )

    await expect_error(world, caplog, send, 40164, ep.path, ip="127.0.0.1")


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_datacube_daily_quota_45009(
    ep: Endpoint, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    async with at(world.store, T0, quota_datacube=2) as api:

        async def send() -> httpx.Response:
            return await api.post(
                ep.path, params={"access_token": world.valid}, content=_body(*_dates(ep))
            )

        for _ in range(2):
            assert list((await send()).json()) == ["list"]
        await expect_error(world, caplog, send, 45009, ep.path)
        await expect_error(world, caplog, send, 45009, ep.path)


# --------------------------------------------------------------------------- credentials

TOKEN_CASES: list[tuple[str, int, str, dict[str, str]]] = [
    ("post", 43001, "POST", {"grant_type": "client_credential", "appid": "A", "secret": SECRET}),
    ("no-appid", 41002, "GET", {"grant_type": "client_credential", "secret": SECRET}),
    (
        "empty-appid",
        41002,
        "GET",
        {"grant_type": "client_credential", "appid": "", "secret": SECRET},
    ),
    ("no-secret", 41004, "GET", {"grant_type": "client_credential", "appid": "A"}),
    ("no-grant-type", 40002, "GET", {"appid": "A", "secret": SECRET}),
    ("bad-grant-type", 40002, "GET", {"grant_type": "password", "appid": "A", "secret": SECRET}),
    (
        "unknown-appid",
        40013,
        "GET",
        {"grant_type": "client_credential", "appid": "wxnobody", "secret": SECRET},
    ),
    (
        "bad-secret",
        40125,
        "GET",
        {"grant_type": "client_credential", "appid": "A", "secret": WRONG_SECRET},
    ),
]


async def test_token_errors(
    world: World, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    for case, code, method, params in TOKEN_CASES:
        params = {k: world.appid if v == "A" else v for k, v in params.items()}

        async def send(method: str = method, params: dict[str, str] = params) -> httpx.Response:
            return await api.request(method, "/cgi-bin/token", params=params)

        try:
            await expect_error(world, caplog, send, code, "/cgi-bin/token")
        except AssertionError as exc:
            raise AssertionError(f"token case {case!r}: {exc}") from exc


async def test_token_quota_45009(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    appid = fresh_appid("wxquota")
    new_account(world.store, appid, SECRET)
    async with at(world.store, T0, quota_token=4) as api:
        for _ in range(4):
            await get_token(api, appid, SECRET)

        async def send() -> httpx.Response:
            return await api.get(
                "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": appid, "secret": SECRET},
            )

        await expect_error(world, caplog, send, 45009, "/cgi-bin/token")


STABLE_CASES: list[tuple[str, int, str, bytes | None]] = [
    ("get", 43002, "GET", None),
    ("empty-body", 44002, "POST", b""),
    ("not-json", 47001, "POST", b"grant_type=client_credential"),
    ("json-array", 47001, "POST", b"[]"),
    (
        "force-not-bool",
        47001,
        "POST",
        orjson.dumps(
            {
                "grant_type": "client_credential",
                "appid": "A",
                "secret": SECRET,
                "force_refresh": "yes",
            }
        ),
    ),
    (
        "no-appid",
        41002,
        "POST",
        orjson.dumps({"grant_type": "client_credential", "secret": SECRET}),
    ),
    (
        "appid-not-string",
        41002,
        "POST",
        orjson.dumps({"grant_type": "client_credential", "appid": 42, "secret": SECRET}),
    ),
    ("no-secret", 41004, "POST", orjson.dumps({"grant_type": "client_credential", "appid": "A"})),
    (
        "bad-grant-type",
        40002,
        "POST",
        orjson.dumps({"grant_type": "x", "appid": "A", "secret": SECRET}),
    ),
    (
        "unknown-appid",
        40013,
        "POST",
        orjson.dumps({"grant_type": "client_credential", "appid": "wxnobody", "secret": SECRET}),
    ),
    (
        "bad-secret",
        40125,
        "POST",
        orjson.dumps({"grant_type": "client_credential", "appid": "A", "secret": WRONG_SECRET}),
    ),
]


async def test_stable_token_errors(
    world: World, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msgcube.access")
    for case, code, method, body in STABLE_CASES:
        content = body.replace(b'"A"', orjson.dumps(world.appid)) if body is not None else None

        async def send(method: str = method, content: bytes | None = content) -> httpx.Response:
            return await api.request(method, "/cgi-bin/stable_token", content=content)

        try:
            await expect_error(world, caplog, send, code, "/cgi-bin/stable_token")
        except AssertionError as exc:
            raise AssertionError(f"stable_token case {case!r}: {exc}") from exc


async def test_token_success_bodies(world: World, api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": world.appid, "secret": SECRET},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_TYPE
    assert set(response.json()) == {"access_token", "expires_in"}
    stable = await stable_token(api, world.appid, SECRET)
    assert set(stable) == {"access_token", "expires_in"}
    assert stable["expires_in"] == 7200


# --------------------------------------------------------------------------- HTTP level


@pytest.mark.parametrize(
    "path",
    [
        "/cgi-bin/datacube/getupstreammsg",
        "/cgi-bin/datacube/getupstreammsgdist",
        "/datacube/getupstreammsgyear",
        "/datacube/getusersummary",
        "/datacube",
        "/datacube/",
        "/DATACUBE/getupstreammsg",
        "/cgi-bin/tokens",
        "/api/datacube/getupstreammsg",
        "/datacube/getupstreammsg/",  # no slash redirect: it would echo the token back
        "/cgi-bin/token/",
    ],
)
async def test_unknown_paths_are_404(path: str, world: World, api: httpx.AsyncClient) -> None:
    for method in ("GET", "POST"):
        response = await api.request(
            method,
            path,
            params={"access_token": world.valid},
            content=_body("2026-05-31", "2026-05-31"),
        )
        assert response.status_code == 404, (method, path)


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_64k_is_47001_in_the_envelope(
    streamed: bool, world: World, api: httpx.AsyncClient
) -> None:
    """Over the limit is refused without reading it all, in WeChat's envelope (not a bare
    413): 47001 with a rid, like any other bad body."""

    def payload(size: int) -> bytes:
        body = _body("2026-05-31", "2026-05-31")
        return body + b" " * (size - len(body))

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    def content(data: bytes) -> Any:
        return chunks(data) if streamed else data

    path = "/datacube/getupstreammsg"
    at_limit = await api.post(
        path, params={"access_token": world.valid}, content=content(payload(MAX_BODY))
    )
    assert at_limit.status_code == 200
    assert "list" in at_limit.json()
    over = await api.post(
        path, params={"access_token": world.valid}, content=content(payload(MAX_BODY + 1))
    )
    assert_envelope(over, 47001)
    stable = orjson.dumps(
        {"grant_type": "client_credential", "appid": world.appid, "secret": SECRET}
    )
    big = stable + b" " * (MAX_BODY + 1 - len(stable))
    assert_envelope(await api.post("/cgi-bin/stable_token", content=content(big)), 47001)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "multipart/form-data",
        "text/xml",
    ],
)
async def test_json_body_whatever_the_content_type(
    content_type: str | None, world: World, api: httpx.AsyncClient
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.post(
        "/datacube/getupstreammsg",
        params={"access_token": world.valid},
        content=_body("2026-05-25", "2026-05-31"),
        headers=headers,
    )
    if content_type is None:
        assert "content-type" not in response.request.headers
    body = response.json()
    assert list(body) == ["list"]
    assert {r["ref_date"] for r in body["list"]} == {f"2026-05-{d}" for d in range(25, 32)}
    stable = await api.post(
        "/cgi-bin/stable_token",
        headers=headers,
        content=orjson.dumps(
            {"grant_type": "client_credential", "appid": world.appid, "secret": SECRET}
        ),
    )
    assert set(stable.json()) == {"access_token", "expires_in"}


async def test_no_token_or_secret_in_any_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = {world.valid, world.superseded, world.expired, world.unverified}
    async with at(world.store, T0) as api:
        fresh = await get_token(api, world.appid, SECRET)
        stable = (await stable_token(api, world.appid, SECRET))["access_token"]
        tokens |= {fresh, stable}
        for token in [*tokens, "unknown-token-0123456789abcdef"]:
            for name in ("getupstreammsg", "getupstreammsgdistmonth"):
                await api.post(
                    f"/datacube/{name}",
                    params={"access_token": token},
                    content=_body("2026-05-01", "2026-05-01"),
                )
                await api.post(f"/datacube/{name}", params={"access_token": token}, content=b"{")
        wrong = {"grant_type": "client_credential", "appid": world.appid, "secret": WRONG_SECRET}
        await api.get("/cgi-bin/token", params=wrong)
    assert len([r for r in caplog.records if r.name == "msgcube.access"]) >= 26
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert {r.name for r in server_side} >= {"msgcube.access"}
    text = "\n".join(  # the test's own HTTP client logs its URLs; the server must not
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in server_side
    )
    for secret in [*tokens, "unknown-token-0123456789abcdef", SECRET, WRONG_SECRET]:
        assert secret not in text


def test_world_times_are_consistent() -> None:
    """Guards the fixture's arithmetic (yesterday ends a week and a month)."""
    assert local_today(T0) - timedelta(days=1) == YESTERDAY
    assert YESTERDAY.weekday() == 6 and (YESTERDAY + timedelta(days=1)).day == 1


# --------------------------------------------------------------------------- the table

# Errcodes the route table declares that are proven in another file, and where.
PROVEN_ELSEWHERE: dict[int, str] = {
    -1: "test_web_boundary.py (a broken time zone), test_pg_restart.py (database down)",
    40164: "test_policy.py, test_proxy_headers.py (the token API's whitelist)",
    61007: "test_policy.py (an authorizer without permission set 1)",
    61024: "test_platform_tokens.py (a component appid on the token APIs)",
}


def test_the_cases_cover_every_errcode_the_route_table_declares() -> None:
    """The cases above are held against ``web/api_table``: a code a route declares must
    be produced by a case of this file or proven in the file ``PROVEN_ELSEWHERE`` names
    (and a case must not produce a code its route does not declare)."""
    from msgcube.web.api_table import BY_PATH

    datacube = {c[1] for c in DATACUBE_CASES} | {c[1] for c in ORDER_CASES} | {40164, 45009}
    token = {c[1] for c in TOKEN_CASES} | {45009}
    stable = {c[1] for c in STABLE_CASES} | {47001}  # 47001 also over 64 KiB
    produced = {ep.path: datacube for ep in ENDPOINTS}
    produced |= {"/cgi-bin/token": token, "/cgi-bin/stable_token": stable}
    for path, codes in produced.items():
        declared = set(BY_PATH[path].answerable)
        assert codes <= declared, (path, codes - declared)
        assert declared - codes <= PROVEN_ELSEWHERE.keys(), (path, declared - codes)
