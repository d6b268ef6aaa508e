"""The third-party platform's credential endpoints (the ticket pusher: ``web/ticket_pusher.py``).

* ``POST /cgi-bin/component/api_component_token`` body ``{component_appid,
  component_appsecret, component_verify_ticket}`` → ``{component_access_token, expires_in}``
  (41002, 41004, 61011 unknown platform, 40125 bad secret, 61006 bad ticket, 61005 old ticket);
* ``POST /cgi-bin/component/api_authorizer_token?component_access_token=`` body
  ``{component_appid, authorizer_appid, authorizer_refresh_token}`` →
  ``{authorizer_access_token, expires_in, authorizer_refresh_token}`` (61014 not a component
  token, 61011 another platform's appid, 61003 not authorized, 61023 bad refresh token).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from msgcube.auth.platforms import (
    check_ticket,
    exchange_refresh_token,
    issue_component_token,
)
from msgcube.errors import ApiError
from msgcube.storage.accounts import get_account
from msgcube.storage.platforms import get_platform, get_platform_by_id
from msgcube.storage.schema import platforms
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.request_checks import COMPONENT_KINDS, json_object, require_token


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


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
    stored = platform.secret_hash
    if not await ctx.secrets.matches(ctx.store, platforms, platform.id, stored, secret):
        raise ApiError(40125)
    now = ctx.now_ts()
    check_ticket(platform, ticket or "", now)
    with ctx.store.write() as conn:
        grant = issue_component_token(conn, platform, now)
    return ok_response(grant.body())


async def api_authorizer_token(request: Request, ctx: AppContext) -> Response:
    row = require_token(
        request,
        ctx,
        kinds=COMPONENT_KINDS,
        wrong_kind=61014,
        params=("component_access_token", "access_token"),
    ).token
    if row.platform_id is None:
        raise ApiError(61014)
    now = ctx.now_ts()
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
