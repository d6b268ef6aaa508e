"""``/cgi-bin/token`` and ``/cgi-bin/stable_token``: credentials, WeChat's way (SPEC §3)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from msgcube.auth.tokens import issue_access_token, stable_access_token
from msgcube.domain.periods import local_today
from msgcube.errors import ApiError
from msgcube.storage.accounts import Account, get_account
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.handlers import ALL_METHODS, json_object, wechat_endpoint


def _account(ctx: AppContext, appid: object, secret: object, grant_type: object) -> Account:
    """The credential checks both token APIs share: 41002, 41004, 40002, 40013, 40125."""
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    if not isinstance(secret, str) or not secret:
        raise ApiError(41004)
    if grant_type != "client_credential":
        raise ApiError(40002)
    with ctx.store.read() as conn:
        account = get_account(conn, appid)
    if account is None:
        raise ApiError(40013)
    if not account.secret_matches(secret):
        raise ApiError(40125)
    return account


@wechat_endpoint
async def token(request: Request, ctx: AppContext) -> Response:
    if request.method != "GET":
        raise ApiError(43001)
    q = request.query_params
    account = _account(ctx, q.get("appid"), q.get("secret"), q.get("grant_type"))
    today = local_today(ctx.now(), account.tz)
    with ctx.store.write() as conn:
        grant = issue_access_token(conn, account, ctx.now_ts(), today, ctx.settings.quota_token)
    return ok_response(grant.body())


@wechat_endpoint
async def stable_token(request: Request, ctx: AppContext) -> Response:
    if request.method != "POST":
        raise ApiError(43002)
    body = await json_object(request)
    account = _account(ctx, body.get("appid"), body.get("secret"), body.get("grant_type"))
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise ApiError(47001, "force_refresh must be a boolean")
    with ctx.store.write() as conn:
        grant = stable_access_token(conn, account, ctx.now_ts(), force_refresh=force)
    return ok_response(grant.body())


routes = [
    Route("/cgi-bin/token", token, methods=ALL_METHODS),
    Route("/cgi-bin/stable_token", stable_token, methods=ALL_METHODS),
]
