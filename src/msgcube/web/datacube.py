"""``POST /datacube/<name>``: the datacube endpoints, routed from the endpoint table.

The checks run in SPEC §1.1's order; the first failure answers. Answers are cached per
process under the account's ``stats_gen``: a past period's rows only change when late
data makes it dirty, which moves the generation, so a hit is never stale.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from msgcube.auth.policy import acting_account, check_datacube_access
from msgcube.auth.tokens import check_token_and_account
from msgcube.domain.endpoints import ENDPOINTS, Endpoint
from msgcube.domain.periods import local_today, parse_range_body
from msgcube.errors import ApiError
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account
from msgcube.web.context import AppContext
from msgcube.web.envelope import JSONBody
from msgcube.web.handlers import ALL_METHODS, json_object, wechat_endpoint
from msgcube.web.quota import check_ip, counter_of


def authorize(
    request: Request, ctx: AppContext, now: datetime, func_id: int = 1
) -> tuple[Account, date]:
    """The checks before the body, in SPEC §1.1's order; the call is counted when they pass.

    43002 method, 41001 no token, 40001/42001 token, 40164 IP whitelist, 48001 component
    token / unverified / access policy, 61007 authorizer without the permission set
    ``func_id`` (1 for messages, 3 for interface analysis), 45009
    daily quota (see ``auth/policy`` and ``auth/quotas``). Returns the account and its
    local date at ``now``.
    """
    if request.method != "POST":
        raise ApiError(43002)
    token = request.query_params.get("access_token")
    if not token:
        raise ApiError(41001)
    conn = ctx.store.hot_reader()  # this runs on the event loop's thread, one at a time
    row, found = check_token_and_account(conn, token, int(now.timestamp()))
    account = acting_account(row, found)
    check_ip(request, ctx, account, row)
    check_datacube_access(conn, row, account, ctx.settings.access_policy, func_id)
    today = local_today(now, account.tz)
    counter_of(request).admit(account.id, request.scope["path"], today,
                              ctx.settings.quota_datacube)  # fmt: skip
    return account, today


def _handler(ep: Endpoint) -> Any:
    async def handle(request: Request, ctx: AppContext) -> Response:
        now = ctx.now()
        account, today = authorize(request, ctx, now, ep.func_id)
        begin, end = parse_range_body(await json_object(request))
        key = (account.id, ep.name, begin, end, today, ctx.settings.span_profile)
        hit = ctx.answers.get(key)
        if isinstance(hit, tuple) and hit[0] == account.stats_gen:
            return JSONBody(hit[1])
        rows = await run_in_threadpool(
            served_list, ctx.store, account, ep, begin, end, now,
            span_profile=ctx.settings.span_profile, ready_at=ctx.settings.ready_time,
        )  # fmt: skip
        payload = orjson.dumps({"list": rows})
        ctx.answers.put(key, (account.stats_gen, payload))
        return JSONBody(payload)

    handle.__name__ = ep.name
    return wechat_endpoint(handle)


# Every method is routed so that a GET answers 43002 the WeChat way instead of HTTP 405.
routes = [Route(ep.path, _handler(ep), methods=ALL_METHODS, name=ep.name) for ep in ENDPOINTS]
