"""``/cgi-bin/token`` and ``/cgi-bin/stable_token``: credentials, WeChat's way.

Routed by ``web/api_table.py``; errors are answered by ``web/boundary.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from msgcube.auth.policy import check_account_ip
from msgcube.auth.tokens import issue_access_token, stable_access_token
from msgcube.domain.identifiers import is_appid
from msgcube.domain.periods import local_today
from msgcube.errors import ApiError
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.platforms import get_platform
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.request_checks import client_ip, json_object


async def _account(
    request: Request, ctx: AppContext, appid: object, secret: object, grant_type: object
) -> Account:
    """The checks both token APIs share: 41002, 41004, 40002, 40013 (61024 for a
    third-party platform's appid), 40125, then the account's IP whitelist (40164)."""
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    if not isinstance(secret, str) or not secret:
        raise ApiError(41004)
    if grant_type != "client_credential":
        raise ApiError(40002)
    if not is_appid(appid):  # e.g. a NUL byte: no account can have it, PostgreSQL cannot query it
        raise ApiError(40013)
    with ctx.store.read() as conn:
        account = get_account(conn, appid)
        platform = get_platform(conn, appid) if account is None else None
    if platform is not None:
        raise ApiError(61024, "a component appid: use /cgi-bin/component/api_component_token")
    # Checked for an unknown appid too: the same work, whatever the answer.
    secret_ok = await ctx.secrets.account_matches(ctx.store, account, secret)
    if account is None:
        raise ApiError(40013)
    if not secret_ok:
        raise ApiError(40125)
    check_account_ip(account, client_ip(request, ctx))
    return account


async def token(request: Request, ctx: AppContext) -> Response:
    if request.method != "GET":
        raise ApiError(43001)
    q = request.query_params
    account = await _account(request, ctx, q.get("appid"), q.get("secret"), q.get("grant_type"))
    today = local_today(ctx.now(), account.tz)
    with ctx.store.write() as conn:
        grant = issue_access_token(conn, account, ctx.now_ts(), today, ctx.settings.quota_token)
    return ok_response(grant.body())


async def stable_token(request: Request, ctx: AppContext) -> Response:
    if request.method != "POST":
        raise ApiError(43002)
    body = await json_object(request)
    appid, secret, grant_type = body.get("appid"), body.get("secret"), body.get("grant_type")
    account = await _account(request, ctx, appid, secret, grant_type)
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise ApiError(47001, "force_refresh must be a boolean")
    with ctx.store.write() as conn:
        grant = stable_access_token(conn, account, ctx.now_ts(), force_refresh=force)
    return ok_response(grant.body())
