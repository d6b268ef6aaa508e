"""What every WeChat-style handler checks first: the body limit, the JSON body, the caller.

Handlers raise (``ApiError``, ``BodyTooLarge``, ...) and ``web/boundary.py`` answers;
``require_token`` is the token preamble every token-taking API runs first (method,
token, validity, kind, then the account and its IP whitelist).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from msgcube.auth.policy import (
    OWN_KINDS,
    acting_account,
    check_whitelist,
    client_address,
    trusted_peer,
)
from msgcube.auth.tokens import check_token_checks
from msgcube.errors import ApiError, BodyTooLarge
from msgcube.ingest.gate import parse_query
from msgcube.storage.accounts import Account
from msgcube.storage.tokens import TokenChecks, TokenRow
from msgcube.web.context import AppContext

MAX_BODY = 64 * 1024
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Routed on every WeChat path so a wrong method gets WeChat's errcode, not HTTP 405."""

Handler = Callable[[Request, AppContext], Awaitable[Response]]

ACCOUNT_KINDS = frozenset({*OWN_KINDS, "authorizer"})
"""Tokens that act for an account: its own, and a platform's authorizer tokens."""
COMPONENT_KINDS = frozenset({"component"})
ANY_KIND = ACCOUNT_KINDS | COMPONENT_KINDS


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint calling ``handler(request, ctx)`` (errors: web/boundary.py)."""

    async def call(request: Request) -> Response:
        return await handler(request, request.app.state.ctx)

    call.__name__ = handler.__name__
    return call


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request) -> dict[str, Any]:
    """The JSON object body whatever the Content-Type (wechatpy sends none): 44002, 47001."""
    body = await read_body(request)
    if not body.strip():
        raise ApiError(44002)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(47001, f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(47001, "body is not a JSON object")
    return data


def client_ip(request: Request, ctx: AppContext) -> str | None:
    """The caller's address, through ``trusted_proxies`` only (see ``auth/policy``).

    The server never rewrites the peer address itself (``web/server.py`` turns uvicorn's
    proxy headers off), so this is the one place a forwarded address can be believed.
    Every ``X-Forwarded-For`` line counts, in order, as one list (RFC 9110 §5.3): a proxy
    such as HAProxy adds its hop as a line of its own after the client's, so reading the
    first line alone would believe what the client wrote.
    """
    peer = request.client.host if request.client else None
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    return client_address(peer, forwarded, ctx.settings.trusted_proxies)


def via_https(request: Request, ctx: AppContext) -> bool:
    """Whether the browser reached us over https: the request's own scheme, or an
    ``X-Forwarded-Proto`` naming https from a trusted proxy that terminated TLS (a
    client's word only makes its own cookie stricter, so any https value counts)."""
    if request.url.scheme == "https":
        return True
    if not trusted_peer(
        request.client.host if request.client else None, ctx.settings.trusted_proxies
    ):
        return False
    protos = ",".join(request.headers.getlist("x-forwarded-proto")).split(",")
    return any(proto.strip().lower() == "https" for proto in protos)


def first_param(request: Request, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` with a non-empty value in the query string, read as
    Starlette's ``request.query_params`` reads it (``ingest/gate.parse_query``: the same
    pairs, without building a multi-dict on every API call)."""
    query = parse_query(request.scope["query_string"].decode("latin-1"))
    return next((v for v in map(query.get, names) if v), None)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called with a valid token: the token, the account it acts for (None for a
    component token) and what was read with them (``checks``: the account's quota
    override and the generation they are exact under)."""

    token: TokenRow
    account: Account | None
    checks: TokenChecks


def require_token(
    request: Request,
    ctx: AppContext,
    *,
    kinds: frozenset[str],
    wrong_kind: int,
    params: tuple[str, ...] = ("access_token",),
) -> Caller:
    """The token preamble, in WeChat's order; the first failing check answers.

    43002 unless POST, 41001 without a token (the first of ``params`` present), 40001 /
    42001 for an unknown, superseded or expired one, ``wrong_kind`` when its kind is not
    in ``kinds``, 40001 for a deleted account, then 40164 when the account's own token
    comes from outside its IP whitelist. The read runs on the event loop's thread over
    the store's held autocommit connection: the token's checks as cached by this process
    (``auth/caller_cache``), confirmed by one read of the account's generation.
    """
    if request.method != "POST":
        raise ApiError(43002)
    token = first_param(request, params)
    if not token:
        raise ApiError(41001)
    conn = ctx.store.hot_reader()
    checks = check_token_checks(ctx.callers, conn, token, ctx.now_ts())
    row = checks.token
    if row.kind not in kinds:
        raise ApiError(wrong_kind, f"a {row.kind} token cannot call {request.url.path}")
    if row.kind in COMPONENT_KINDS:
        return Caller(row, None, checks)
    account = acting_account(row, checks.account)
    if account.ip_whitelist and row.kind in OWN_KINDS:
        # Only worked out when there is a whitelist: accounts without one pay nothing.
        check_whitelist(account, row, client_ip(request, ctx))
    return Caller(row, account, checks)
