"""The OpenAPI 3.1 document of the WeChat-compatible API, generated from the endpoint table.

It describes the real behaviour, quirks included: every answer is HTTP 200, an error is
an ``{"errcode", "errmsg"}`` body, and the request body is JSON whatever the
Content-Type says.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from msgcube import __version__
from msgcube.domain.endpoints import ENDPOINTS, Endpoint, Period, RowKind
from msgcube.domain.messages import COUNT_INTERVALS, COUNTED_TYPES
from msgcube.web import component, quota

DATACUBE_ERRCODES = [
    40001,
    41001,
    42001,
    43002,
    44002,
    45009,
    47001,
    48001,
    61007,
    61500,
    61501,
    61503,
    40164,
]
TOKEN_ERRCODES = [40002, 40013, 40125, 40164, 41002, 41004, 43001, 45009, 61024]
STABLE_ERRCODES = [40002, 40013, 40125, 40164, 41002, 41004, 43002, 44002, 47001, 61024]

_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "examples": ["2014-12-07"]}
_COUNT = {"type": "integer", "minimum": 0}


def _error(codes: list[int]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["errcode", "errmsg"],
        "additionalProperties": False,
        "properties": {
            "errcode": {"type": "integer", "enum": codes},
            "errmsg": {
                "type": "string",
                "pattern": r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$",
            },
        },
    }


def _row_schema(ep: Endpoint) -> dict[str, Any]:
    props: dict[str, Any] = {"ref_date": _DATE}
    if ep.period is Period.HOUR:
        props["ref_hour"] = {"type": "integer", "enum": [h * 100 for h in range(24)]}
    if ep.kind is RowKind.INTERFACE:
        # Counts of relayed pushes and their times in milliseconds (one row per period
        # with at least one call, so callback_count is at least 1).
        props["callback_count"] = {"type": "integer", "minimum": 1}
        props |= dict.fromkeys(("fail_count", "total_time_cost", "max_time_cost"), _COUNT)
    elif ep.kind is RowKind.DIST:
        props["count_interval"] = {"type": "integer", "enum": list(COUNT_INTERVALS)}
        props["msg_user"] = _COUNT
    else:
        props["msg_type"] = {"type": "integer", "enum": list(COUNTED_TYPES)}
        props["msg_user"] = _COUNT
        props["msg_count"] = {"type": "integer", "minimum": 1}
    return {
        "type": "object",
        "required": list(ep.fields),
        "additionalProperties": False,
        "properties": {f: props[f] for f in ep.fields},
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _datacube_path(ep: Endpoint) -> dict[str, Any]:
    success = {
        "type": "object",
        "required": ["list"],
        "additionalProperties": False,
        "properties": {"list": {"type": "array", "items": _row_schema(ep)}},
    }
    return {
        "post": {
            "operationId": ep.name,
            "summary": f"{ep.title_zh} ({ep.title_en})",
            "description": (
                f"Rows per {ep.period.value}. `end_date - begin_date` must be less than "
                f"{ep.span_classic} days (span profile `classic`; {ep.span_current} under "
                "`current`) and `end_date` at most yesterday. Errors are HTTP 200 with an "
                "errcode body. A third-party platform's authorizer token needs permission "
                f"set {ep.func_id} (61007 otherwise)."
            ),
            "parameters": [
                {
                    "name": "access_token",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "maxLength": 512},
                }
            ],
            "requestBody": {
                "required": True,
                "content": _json(
                    {
                        "type": "object",
                        "required": ["begin_date", "end_date"],
                        "properties": {"begin_date": _DATE, "end_date": _DATE},
                    }
                ),
            },
            "responses": {
                "200": {
                    "description": "The rows, or a WeChat error body.",
                    "content": _json({"oneOf": [success, _error(DATACUBE_ERRCODES)]}),
                },
                "413": {"description": "Body over 64 KiB."},
            },
        }
    }


@cache
def openapi_document() -> dict[str, Any]:
    grant = {
        "type": "object",
        "required": ["access_token", "expires_in"],
        "additionalProperties": False,
        "properties": {
            "access_token": {"type": "string", "maxLength": 512},
            "expires_in": {"type": "integer", "minimum": 1},
        },
    }
    paths: dict[str, Any] = {ep.path: _datacube_path(ep) for ep in ENDPOINTS}
    paths["/cgi-bin/token"] = {
        "get": {
            "operationId": "token",
            "summary": "获取access_token: a new token; the previous one works 5 more minutes",
            "parameters": [
                {
                    "name": "grant_type",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": ["client_credential"]},
                },
                {"name": "appid", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "secret", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "A token or an error body.",
                    "content": _json({"oneOf": [grant, _error(TOKEN_ERRCODES)]}),
                }
            },
        }
    }
    paths["/cgi-bin/stable_token"] = {
        "post": {
            "operationId": "stable_token",
            "summary": "获取稳定版access_token",
            "requestBody": {
                "required": True,
                "content": _json(
                    {
                        "type": "object",
                        "required": ["grant_type", "appid", "secret"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credential"]},
                            "appid": {"type": "string"},
                            "secret": {"type": "string"},
                            "force_refresh": {"type": "boolean", "default": False},
                        },
                    }
                ),
            },
            "responses": {
                "200": {
                    "description": "A token or an error body.",
                    "content": _json({"oneOf": [grant, _error(STABLE_ERRCODES)]}),
                },
                "413": {"description": "Body over 64 KiB."},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "msgcube — WeChat message analysis data interface",
            "version": __version__,
            "description": "Wire-compatible with api.weixin.qq.com: only the base URL differs.",
        },
        "paths": {**paths, **component.openapi_paths(), **quota.openapi_paths()},
    }
