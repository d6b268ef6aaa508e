"""Third-party platform APIs and the component_verify_ticket pusher (contract).

* ``POST /cgi-bin/component/api_component_token`` body ``{component_appid,
  component_appsecret, component_verify_ticket}`` → ``{component_access_token, expires_in}``
  (41002, 41004, 61011 unknown platform, 40125 bad secret, 61006 bad ticket, 61005 old ticket);
* ``POST /cgi-bin/component/api_authorizer_token?component_access_token=`` body
  ``{component_appid, authorizer_appid, authorizer_refresh_token}`` →
  ``{authorizer_access_token, expires_in, authorizer_refresh_token}`` (61014 not a component
  token, 61011 another platform's appid, 61003 not authorized, 61023 bad refresh token).

The pusher runs in the server's lifespan: every few seconds it looks for platforms with
a ticket URL whose current 10-minute ticket has not been pushed, claims the push in the
database (so one worker of several pushes it) and POSTs it signed and encrypted the way
WeChat does. A failed push is logged and not retried: the next one comes 10 minutes
later and the previous ticket stays valid for 12 hours, as with WeChat.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from msgcube.auth.platforms import (
    TICKET_EVERY,
    Ticket,
    check_ticket,
    exchange_refresh_token,
    issue_component_token,
    secret_matches,
    ticket_for_slot,
    ticket_push,
)
from msgcube.auth.tokens import check_token
from msgcube.errors import ApiError
from msgcube.storage.accounts import get_account
from msgcube.storage.platforms import (
    Platform,
    claim_push,
    get_platform,
    get_platform_by_id,
    list_platforms,
)
from msgcube.web.background import running
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.handlers import ALL_METHODS, json_object, wechat_endpoint
from msgcube.web.quota import wechat_operation

log = logging.getLogger("msgcube.component")

PUSH_POLL = 10.0
"""Seconds between looks for a ticket to push (a new one is due every 10 minutes)."""
PUSH_TIMEOUT = 5.0
"""WeChat gives a developer's server 5 seconds to answer a push."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@wechat_endpoint
async def api_component_token(request: Request, ctx: AppContext) -> Response:
    if request.method != "POST":
        raise ApiError(43002)
    body = await json_object(request)
    appid = _text(body.get("component_appid"))
    secret = _text(body.get("component_appsecret"))
    ticket = _text(body.get("component_verify_ticket"))
    if appid is None:
        raise ApiError(41002, "component_appid missing")
    if secret is None:
        raise ApiError(41004, "component_appsecret missing")
    with ctx.store.read() as conn:
        platform = get_platform(conn, appid)
    if platform is None:
        raise ApiError(61011, f"unknown component_appid {appid}")
    if not secret_matches(platform, secret):
        raise ApiError(40125)
    now = ctx.now_ts()
    check_ticket(platform, ticket or "", now)
    with ctx.store.write() as conn:
        grant = issue_component_token(conn, platform, now)
    return ok_response(grant.body())


@wechat_endpoint
async def api_authorizer_token(request: Request, ctx: AppContext) -> Response:
    if request.method != "POST":
        raise ApiError(43002)
    q = request.query_params
    token = q.get("component_access_token") or q.get("access_token")
    if not token:
        raise ApiError(41001)
    now = ctx.now_ts()
    with ctx.store.read() as conn:
        row = check_token(conn, token, now)
    if row.kind != "component" or row.platform_id is None:
        raise ApiError(61014)
    body = await json_object(request)
    component_appid = _text(body.get("component_appid"))
    authorizer_appid = _text(body.get("authorizer_appid"))
    refresh_token = _text(body.get("authorizer_refresh_token"))
    if component_appid is None or authorizer_appid is None:
        raise ApiError(41002, "component_appid or authorizer_appid missing")
    with ctx.store.write() as conn:
        platform = get_platform_by_id(conn, row.platform_id)
        if platform is None or platform.component_appid != component_appid:
            raise ApiError(61011, "component_appid is not the token's platform")
        account = get_account(conn, authorizer_appid)
        if account is None:
            raise ApiError(61003, f"unknown authorizer_appid {authorizer_appid}")
        grant = exchange_refresh_token(conn, platform, account, refresh_token or "", now)
    return ok_response(grant.body())


# --- the ticket pusher --------------------------------------------------------------------


