"""The OpenAPI 3.1 document of the WeChat-compatible API, generated from ``web/api_table``.

It describes the real behaviour, quirks included: every answer is HTTP 200, an error is
an ``{"errcode", "errmsg"}`` body (WeChat's convention, declared as one of the two
shapes of each 200 answer, with the errcodes the route can give), and the request body
is JSON whatever the Content-Type says.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from msgcube import __version__
from msgcube.web.api_table import API, ApiRoute, Schema

RID_PATTERN = r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$"


def wechat_error_schema(codes: tuple[int, ...]) -> Schema:
    """An errcode body with one of ``codes`` and the rid WeChat ends errmsg with."""
    return {
        "type": "object",
        "required": ["errcode", "errmsg"],
        "additionalProperties": False,
        "properties": {
            "errcode": {"type": "integer", "enum": list(codes)},
            "errmsg": {"type": "string", "pattern": RID_PATTERN},
        },
    }


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(route: ApiRoute) -> dict[str, Any]:
    """One operation: its parameters, its body and its one HTTP 200 answer."""
    token: Schema = {"type": "string", "maxLength": 512}
    queries = [*((name, token) for name in route.query), *route.query_schemas]
    params = [
        {"name": name, "in": "query", "required": True, "schema": schema}
        for name, schema in queries
    ]
    op: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
    if route.description:
        op["description"] = route.description
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(route.body)}
    op["responses"] = {
        "200": {
            "description": "The result, or a WeChat error body (over 64 KiB: 47001).",
            "content": _json({"oneOf": [route.success, wechat_error_schema(route.answerable)]}),
        }
    }
    return {route.method.lower(): op}


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "msgcube — WeChat message analysis data interface",
            "version": __version__,
            "description": "Wire-compatible with api.weixin.qq.com: only the base URL differs.",
        },
        "paths": {route.path: operation(route) for route in API},
    }
