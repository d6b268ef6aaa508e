"""``POST /datacube/<name>``: the handler of each endpoint of the endpoint table.

The checks run in WeChat's order; the first failure answers. Answers are cached per
process under the account's ``stats_gen``: a past period's rows only change when late
data makes it dirty, which moves the generation, so a hit is never stale.
"""

from __future__ import annotations

from datetime import date, datetime

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from msgcube.auth.policy import check_datacube_access
from msgcube.domain.endpoints import Endpoint
from msgcube.domain.periods import local_today, parse_range_body
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account
from msgcube.storage.platforms import Authorization
from msgcube.web.context import AppContext
from msgcube.web.envelope import JSONBody
from msgcube.web.quota_flusher import counter_of
from msgcube.web.request_checks import ACCOUNT_KINDS, Handler, json_object, require_token


def authorize(
    request: Request, ctx: AppContext, now: datetime, func_id: int = 1
) -> tuple[Account, date]:
    """The checks before the body, in WeChat's order; the call is counted when they pass.

    43002 method, 41001 no token, 40001/42001 token, 48001 component token, 40164 IP
    whitelist (``require_token``), 48001 unverified / access policy, 61007 authorizer
    without the permission set ``func_id`` (1 for messages, 3 for interface analysis),
    45009 daily quota (see ``auth/policy`` and ``auth/quotas``). Returns the account and
    its local date at ``now``.
    """
    caller = require_token(request, ctx, kinds=ACCOUNT_KINDS, wrong_kind=48001)
    account = caller.account
    assert account is not None  # an account kind
    policy = ctx.settings.access_policy
    conn = ctx.store.hot_reader()

    def grant_of(platform_id: int) -> Authorization | None:
        return ctx.callers.grant(conn, platform_id, caller.checks)

    check_datacube_access(grant_of, caller.token, account, policy, func_id)
    today = local_today(now, account.tz)
    override = caller.checks.quota_limit
    limit = ctx.settings.quota_datacube if override is None else override
    gen = caller.checks.auth_gen
    counter_of(request).admit(account.id, request.scope["path"], today, limit, gen)
    return account, today


def handler(ep: Endpoint) -> Handler:
    """The handler of one endpoint of the table (routed by ``web/api_table.py``)."""

    async def handle(request: Request, ctx: AppContext) -> Response:
        now = ctx.now()
        account, today = authorize(request, ctx, now, ep.func_id)
        begin, end = parse_range_body(await json_object(request))
        key = (account.id, ep.name, begin, end, today, ctx.settings.span_profile)
        hit = ctx.answers.get(key)
        if isinstance(hit, tuple) and hit[0] == account.stats_gen:
            return JSONBody(hit[1])
        rows = await run_in_threadpool(
            served_list,
            ctx.store,
            account,
            ep,
            begin,
            end,
            now,
            span_profile=ctx.settings.span_profile,
            ready_at=ctx.settings.ready_time,
        )
        payload = orjson.dumps({"list": rows})
        ctx.answers.put(key, (account.stats_gen, payload))
        return JSONBody(payload)

    handle.__name__ = ep.name
    return handle
