"""``/openapi.json`` is a valid OpenAPI 3.1 document and describes what the API really does.

1. The document: OpenAPI 3.1 structure (``openapi-spec-validator`` when installed, and
   always the structural rules below) and every schema a valid JSON Schema 2020-12
   (OpenAPI 3.1's dialect).
2. It matches the routes: every documented operation is served, every WeChat-compatible
   route (``/datacube/*``, ``/cgi-bin/*``) is documented.
3. Real responses validate against the documented response of their operation and
   status: every success and every errcode provoked here, plus a deterministic
   hypothesis run of arbitrary requests (a light, in-process stand-in for schemathesis).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.domain.periods import local_today, period_start
from msgcube.ingest.synthetic import generate_into
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.web.app import create_app
from support.api import at, get_token, new_account, shanghai
from support.relay_calls import record_calls

from conftest import fresh_appid

try:
    import jsonschema
except ImportError:  # pragma: no cover - jsonschema is a test dependency
    if os.environ.get("CI"):
        raise
    pytest.skip("jsonschema is not installed", allow_module_level=True)

T0 = shanghai(2026, 6, 1, 10)  # yesterday (Sun 31 May) ends a week and a month
YESTERDAY = date(2026, 5, 31)
SECRET = "openapi-secret-0123456789abcdef0"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
Schema = dict[str, Any]


# --------------------------------------------------------------------------- the document


@pytest.fixture(scope="module")
def document(sqlite_store: Store) -> Schema:
    """The document as the app serves it (over HTTP, not the Python function)."""

    async def fetch() -> httpx.Response:
        app = create_app(Settings(), sqlite_store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/openapi.json")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc: Schema = response.json()
    return doc


def operations(doc: Schema) -> Iterator[tuple[str, str, Schema]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def schemas_in(doc: Schema) -> Iterator[tuple[str, Schema]]:
    """Every schema object in the document, with where it is."""
    for path, method, op in operations(doc):
        for p in op.get("parameters", []):
            if "schema" in p:
                yield f"{method} {path} parameter {p['name']}", p["schema"]
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            yield f"{method} {path} requestBody {media}", content["schema"]
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                yield f"{method} {path} {status} {media}", content["schema"]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        yield f"components/schemas/{name}", schema


def test_document_is_openapi_31(document: Schema) -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:
        validate = None
    if validate is not None:
        validate(document)
    # The structural rules of OpenAPI 3.1 this document relies on, checked either way.
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    top_level = {
        "openapi",
        "info",
        "jsonSchemaDialect",
        "servers",
        "paths",
        "webhooks",
        "components",
        "security",
        "tags",
        "externalDocs",
    }
    assert set(document) <= top_level
    assert isinstance(document["info"]["title"], str) and document["info"]["title"]
    assert isinstance(document["info"]["version"], str) and document["info"]["version"]
    op_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        assert set(item) <= METHODS | {"summary", "description", "servers", "parameters", "$ref"}
    for path, method, op in operations(document):
        op_ids.append(op["operationId"])
        assert op["responses"], (method, path)
        for status, response in op["responses"].items():
            assert status == "default" or re.fullmatch(r"[1-5][0-9X]{2}", status)
            assert isinstance(response["description"], str)  # required by OpenAPI
            for content in response.get("content", {}).values():
                assert set(content) <= {"schema", "example", "examples", "encoding"}
        for p in op.get("parameters", []):
            assert p["in"] in {"query", "header", "path", "cookie"}
            assert ("schema" in p) != ("content" in p)
            if p["in"] == "path":
                assert p["required"] is True
        if "requestBody" in op:
            assert op["requestBody"]["content"]
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"


def test_every_schema_is_json_schema_2020_12(document: Schema) -> None:
    found = 0
    for where, schema in schemas_in(document):
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise AssertionError(f"{where}: {exc.message}") from exc
        found += 1
    assert found >= 7 * 3 + 2 * 2


def test_document_matches_the_routes(document: Schema, sqlite_store: Store) -> None:
    app = create_app(Settings(), sqlite_store)
    served: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Route):
            served[route.path] = {m.lower() for m in route.methods or ()}
    for path, method, _ in operations(document):
        assert method in served.get(path, set()), f"{method} {path} is documented, not served"
    wechat = {p for p in served if p.startswith(("/datacube/", "/cgi-bin/"))}
    assert wechat <= set(document["paths"]), (
        f"undocumented: {sorted(wechat - set(document['paths']))}"
    )
    assert {ep.path for ep in ENDPOINTS} | {"/cgi-bin/token", "/cgi-bin/stable_token"} <= set(
        document["paths"]
    )


# --------------------------------------------------------------------------- real responses


def check_response(doc: Schema, path: str, method: str, response: httpx.Response) -> Any:
    """The response validates against what the document says for its operation and status."""
    op = doc["paths"][path][method.lower()]
    documented = op["responses"].get(str(response.status_code)) or op["responses"].get("default")
    assert documented is not None, f"{method} {path}: status {response.status_code} undocumented"
    content = documented.get("content")
    if not content:
        return None
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in content, f"{method} {path}: {media} undocumented"
    body = response.json()
    try:
        jsonschema.validate(body, content[media]["schema"], cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        raise AssertionError(
            f"{method} {path} {response.status_code}: {exc.message}\n{body}"
        ) from exc
    return body


class Env:
    def __init__(self, store: Store, appid: str, unverified_appid: str) -> None:
        self.store = store
        self.appid = appid
        self.unverified_appid = unverified_appid
        self.tokens: dict[str, str] = {}


@pytest.fixture
async def env(store: Store) -> Env:
    appid, unverified = fresh_appid("wxoas"), fresh_appid("wxoasu")
    account = new_account(store, appid, SECRET)
    new_account(store, unverified, SECRET, verified=False)
    generate_into(store, account, days=9, users=20, seed=5, end=YESTERDAY, today=local_today(T0))
    # Relayed pushes yesterday (one failed), so the interface endpoints have rows too.
    yesterday_10h = int(shanghai(2026, 5, 31, 10).timestamp())
    record_calls(store, account, [(yesterday_10h, 80, False), (yesterday_10h + 5, 4500, True)])
    e = Env(store, appid, unverified)
    async with at(store, T0 - timedelta(seconds=8000)) as api:
        e.tokens["expired"] = await get_token(api, appid, SECRET)
    async with at(store, T0 - timedelta(seconds=1000)) as api:
        e.tokens["superseded"] = await get_token(api, appid, SECRET)
    async with at(store, T0 - timedelta(seconds=900)) as api:
        e.tokens["valid"] = await get_token(api, appid, SECRET)
        e.tokens["unverified"] = await get_token(api, unverified, SECRET)
    e.tokens["unknown"] = "no-such-token"
    return e


@pytest.fixture
async def api(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    async with at(env.store, T0) as client:
        yield client


def _range(begin: object, end: object) -> bytes:
    return orjson.dumps({"begin_date": begin, "end_date": end})


async def test_datacube_responses_match_the_document(
    document: Schema, env: Env, api: httpx.AsyncClient
) -> None:
    seen: dict[str, set[int]] = {}
    for ep in ENDPOINTS:
        start = period_start(ep.label_period, YESTERDAY).isoformat()
        valid = _range(start, start)
        requests: list[tuple[str, dict[str, str], bytes, dict[str, Any]]] = [
            ("POST", {"access_token": env.tokens["valid"]}, valid, {}),
            ("GET", {"access_token": env.tokens["valid"]}, b"", {}),
            ("POST", {}, valid, {}),
            ("POST", {"access_token": env.tokens["unknown"]}, valid, {}),
            ("POST", {"access_token": env.tokens["superseded"]}, valid, {}),
            ("POST", {"access_token": env.tokens["expired"]}, valid, {}),
            ("POST", {"access_token": env.tokens["unverified"]}, valid, {}),
            ("POST", {"access_token": env.tokens["valid"]}, b"", {}),
            ("POST", {"access_token": env.tokens["valid"]}, b"[1]", {}),
            ("POST", {"access_token": env.tokens["valid"]}, _range("2026-5-1", start), {}),
            ("POST", {"access_token": env.tokens["valid"]}, _range(start, "2026-06-01"), {}),
            ("POST", {"access_token": env.tokens["valid"]}, valid, {"ready_at": "10:30"}),
            ("POST", {"access_token": env.tokens["valid"]}, valid + b" " * 65536, {}),
        ]
        codes = seen.setdefault(ep.name, set())
        for method, params, body, overrides in requests:
            async with at(env.store, T0, **overrides) as client:
                response = await client.request(method, ep.path, params=params, content=body)
            result = check_response(document, ep.path, "post", response)
            if response.status_code == 200:
                codes.add(result.get("errcode", 0))
                if "list" in result:
                    assert result["list"], f"{ep.name}: no rows to validate"
    expected = {0, 43002, 41001, 40001, 42001, 48001, 44002, 47001, 61500, 61501, 61503}
    assert all(codes == expected for codes in seen.values()), seen


async def test_token_responses_match_the_document(
    document: Schema, env: Env, api: httpx.AsyncClient
) -> None:
    good = {"grant_type": "client_credential", "appid": env.appid, "secret": SECRET}
    cases: list[tuple[str, dict[str, str]]] = [
        ("GET", good),
        ("POST", good),
        ("GET", {**good, "appid": ""}),
        ("GET", {k: v for k, v in good.items() if k != "secret"}),
        ("GET", {**good, "grant_type": "authorization_code"}),
        ("GET", {**good, "appid": "wxnobody"}),
        ("GET", {**good, "secret": "wrong"}),
    ]
    codes = set()
    for method, params in cases:
        response = await api.request(method, "/cgi-bin/token", params=params)
        codes.add(check_response(document, "/cgi-bin/token", "get", response).get("errcode", 0))
    async with at(env.store, T0, quota_token=1) as client:
        response = await client.get("/cgi-bin/token", params=good)
        codes.add(check_response(document, "/cgi-bin/token", "get", response)["errcode"])
    assert codes == {0, 43001, 41002, 41004, 40002, 40013, 40125, 45009}


async def test_stable_token_responses_match_the_document(
    document: Schema, env: Env, api: httpx.AsyncClient
) -> None:
    good = {"grant_type": "client_credential", "appid": env.appid, "secret": SECRET}
    bodies: list[tuple[str, bytes]] = [
        ("POST", orjson.dumps(good)),
        ("POST", orjson.dumps({**good, "force_refresh": True})),
        ("GET", b""),
        ("POST", b""),
        ("POST", b"{"),
        ("POST", orjson.dumps({**good, "force_refresh": "yes"})),
        ("POST", orjson.dumps({**good, "appid": None})),
        ("POST", orjson.dumps({**good, "secret": ""})),
        ("POST", orjson.dumps({**good, "grant_type": "x"})),
        ("POST", orjson.dumps({**good, "appid": "wxnobody"})),
        ("POST", orjson.dumps({**good, "secret": "wrong"})),
        ("POST", orjson.dumps(good) + b" " * 65536),
    ]
    codes = set()
    for method, body in bodies:
        response = await api.request(method, "/cgi-bin/stable_token", content=body)
        result = check_response(document, "/cgi-bin/stable_token", "post", response)
        codes.add(result.get("errcode", 0) if result is not None else response.status_code)
    # Over 64 KiB is 47001 in the envelope too.
    assert codes == {0, 43002, 44002, 47001, 41002, 41004, 40002, 40013, 40125}


# --------------------------------------------------------------------------- arbitrary requests

_dates = st.one_of(
    st.dates(date(2026, 4, 20), date(2026, 6, 2)).map(date.isoformat),
    st.dates(date(2014, 11, 1), date(2026, 7, 1)).map(date.isoformat),
    st.sampled_from(["2026-05-31", "2026-05-25", "2026-05-01", "2026-06-01", "2026-02-29"]),
    st.text(alphabet="0123456789-/T: ", max_size=12),
    st.integers(-5, 30_000_000),
    st.none(),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_bodies = st.one_of(
    st.fixed_dictionaries({"begin_date": _dates, "end_date": _dates}).map(orjson.dumps),
    st.fixed_dictionaries({"begin_date": _dates, "end_date": _dates}).map(orjson.dumps),
    st.fixed_dictionaries({"begin_date": _dates}).map(orjson.dumps),
    _json.map(orjson.dumps),
    st.binary(max_size=40),
)


@settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ep=st.sampled_from(ENDPOINTS),
    method=st.sampled_from(["POST"] * 8 + ["GET", "PUT"]),
    token=st.sampled_from(
        ["valid"] * 10 + ["expired", "superseded", "unverified", "unknown", None]
    ),
    body=_bodies,
    content_type=st.sampled_from([None, "application/json", "text/plain"]),
)
async def test_arbitrary_datacube_requests_match_the_document(
    document: Schema,
    env: Env,
    api: httpx.AsyncClient,
    ep: Any,
    method: str,
    token: str | None,
    body: bytes,
    content_type: str | None,
) -> None:
    params = {"access_token": env.tokens[token]} if token else {}
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.request(method, ep.path, params=params, content=body, headers=headers)
    result = check_response(document, ep.path, "post", response)
    assert result is not None
    assert ("list" in result) != ("errcode" in result)


def test_docs_errcode_tables_are_generated_from_the_route_table() -> None:
    from pathlib import Path

    from msgcube.web.api_table import errcode_markdown

    root = Path(__file__).resolve().parents[1]
    contract = (root / "docs" / "contract.md").read_text(encoding="utf-8")
    assert errcode_markdown() in contract


def test_the_document_declares_each_routes_errcodes_from_the_table(
    document: Schema,
) -> None:
    from msgcube.web.api_table import API

    for route in API:
        answer = document["paths"][route.path][route.method.lower()]["responses"]["200"]
        _success, error = answer["content"]["application/json"]["schema"]["oneOf"]
        assert error["properties"]["errcode"]["enum"] == list(route.answerable), route.path
        assert -1 in route.answerable
