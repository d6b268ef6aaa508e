"""Quotas on the web side: the per-process counter, its flusher, and WeChat's quota APIs.

* ``POST /cgi-bin/clear_quota?access_token=`` body ``{"appid"}`` → ``{"errcode":0,"errmsg":"ok"}``
  (40013 when appid is not the token's account; 48006 after 10 clears in a month);
* ``POST /cgi-bin/openapi/quota/get?access_token=`` body ``{"cgi_path"}`` →
  ``{"errcode":0,"errmsg":"ok","quota":{"daily_limit","used","remain"}}`` (76003 for a path
  without its leading ``/``, 76021 for an API msgcube does not limit, 76022 for a
  component token or an ``/sns/`` path).

The counter lives on ``app.state.quotas``, one per process; the flusher (started by the
app's lifespan) writes its counts every second and once more at shutdown. Without a
lifespan (tests over ``httpx.ASGITransport``) counts stay in memory and every answer of
this process is still exact: the check adds what is not flushed yet.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from msgcube.auth.policy import OWN_KINDS, check_whitelist, client_address, token_account
from msgcube.auth.quotas import DATACUBE_APIS, FLUSH_EVERY, QuotaCounter, QuotaStatus
from msgcube.auth.tokens import TOKEN_API, check_token
from msgcube.domain.periods import local_today, zone
from msgcube.errors import ApiError
from msgcube.storage.accounts import Account
from msgcube.storage.platforms import get_platform_by_id
from msgcube.storage.tokens import TokenRow
from msgcube.storage.usage import usage_of
from msgcube.web.background import running
from msgcube.web.context import AppContext
from msgcube.web.envelope import ok_response
from msgcube.web.handlers import ALL_METHODS, json_object, wechat_endpoint

log = logging.getLogger("msgcube.quota")

OK = {"errcode": 0, "errmsg": "ok"}


def counter_of(request: Request) -> QuotaCounter:
    counter: QuotaCounter = request.app.state.quotas
    return counter


def client_ip(request: Request, ctx: AppContext) -> str | None:
    """The caller's address, through ``trusted_proxies`` only (see ``auth/policy``)."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    return client_address(peer, forwarded, ctx.settings.trusted_proxies)


def check_ip(request: Request, ctx: AppContext, account: Account, row: TokenRow) -> None:
    """40164 for an own-token call from outside the account's whitelist.

    The address is only worked out when there is a whitelist to hold it against, so
    accounts without one pay nothing for the feature.
    """
    if account.ip_whitelist and row.kind in OWN_KINDS:
        check_whitelist(account, row, client_ip(request, ctx))


def _token(request: Request, ctx: AppContext) -> tuple[TokenRow, Account | None]:
    """43002, 41001, 40001/42001, then the token's account (None for a component token)."""
    if request.method != "POST":
        raise ApiError(43002)
    token = request.query_params.get("access_token")
    if not token:
        raise ApiError(41001)
    with ctx.store.read() as conn:
        row = check_token(conn, token, ctx.now_ts())
        account = None if row.kind == "component" else token_account(conn, row)
    if account is not None:
        check_ip(request, ctx, account, row)
    return row, account


@wechat_endpoint
async def clear_quota(request: Request, ctx: AppContext) -> Response:
    row, account = _token(request, ctx)
    appid = (await json_object(request)).get("appid")
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    if account is None:
        # A platform clearing its own quota: msgcube keeps no daily quota for platforms.
        with ctx.store.read() as conn:
            platform = get_platform_by_id(conn, row.platform_id or 0)
        if platform is None or appid != platform.component_appid:
            raise ApiError(40013, "appid is not the token's platform")
        return ok_response(OK)
    if appid != account.appid:
        raise ApiError(40013, "appid is not the token's account")
    local = ctx.now().astimezone(zone(account.tz))
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await run_in_threadpool(
        counter_of(request).clear, account.id, local.date(), ctx.now_ts(),
        int(month_start.timestamp()),
    )  # fmt: skip
    return ok_response(OK)


