"""The app's one exception boundary: every exception a request raises is answered here.

``HANDLERS`` maps the exception tree of ``msgcube.errors`` (and faults: anything else)
to answers, by the family of the path:

* WeChat paths (``/cgi-bin/*``, ``/datacube/*``): always WeChat's envelope, HTTP 200,
  ``{"errcode", "errmsg": "... rid: <rid>"}``; a body over 64 KiB is 47001, a fault
  (a database down, a broken stored value, a bug) is ``-1 system error``;
* ``/admin/*``: ``{"error": ...}`` with 400 / 401 / 404 / 409 / 413, 500 for a fault;
* ``/dashboard/*``: JSON for its data API, a page for its forms, 500 for a fault;
* anything else (the callback, ``/healthz``): plain text.

A client that disconnects before its answer is not a fault: nothing is answered and
the access log says ``client-disconnected``. Faults are logged through ``FaultLog``:
the first with its traceback, then a count per interval until requests succeed again.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ExceptionHandler

from msgcube.errors import (
    ApiError,
    BodyTooLarge,
    NotFound,
    PlatformError,
    RequestRefused,
    SignInRequired,
)
from msgcube.web.dashboard.routes import refused_page
from msgcube.web.envelope import error_response
from msgcube.web.faults import faults

WECHAT_PREFIXES = ("/cgi-bin/", "/datacube/")
DASHBOARD_PREFIX = "/dashboard"
ADMIN_PREFIX = "/admin/"


def family(path: str) -> str:
    """``wechat``, ``admin``, ``dashboard`` or ``other``: who the answer is for."""
    if path.startswith(WECHAT_PREFIXES):
        return "wechat"
    if path.startswith(ADMIN_PREFIX):
        return "admin"
    if path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/"):
        return "dashboard"
    return "other"


def _json(content: Any, status: int) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _note(request: Request, errcode: int, detail: str | None) -> None:
    request.state.errcode = errcode
    if detail:
        request.state.detail = detail


def _wechat(request: Request, exc: ApiError) -> Response:
    _note(request, exc.errcode, exc.detail)
    return error_response(exc, request.state.rid)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    where = family(request.url.path)
    if where == "wechat":
        return _wechat(request, exc)
    _note(request, exc.errcode, exc.detail)
    if where == "admin":
        return _json({"error": exc.errmsg}, 400)
    body: dict[str, Any] = {"errcode": exc.errcode, "errmsg": exc.errmsg}
    if exc.detail:
        body["detail"] = exc.detail
    return _json(body, 400)


async def on_body_too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    where = family(request.url.path)
    if where == "wechat":
        return _wechat(request, ApiError(47001, f"body over {exc.limit // 1024} KiB"))
    if where == "admin":
        return _json({"error": "request body too large"}, 413)
    return PlainTextResponse("request body too large", status_code=413)


async def on_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRefused)
    where = family(request.url.path)
    if where == "dashboard":
        if isinstance(exc, SignInRequired):
            return _json({"errcode": 41001, "errmsg": exc.message}, exc.status)
        return await refused_page(request, exc)  # the dashboard renders its own pages
    if where == "wechat":
        return await on_fault(request, exc)
    return _json({"error": exc.message}, exc.status)


async def on_not_found(request: Request, exc: Exception) -> Response:
    if family(request.url.path) == "wechat":
        return await on_fault(request, exc)
    return _json({"error": str(exc)}, 404)


async def on_platform_error(request: Request, exc: Exception) -> Response:
    if family(request.url.path) == "wechat":
        return await on_fault(request, exc)
    return _json({"error": str(exc)}, 400)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: nothing to report, nobody reads the answer
    (499, nginx's "client closed request", if the server still writes it)."""
    request.state.disconnected = True
    return Response(status_code=499)


async def on_fault(request: Request, exc: Exception) -> Response:
    """Anything the tree does not name: a fault of msgcube or of what it depends on."""
    where = family(request.url.path)
    if where == "admin" and isinstance(exc, ValueError):
        return _json({"error": str(exc)}, 400)  # a value the admin API was given
    faults.failed(f"{where} requests", exc)
    rid = request.state.rid
    if where == "wechat":
        return _wechat(request, ApiError(-1, type(exc).__name__))
    _note(request, -1, type(exc).__name__)
    if where == "admin" or request.url.path.startswith(DASHBOARD_PREFIX + "/api/"):
        return _json({"error": "internal error", "rid": rid}, 500)
    return PlainTextResponse(f"internal error rid: {rid}", status_code=500)


HANDLERS: dict[Any, ExceptionHandler] = {
    ApiError: on_api_error,
    BodyTooLarge: on_body_too_large,
    RequestRefused: on_refused,
    NotFound: on_not_found,
    PlatformError: on_platform_error,
    ClientDisconnect: on_disconnect,
    Exception: on_fault,
}
"""The boundary, registered once by ``create_app``."""


def answered(path: str) -> None:
    """A request on ``path`` was answered without a fault: close its family's streak."""
    if faults.failing:
        faults.succeeded(f"{family(path)} requests")
