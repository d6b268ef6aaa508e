"""The WeChat-compatible API in one table: path, method, handler, body, answer, errcodes.

Each ``ApiRoute`` declares every errcode it can answer. The routes of the app
(``routes()``), the OpenAPI document (``web/openapi.py``), the error-shape tests and the
errcode table of the docs (``errcode_markdown``) are all generated from ``API``, so a
new endpoint (append it to ``domain.endpoints.ENDPOINTS`` or to ``API``) lands in each
of them at once. Every route can also answer ``-1 system error`` (a fault, see
``web/boundary.py``); POST routes answer 47001 for a body over 64 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from msgcube.domain.endpoints import ENDPOINTS, Endpoint, Period, RowKind
from msgcube.domain.messages import COUNT_INTERVALS, COUNTED_TYPES
from msgcube.errors import ERRMSG
from msgcube.web import cgibin, datacube, platform_api, quota_api
from msgcube.web.request_checks import ALL_METHODS, Handler, endpoint

Schema = dict[str, Any]

FAULT = -1
"""Every route may answer it: the database is down, a stored value is broken, a bug."""

_STRING: Schema = {"type": "string"}
_TOKEN: Schema = {"type": "string", "maxLength": 512}
_LIFETIME: Schema = {"type": "integer", "minimum": 1}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_DATE: Schema = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "examples": ["2014-12-07"]}
_OK_PROPS: Schema = {"errcode": {"const": 0}, "errmsg": {"const": "ok"}}


def obj(required: list[str], props: Schema, *, closed: bool = True) -> Schema:
    """A JSON object schema (``closed``: no other properties, as WeChat's answers)."""
    schema: Schema = {"type": "object", "required": required, "properties": props}
    if closed:
        schema["additionalProperties"] = False
    return schema


@dataclass(frozen=True)
class ApiRoute:
    """One operation of the API, as the table declares it."""

    path: str
    method: str
    name: str
    summary: str
    handler: Handler
    errcodes: tuple[int, ...]
    """What the route answers besides its result (``FAULT`` and, for POST, 47001 added)."""
    success: Schema
    body: Schema | None = None
    query: tuple[str, ...] = ()
    """Required query parameters (strings), e.g. ``access_token``."""
    query_schemas: tuple[tuple[str, Schema], ...] = ()
    description: str = ""

    @property
    def answerable(self) -> tuple[int, ...]:
        """Every errcode this route can answer, sorted, faults included."""
        codes = {*self.errcodes, FAULT}
        if self.method == "POST":
            codes.add(47001)
        return tuple(sorted(codes))


def _grant() -> Schema:
    return obj(["access_token", "expires_in"], {"access_token": _TOKEN, "expires_in": _LIFETIME})


def _row_schema(ep: Endpoint) -> Schema:
    props: Schema = {"ref_date": _DATE}
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
    return obj(list(ep.fields), {f: props[f] for f in ep.fields})


TOKEN_PREAMBLE = (43002, 41001, 40001, 42001)
"""``require_token``'s own answers (method, missing, unknown or expired token)."""
DATACUBE_ERRCODES = (*TOKEN_PREAMBLE, 40164, 44002, 45009, 47001, 48001, 61007, 61500, 61501, 61503)


def _datacube(ep: Endpoint) -> ApiRoute:
    return ApiRoute(
        path=ep.path,
        method="POST",
        name=ep.name,
        summary=f"{ep.title_zh} ({ep.title_en})",
        description=(
            f"Rows per {ep.period.value}. `end_date - begin_date` must be less than "
            f"{ep.span_classic} days (span profile `classic`; {ep.span_current} under "
            "`current`) and `end_date` at most yesterday. Errors are HTTP 200 with an "
            "errcode body. A third-party platform's authorizer token needs permission "
            f"set {ep.func_id} (61007 otherwise)."
        ),
        handler=datacube.handler(ep),
        errcodes=DATACUBE_ERRCODES,
        success=obj(["list"], {"list": {"type": "array", "items": _row_schema(ep)}}),
        body=obj(
            ["begin_date", "end_date"], {"begin_date": _DATE, "end_date": _DATE}, closed=False
        ),
        query=("access_token",),
    )


def _credentials() -> list[ApiRoute]:
    token_query = (
        ("grant_type", {"type": "string", "enum": ["client_credential"]}),
        ("appid", _STRING),
        ("secret", _STRING),
    )
    stable_body = obj(
        ["grant_type", "appid", "secret"],
        {
            "grant_type": {"type": "string", "enum": ["client_credential"]},
            "appid": _STRING,
            "secret": _STRING,
            "force_refresh": {"type": "boolean", "default": False},
        },
        closed=False,
    )
    return [
        ApiRoute(
            path="/cgi-bin/token",
            method="GET",
            name="token",
            summary="获取access_token: a new token; the previous one works 5 more minutes",
            handler=cgibin.token,
            errcodes=(40002, 40013, 40125, 40164, 41002, 41004, 43001, 45009, 61024),
            success=_grant(),
            query_schemas=token_query,
        ),
        ApiRoute(
            path="/cgi-bin/stable_token",
            method="POST",
            name="stable_token",
            summary="获取稳定版access_token",
            handler=cgibin.stable_token,
            errcodes=(40002, 40013, 40125, 40164, 41002, 41004, 43002, 44002, 47001, 61024),
            success=_grant(),
            body=stable_body,
        ),
    ]


def _component() -> list[ApiRoute]:
    token_fields = ("component_appid", "component_appsecret", "component_verify_ticket")
    auth_fields = ("component_appid", "authorizer_appid", "authorizer_refresh_token")
    return [
        ApiRoute(
            path="/cgi-bin/component/api_component_token",
            method="POST",
            name="api_component_token",
            summary="获取令牌: verify ticket + secret → component_access_token (7200 s)",
            handler=platform_api.api_component_token,
            errcodes=(43002, 44002, 47001, 41002, 41004, 61011, 40125, 61006, 61005),
            success=obj(
                ["component_access_token", "expires_in"],
                {"component_access_token": _TOKEN, "expires_in": _LIFETIME},
            ),
            body=obj(list(token_fields), {k: _STRING for k in token_fields}, closed=False),
        ),
        ApiRoute(
            path="/cgi-bin/component/api_authorizer_token",
            method="POST",
            name="api_authorizer_token",
            summary="获取/刷新接口调用令牌: refresh token → authorizer token + a new refresh token",
            handler=platform_api.api_authorizer_token,
            errcodes=(*TOKEN_PREAMBLE, 61014, 44002, 47001, 41002, 61011, 61003, 61023),
            success=obj(
                ["authorizer_access_token", "expires_in", "authorizer_refresh_token"],
                {
                    "authorizer_access_token": _TOKEN,
                    "expires_in": _LIFETIME,
                    "authorizer_refresh_token": _STRING,
                },
            ),
            body=obj(list(auth_fields), {k: _STRING for k in auth_fields}, closed=False),
            query=("component_access_token",),
        ),
    ]


def _quota() -> list[ApiRoute]:
    token_codes = (*TOKEN_PREAMBLE, 40164, 44002, 47001, 48001)
    counts = obj(
        ["daily_limit", "used", "remain"], {k: _COUNT for k in ("daily_limit", "used", "remain")}
    )
    return [
        ApiRoute(
            path="/cgi-bin/clear_quota",
            method="POST",
            name="clear_quota",
            summary="清空api的调用quota: today's counters of the account → 0 (10 a month)",
            handler=quota_api.clear_quota,
            errcodes=(*token_codes, 41002, 40013, 48006),
            success=obj(["errcode", "errmsg"], _OK_PROPS),
            body=obj(["appid"], {"appid": _STRING}, closed=False),
            query=("access_token",),
        ),
        ApiRoute(
            path="/cgi-bin/openapi/quota/get",
            method="POST",
            name="quota_get",
            summary="查询openAPI调用quota: the daily limit, calls used and left for one API",
            handler=quota_api.quota_get,
            errcodes=(*token_codes, 76003, 76021, 76022),
            success=obj(["errcode", "errmsg", "quota"], {**_OK_PROPS, "quota": counts}),
            body=obj(["cgi_path"], {"cgi_path": _STRING}, closed=False),
            query=("access_token",),
        ),
    ]


API: tuple[ApiRoute, ...] = (
    *(_datacube(ep) for ep in ENDPOINTS),
    *_credentials(),
    *_component(),
    *_quota(),
)
BY_PATH: dict[str, ApiRoute] = {r.path: r for r in API}


def routes() -> list[Route]:
    """Every WeChat path routed for every method, so a wrong one gets WeChat's errcode."""
    return [Route(r.path, endpoint(r.handler), methods=ALL_METHODS, name=r.name) for r in API]


def errcode_markdown() -> str:
    """The docs' tables: the errcodes each path can answer, then what each one says."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for r in API:
        groups.setdefault(r.answerable, []).append(f"`{r.method} {r.path}`")
    lines = ["| Path | errcodes |", "|---|---|"]
    lines += [
        f"| {'<br>'.join(paths)} | {', '.join(map(str, codes))} |"
        for codes, paths in groups.items()
    ]
    used = sorted({c for r in API for c in r.answerable})
    lines += ["", "| errcode | errmsg (then ` rid: …`) |", "|---|---|"]
    lines += [f"| {c} | `{ERRMSG[c]}` |" for c in used]
    return "\n".join(lines) + "\n"
