"""Glue shared by every WeChat-style handler: the rid, the body limit, error translation.

``wechat_endpoint`` wraps a handler so that any ``ApiError`` it raises becomes WeChat's
envelope with this request's rid — errors are translated here, once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from msgcube.errors import ApiError
from msgcube.web.context import AppContext
from msgcube.web.envelope import error_response

log = logging.getLogger("msgcube.api")

MAX_BODY = 64 * 1024
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Routed on every WeChat path so a wrong method gets WeChat's errcode, not HTTP 405."""

Handler = Callable[[Request, AppContext], Awaitable[Response]]


class BodyTooLarge(Exception):
    """The request body is over the limit (answered with HTTP 413)."""


def wechat_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        ctx: AppContext = request.app.state.ctx
        try:
            return await handler(request, ctx)
        except ApiError as exc:
            request.state.errcode = exc.errcode
            if exc.detail:
                request.state.detail = exc.detail
            return error_response(exc, request.state.rid)
        except BodyTooLarge:
            return Response(b"request body too large", status_code=413)

    return endpoint


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
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