def claim_due_pushes(ctx: AppContext) -> list[tuple[Platform, Ticket]]:
    """The tickets this worker should push now, each claimed so no other worker does."""
    slot = ctx.now_ts() // TICKET_EVERY
    with ctx.store.read() as conn:
        due = [
            p for p in list_platforms(conn)
            if p.ticket_url and (p.pushed_slot is None or p.pushed_slot < slot)
        ]  # fmt: skip
    claimed = []
    for platform in due:
        with ctx.store.write() as conn:
            if claim_push(conn, platform.id, slot):
                claimed.append((platform, ticket_for_slot(platform, slot)))
    return claimed


async def push_ticket(
    client: httpx.AsyncClient, platform: Platform, ticket: Ticket, now: int
) -> bool:
    """POST one ticket; True when the platform answered ``success`` like WeChat expects."""
    params, body = ticket_push(platform, ticket, now, nonce=str(secrets.randbelow(10**10)))
    try:
        # Merged, not replaced: a platform's URL may carry a query of its own.
        url = httpx.URL(platform.ticket_url).copy_merge_params(params)
        response = await client.post(
            url, content=body, headers={"Content-Type": "text/xml"}, timeout=PUSH_TIMEOUT
        )
    except httpx.HTTPError as exc:
        log.warning("ticket push to %s failed: %s", platform.component_appid, exc)
        return False
    if response.status_code != 200 or response.text.strip() != "success":
        log.warning("ticket push to %s answered HTTP %d %r", platform.component_appid,
                    response.status_code, response.text[:80])  # fmt: skip
        return False
    log.info("pushed component_verify_ticket to %s", platform.component_appid)
    return True


async def push_due_tickets(ctx: AppContext, client: httpx.AsyncClient) -> int:
    """One round of the pusher; returns how many pushes were answered ``success``."""
    claimed = await run_in_threadpool(claim_due_pushes, ctx)
    now = ctx.now_ts()
    results = [await push_ticket(client, platform, ticket, now) for platform, ticket in claimed]
    return sum(results)


@contextlib.asynccontextmanager
async def ticket_pusher(ctx: AppContext, interval: float = PUSH_POLL) -> AsyncIterator[None]:
    """Run the pusher while the app runs (``msgcube serve``)."""

    async def loop() -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while True:
                try:
                    await push_due_tickets(ctx, client)
                except Exception:  # keep serving; the next round tries again
                    log.exception("ticket pusher failed")
                await anyio.sleep(interval)

    async with running(loop):
        yield


routes = [
    Route("/cgi-bin/component/api_component_token", api_component_token, methods=ALL_METHODS),
    Route("/cgi-bin/component/api_authorizer_token", api_authorizer_token, methods=ALL_METHODS),
]


def openapi_paths() -> dict[str, Any]:
    """The two component APIs, for /openapi.json (merged by web/openapi.py)."""
    string = {"type": "string"}
    token = {"type": "string", "maxLength": 512}
    lifetime = {"type": "integer", "minimum": 1}
    return {
        "/cgi-bin/component/api_component_token": wechat_operation(
            "api_component_token",
            "获取令牌: component_verify_ticket + secret → component_access_token (7200 s)",
            {
                "required": ["component_appid", "component_appsecret", "component_verify_ticket"],
                "properties": {
                    k: string
                    for k in ("component_appid", "component_appsecret", "component_verify_ticket")
                },
            },
            {
                "type": "object",
                "required": ["component_access_token", "expires_in"],
                "additionalProperties": False,
                "properties": {"component_access_token": token, "expires_in": lifetime},
            },
            [43002, 44002, 47001, 41002, 41004, 61011, 40125, 61006, 61005],
            query_param=None,
        ),
        "/cgi-bin/component/api_authorizer_token": wechat_operation(
            "api_authorizer_token",
            "获取/刷新接口调用令牌: refresh token → authorizer_access_token + a new refresh token",
            {
                "required": ["component_appid", "authorizer_appid", "authorizer_refresh_token"],
                "properties": {
                    k: string
                    for k in ("component_appid", "authorizer_appid", "authorizer_refresh_token")
                },
            },
            {
                "type": "object",
                "required": ["authorizer_access_token", "expires_in", "authorizer_refresh_token"],
                "additionalProperties": False,
                "properties": {
                    "authorizer_access_token": token,
                    "expires_in": lifetime,
                    "authorizer_refresh_token": string,
                },
            },
            [43002, 41001, 40001, 42001, 61014, 44002, 47001, 41002, 61011, 61003, 61023],
            query_param="component_access_token",
        ),
    }