@wechat_endpoint
async def quota_get(request: Request, ctx: AppContext) -> Response:
    _, account = _token(request, ctx)
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
        status = counter_of(request).status(account.id, cgi_path, day, ctx.settings.quota_datacube)
    elif cgi_path == TOKEN_API:
        with ctx.store.read() as conn:
            used = usage_of(conn, account.id, TOKEN_API, day)
        status = QuotaStatus(ctx.settings.quota_token, used)
    else:
        raise ApiError(76021, f"no quota for {cgi_path}")
    return ok_response({**OK, "quota": status.body()})


@contextlib.asynccontextmanager
async def quota_flusher(
    counter: QuotaCounter, interval: float = FLUSH_EVERY
) -> AsyncIterator[None]:
    """Flush the counter every ``interval`` seconds while the app runs, and at shutdown."""

    async def flush() -> None:
        try:
            await run_in_threadpool(counter.flush)
        except Exception:  # keep counting; the counts stay pending for the next flush
            log.exception("quota flush failed (%d calls pending)", counter.pending())

    async def loop() -> None:
        while True:
            await anyio.sleep(interval)
            await flush()

    try:
        async with running(loop):
            yield
    finally:
        with anyio.CancelScope(shield=True):
            await flush()


routes = [
    Route("/cgi-bin/clear_quota", clear_quota, methods=ALL_METHODS),
    Route("/cgi-bin/openapi/quota/get", quota_get, methods=ALL_METHODS),
]


# --- OpenAPI (merged into /openapi.json by web/openapi.py) ---------------------------------


def wechat_error_schema(codes: list[int]) -> dict[str, Any]:
    """An errcode body with one of ``codes`` and the rid WeChat ends errmsg with."""
    return {
        "type": "object",
        "required": ["errcode", "errmsg"],
        "additionalProperties": False,
        "properties": {
            "errcode": {"type": "integer", "enum": sorted(codes)},
            "errmsg": {"type": "string", "pattern": r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$"},
        },
    }


def wechat_operation(
    operation_id: str,
    summary: str,
    body: dict[str, Any],
    success: dict[str, Any],
    codes: list[int],
    *,
    query_param: str | None = "access_token",
) -> dict[str, Any]:
    """One POST operation the WeChat way: HTTP 200 with the result or an errcode body."""
    params = (
        [{"name": query_param, "in": "query", "required": True, "schema": {"type": "string"}}]
        if query_param
        else []
    )
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object", **body}}},
            },
            "responses": {
                "200": {
                    "description": "The result, or a WeChat error body.",
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [success, wechat_error_schema(codes)]}
                        }
                    },
                },
                "413": {"description": "Body over 64 KiB."},
            },
        }
    }


_OK_PROPS = {"errcode": {"const": 0}, "errmsg": {"const": "ok"}}
_TOKEN_CODES = [43002, 41001, 40001, 42001, 40164, 44002, 47001]


def openapi_paths() -> dict[str, Any]:
    quota_schema = {
        "type": "object",
        "required": ["daily_limit", "used", "remain"],
        "additionalProperties": False,
        "properties": {
            k: {"type": "integer", "minimum": 0} for k in ("daily_limit", "used", "remain")
        },
    }
    return {
        "/cgi-bin/clear_quota": wechat_operation(
            "clear_quota",
            "清空api的调用quota: today's counters of the account → 0 (10 a month)",
            {"required": ["appid"], "properties": {"appid": {"type": "string"}}},
            {
                "type": "object",
                "required": ["errcode", "errmsg"],
                "additionalProperties": False,
                "properties": _OK_PROPS,
            },
            [*_TOKEN_CODES, 41002, 40013, 48006],
        ),
        "/cgi-bin/openapi/quota/get": wechat_operation(
            "quota_get",
            "查询openAPI调用quota: the account's daily limit, calls used and left for one API",
            {"required": ["cgi_path"], "properties": {"cgi_path": {"type": "string"}}},
            {
                "type": "object",
                "required": ["errcode", "errmsg", "quota"],
                "additionalProperties": False,
                "properties": {**_OK_PROPS, "quota": quota_schema},
            },
            [*_TOKEN_CODES, 76003, 76021, 76022],
        ),
    }
