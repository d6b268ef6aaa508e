"""The admin API under ``/admin/``: what the CLI does to accounts, platforms and
authorizations, over HTTP for automation.

Authentication is ``Authorization: Bearer <admin_token>`` (the setting), compared in
constant time. With no ``admin_token`` configured the whole API does not exist (404),
so a deployment that never set one exposes nothing. Unlike the WeChat-compatible
routes this is msgcube's own API and speaks plain HTTP: 2xx with a JSON body on success,
``{"error": "..."}`` with 400 / 401 / 404 / 409 otherwise.

Routes (bodies are JSON objects):

* ``GET /admin/accounts`` — list accounts;
* ``POST /admin/accounts`` — register one: ``appid``; optional ``secret`` (generated and
  returned when omitted), ``original_id``, ``token``, ``aes_key``, ``tz``, ``verified``,
  ``ip_whitelist``, ``daily_quota``, ``upstream`` (the account's own server, to relay
  pushes to; ``""`` or ``null`` clears);
* ``PATCH /admin/accounts/{appid}`` — change any of those but ``appid``
  (``daily_quota: null`` goes back to the ``quota_datacube`` setting);
* ``GET /admin/platforms`` — list platforms;
* ``POST /admin/platforms`` — register one: ``component_appid``; optional
  ``component_appsecret`` (generated when omitted), ``ticket_url``, ``token``, ``aes_key``,
  ``upstream_url``, ``account_limit``;
* ``PATCH /admin/platforms/{component_appid}`` — change any of those (a replaced
  ``aes_key`` stays as the previous one); listings never show the Token or keys;
* ``GET /admin/platforms/{component_appid}/accounts`` — the accounts it feeds;
* ``DELETE /admin/platforms/{component_appid}/accounts/{appid}`` — delete an account its
  message URL created, with all its data;
* ``GET /admin/platforms/{component_appid}/ticket`` — the current component_verify_ticket;
* ``GET /admin/authorizations`` — list authorizations;
* ``POST /admin/authorizations`` — ``component_appid``, ``authorizer_appid``, ``func_info``
  (permission-set ids) → ``authorizer_refresh_token``;
* ``DELETE /admin/authorizations/{component_appid}/{authorizer_appid}`` — revoke.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from msgcube.auth.accounts import AccountChanges, create_account, update_account
from msgcube.auth.platforms import (
    authorize_platform,
    change_platform,
    current_ticket,
    describe_platform,
    describe_platform_account,
    func_info,
    parse_func_ids,
    register_platform,
    remove_platform_account,
    require_platform,
    revoke_authorization,
)
from msgcube.domain.identifiers import appid_problem, is_appid
from msgcube.errors import AccountError, AccountExists, AdminError, NotFound
from msgcube.relay import shown_upstream
from msgcube.storage.accounts import Account, get_account, list_accounts
from msgcube.storage.platforms import list_authorizations, list_platforms, platform_accounts
from msgcube.storage.usage import daily_limit_override
from msgcube.web.context import AppContext
from msgcube.web.request_checks import read_body

AdminHandler = Callable[[Request, AppContext], Awaitable[Response]]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _authorized(request: Request, admin_token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Comparing digests keeps the comparison constant-time whatever the lengths.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        _digest(given.strip()), _digest(admin_token)
    )


def admin_endpoint(handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
    """404 when disabled, 401 without the bearer token; errors raised by ``handler``
    are answered as ``{"error"}`` bodies by the app's boundary (``web/boundary.py``)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        ctx: AppContext = request.app.state.ctx
        if not ctx.settings.admin_token:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        if not _authorized(request, ctx.settings.admin_token):
            return Response(
                orjson.dumps({"error": "admin token required"}),
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        for name, value in request.path_params.items():
            if not is_appid(value):  # no such account; PostgreSQL could not even ask
                raise NotFound(f"unknown {name} {value[:64]!r}")
        return await handler(request, ctx)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise AdminError(400, "the body must be JSON") from None
    if not isinstance(data, dict):
        raise AdminError(400, "the body must be a JSON object")
    return data


def _str(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise AdminError(400, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise AdminError(400, f"{name} must be a string")
    problem = _ID_RULES[name](value) if name in _ID_RULES else None
    if problem:
        raise AdminError(400, problem)
    return value


_ID_RULES: dict[str, Callable[[str], str | None]] = {
    "appid": appid_problem,
    "authorizer_appid": appid_problem,
    "component_appid": functools.partial(appid_problem, name="component_appid"),
}
"""Identifier fields of platform requests; account fields are checked by ``auth/accounts``."""


def _account_json(conn: Connection, account: Account) -> dict[str, Any]:
    return {
        "appid": account.appid,
        "original_id": account.original_id,
        "tz": account.tz,
        "verified": account.verified,
        "follower_base": account.follower_base,
        "ip_whitelist": list(account.ip_whitelist),
        "stats_since": account.stats_since.isoformat() if account.stats_since else None,
        "daily_quota": daily_limit_override(conn, account.id),
        "upstream": shown_upstream(account.upstream_url),
    }


def _account_changes(data: dict[str, Any]) -> AccountChanges:
    """The body's fields as ``AccountChanges`` (types here; values in ``update_account``)."""
    names = {"secret": "secret", "original_id": "original_id", "token": "callback_token"}
    names |= {"aes_key": "aes_key", "tz": "tz"}
    text = {column: _str(data, name) for name, column in names.items()}
    verified = data.get("verified")
    if verified is not None and not isinstance(verified, bool):
        raise AdminError(400, "verified must be true or false")
    whitelist = data.get("ip_whitelist")
    if whitelist is not None and (
        not isinstance(whitelist, str | list)
        or (isinstance(whitelist, list) and not all(isinstance(x, str) for x in whitelist))
    ):
        raise AdminError(400, "ip_whitelist must be a string or a list of strings")
    quota: int | Literal["default"] | None = None
    if "daily_quota" in data:
        limit = data["daily_quota"]
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise AdminError(400, "daily_quota must be a non-negative integer or null")
        quota = "default" if limit is None else limit
    upstream: str | None = None
    if "upstream" in data:  # "" or null: no relay
        upstream = data["upstream"] or ""
        if not isinstance(upstream, str):
            raise AdminError(400, 'upstream must be a URL string, "" or null')
    return AccountChanges(
        **text, verified=verified, ip_whitelist=whitelist, daily_quota=quota, upstream_url=upstream
    )


async def accounts_list(request: Request, ctx: AppContext) -> Response:
    with ctx.store.read() as conn:
        return _json({"accounts": [_account_json(conn, a) for a in list_accounts(conn)]})


async def accounts_create(request: Request, ctx: AppContext) -> Response:
    data = await _body(request)
    appid = _str(data, "appid", required=True)
    assert appid is not None
    secret = _str(data, "secret") or secrets.token_hex(16)
    changes = _account_changes({k: v for k, v in data.items() if k not in ("secret", "tz")})
    try:
        with ctx.store.write() as conn:
            tz = _str(data, "tz") or ctx.settings.tz
            account = create_account(conn, appid, secret, tz=tz, changes=changes, now=ctx.now())
            body = _account_json(conn, account)
    except AccountExists as exc:
        raise AdminError(409, str(exc)) from None
    except AccountError as exc:
        raise AdminError(400, str(exc)) from None
    return _json({**body, "secret": secret}, 201)


async def accounts_update(request: Request, ctx: AppContext) -> Response:
    appid = request.path_params["appid"]
    changes = _account_changes(await _body(request))
    try:
        with ctx.store.write() as conn:
            account = update_account(conn, appid, changes, now=ctx.now())
            return _json(_account_json(conn, account))
    except AccountError as exc:
        raise AdminError(400, str(exc)) from None


async def platforms_list(request: Request, ctx: AppContext) -> Response:
    with ctx.store.read() as conn:
        rows = [describe_platform(p) for p in list_platforms(conn)]
    return _json({"platforms": rows})


def _platform_values(data: dict[str, Any]) -> dict[str, Any]:
    """The settable platform fields present in an admin body (JSON ``token`` = Token)."""
    values: dict[str, Any] = {}
    for field, column in (
        ("ticket_url", "ticket_url"),
        ("token", "push_token"),
        ("aes_key", "aes_key"),
        ("upstream_url", "upstream_url"),
    ):
        if field in data:
            values[column] = _str(data, field) or ""
    if "account_limit" in data:
        limit = data["account_limit"]
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise AdminError(400, "account_limit must be an integer")
        values["account_limit"] = limit
    return values


async def platforms_create(request: Request, ctx: AppContext) -> Response:
    data = await _body(request)
    appid = _str(data, "component_appid", required=True)
    assert appid is not None
    secret = _str(data, "component_appsecret") or secrets.token_hex(16)
    values = _platform_values(data)
    if not values.get("aes_key"):
        values.pop("aes_key", None)
    with ctx.store.write() as conn:
        platform = register_platform(
            conn, component_appid=appid, secret=secret, now=ctx.now_ts(), **values
        )
    return _json({**describe_platform(platform), "component_appsecret": secret}, 201)


async def platforms_update(request: Request, ctx: AppContext) -> Response:
    values = _platform_values(await _body(request))
    with ctx.store.write() as conn:
        platform = require_platform(conn, request.path_params["component_appid"])
        platform = change_platform(conn, platform, **values)
    return _json(describe_platform(platform))


async def platform_accounts_list(request: Request, ctx: AppContext) -> Response:
    with ctx.store.read() as conn:
        platform = require_platform(conn, request.path_params["component_appid"])
        rows = [describe_platform_account(r) for r in platform_accounts(conn, platform.id)]
    return _json({"accounts": rows})


async def platform_account_remove(request: Request, ctx: AppContext) -> Response:
    appid = request.path_params["appid"]
    with ctx.store.write() as conn:
        platform = require_platform(conn, request.path_params["component_appid"])
        remove_platform_account(conn, platform, appid)
    return _json({"component_appid": platform.component_appid, "appid": appid, "removed": True})


async def platform_ticket(request: Request, ctx: AppContext) -> Response:
    with ctx.store.read() as conn:
        platform = require_platform(conn, request.path_params["component_appid"])
    now = ctx.now_ts()
    return _json(
        {"component_appid": platform.component_appid, **current_ticket(platform, now).body(now)}
    )


async def authorizations_list(request: Request, ctx: AppContext) -> Response:
    with ctx.store.read() as conn:
        rows = [
            {
                "component_appid": r["component_appid"],
                "authorizer_appid": r["appid"],
                "func_info": [int(f) for f in r["func_ids"].split(",") if f],
                "authorized_at": r["authorized_at"],
                "revoked_at": r["revoked_at"],
            }
            for r in list_authorizations(conn)
        ]
    return _json({"authorizations": rows})


async def authorizations_create(request: Request, ctx: AppContext) -> Response:
    data = await _body(request)
    component_appid = _str(data, "component_appid", required=True)
    appid = _str(data, "authorizer_appid") or _str(data, "appid")
    if component_appid is None or appid is None:
        raise AdminError(400, "component_appid and authorizer_appid are required")
    funcs = data.get("func_info", data.get("func"))
    if not isinstance(funcs, str | list):
        raise AdminError(400, "func_info must be a list of permission-set ids")
    func_ids = parse_func_ids(funcs)
    with ctx.store.write() as conn:
        platform = require_platform(conn, component_appid)
        account = get_account(conn, appid)
        if account is None:
            raise NotFound(f"unknown appid {appid}")
        auth, refresh = authorize_platform(conn, platform, account, func_ids, ctx.now_ts())
    return _json(
        {
            "component_appid": component_appid,
            "authorizer_appid": appid,
            "func_info": func_info(auth.func_ids),
            "authorizer_refresh_token": refresh,
        },
        201,
    )


async def authorizations_revoke(request: Request, ctx: AppContext) -> Response:
    component_appid = request.path_params["component_appid"]
    appid = request.path_params["appid"]
    with ctx.store.write() as conn:
        platform = require_platform(conn, component_appid)
        account = get_account(conn, appid)
        if account is None:
            raise NotFound(f"unknown appid {appid}")
        ended = revoke_authorization(conn, platform, account, ctx.now_ts())
    return _json(
        {
            "component_appid": component_appid,
            "authorizer_appid": appid,
            "revoked": True,
            "tokens_ended": ended,
        }
    )


def _route(path: str, methods: dict[str, AdminHandler]) -> Route:
    wrapped = {m: admin_endpoint(h) for m, h in methods.items()}

    async def dispatch(request: Request) -> Response:
        handler = wrapped.get(request.method)
        if handler is None:
            if not request.app.state.ctx.settings.admin_token:
                return Response(b"Not Found", status_code=404, media_type="text/plain")
            return _json({"error": f"{request.method} not allowed"}, 405)
        return await handler(request)

    return Route(path, dispatch, methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"])


routes = [
    _route("/admin/accounts", {"GET": accounts_list, "POST": accounts_create}),
    _route("/admin/accounts/{appid}", {"PATCH": accounts_update}),
    _route("/admin/platforms", {"GET": platforms_list, "POST": platforms_create}),
    _route("/admin/platforms/{component_appid}", {"PATCH": platforms_update}),
    _route("/admin/platforms/{component_appid}/ticket", {"GET": platform_ticket}),
    _route("/admin/platforms/{component_appid}/accounts", {"GET": platform_accounts_list}),
    _route(
        "/admin/platforms/{component_appid}/accounts/{appid}", {"DELETE": platform_account_remove}
    ),
    _route("/admin/authorizations", {"GET": authorizations_list, "POST": authorizations_create}),
    _route("/admin/authorizations/{component_appid}/{appid}", {"DELETE": authorizations_revoke}),
]
