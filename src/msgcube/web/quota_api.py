"""WeChat's quota APIs.

* ``POST /cgi-bin/clear_quota?access_token=`` body ``{"appid"}`` → ``{"errcode":0,"errmsg":"ok"}``
  (40013 when appid is not the token's account; 48006 after 10 clears in a month);
* ``POST /cgi-bin/openapi/quota/get?access_token=`` body ``{"cgi_path"}`` →
  ``{"errcode":0,"errmsg":"ok","quota":{"daily_limit","used","remain"}}`` (76003 for a path
  without its leading ``/``, 76021 for an API msgcube does not limit, 76022 for a
  component token or an ``/sns/`` path).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from msgcube.auth.quotas import DATACUBE_APIS, QuotaStatus
from msgcube.auth.tokens import TOKEN_API
from msgcube.domain.periods import local_today, zone
from msgcube.errors import ApiError
from msgcube.storage.platforms import get_platform_by_id
from msgcube.storage.usage import usage_of
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.quota_flusher import counter_of
from msgcube.web.request_checks import ANY_KIND, json_object, require_token

OK = {"errcode": 0, "errmsg": "ok"}


async def clear_quota(request: Request, ctx: AppContext) -> Response:
    caller = require_token(request, ctx, kinds=ANY_KIND, wrong_kind=48001)
    account = caller.account
    appid = (await json_object(request)).get("appid")
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    if account is None:
        # A platform clearing its own quota: msgcube keeps no daily quota for platforms.
        with ctx.store.read() as conn:
            platform = get_platform_by_id(conn, caller.token.platform_id or 0)
        if platform is None or appid != platform.component_appid:
            raise ApiError(40013, "appid is not the token's platform")
        return ok_response(OK)
    if appid != account.appid:
        raise ApiError(40013, "appid is not the token's account")
    local = ctx.now().astimezone(zone(account.tz))
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await run_in_threadpool(
        counter_of(request).clear,
        account.id,
        local.date(),
        ctx.now_ts(),
        int(month_start.timestamp()),
    )
    return ok_response(OK)


async def quota_get(request: Request, ctx: AppContext) -> Response:
    caller = require_token(request, ctx, kinds=ANY_KIND, wrong_kind=48001)
    account = caller.account
    if account is None:
        raise ApiError(76022, "a component token has no account quota")
    cgi_path = (await json_object(request)).get("cgi_path")
    if not isinstance(cgi_path, str) or not cgi_path:
        raise ApiError(47001, "cgi_path missing")
    if not cgi_path.startswith("/") or "://" in cgi_path:
        raise ApiError(76003, "cgi_path needs a leading / and no host")
    if cgi_path.startswith("/sns/"):
        raise ApiError(76022, "/sns/ paths have no quota here")
    day = local_today(ctx.now(), account.tz)
    if cgi_path in DATACUBE_APIS:
        override = caller.checks.quota_limit
        limit = ctx.settings.quota_datacube if override is None else override
        gen = caller.checks.auth_gen
        status = counter_of(request).status(account.id, cgi_path, day, limit, gen)
    elif cgi_path == TOKEN_API:
        with ctx.store.read() as conn:
            used = usage_of(conn, account.id, TOKEN_API, day)
        status = QuotaStatus(ctx.settings.quota_token, used)
    else:
        raise ApiError(76021, f"no quota for {cgi_path}")
    return ok_response({**OK, "quota": status.body()})
