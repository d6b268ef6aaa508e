"""``create_app(settings, store)``: the ASGI application.

Routes come from the modules that own them (``datacube.routes`` from the endpoint
table, ``cgibin.routes`` for credentials, ``callback.routes`` for WeChat's pushes, whose
group committer the lifespan runs; ``dashboard.routes`` for the web dashboard;
``component``, ``quota`` and ``admin`` for third-party platforms, quotas and the admin
API, with the quota flusher and the ticket pusher in the lifespan). A
pure-ASGI middleware gives every request its rid and writes one log line per request —
method, path, status, errcode, time and the rid that also ends any errmsg (tokens and
secrets are never logged: the query string is not written).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msgcube.auth.quotas import QuotaCounter
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.web import (
    admin,
    callback,
    cgibin,
    component,
    dashboard,
    datacube,
    platform_callback,
    quota,
)
from msgcube.web.background import rollup_loop
from msgcube.web.context import AppContext
from msgcube.web.envelope import JSONBody, new_rid
from msgcube.web.openapi import openapi_document

log = logging.getLogger("msgcube.access")


class RequestLog:
    """Assigns ``request.state.rid`` and logs each request once it is answered."""

    def __init__(self, app: ASGIApp, *, log_all: bool = False) -> None:
        self.app = app
        self.log_all = log_all

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = new_rid()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["rid"] = rid
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            errcode = state.get("errcode", 0)
            # Successful requests are only logged with access_log=all: a log line per
            # request costs more than a cached answer (bench/RESULTS.md); every answer
            # that carries a rid is logged.
            if (self.log_all or errcode or status >= 400) and log.isEnabledFor(logging.INFO):
                detail = state.get("detail")
                log.info(
                    "%s %s %s errcode=%s %.1fms rid=%s%s",
                    scope["method"], scope["path"], status, errcode,
                    (time.perf_counter() - started) * 1000, rid,
                    f" ({detail})" if detail else "",
                )  # fmt: skip


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def openapi(request: Request) -> Response:
    return JSONBody(openapi_document())


def create_app(settings: Settings, store: Store, *, background: bool = False) -> Starlette:
    """The application. ``background`` runs the rollup loop (``msgcube serve`` does)."""
    ctx = AppContext(settings=settings, store=store)
    callbacks = callback.CallbackService(ctx)

    quotas = QuotaCounter(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The push committer and the quota flusher run whenever the app does; on shutdown
        # they commit what is queued / counted.
        async with callbacks.running(), quota.quota_flusher(quotas):
            if not background:
                yield
                return
            async with rollup_loop(ctx), component.ticket_pusher(ctx):
                yield

    routes = [
        *callback.routes,  # first: pushes are the busiest path, and routes are tried in order
        *platform_callback.routes,
        *datacube.routes,
        *cgibin.routes,
        *dashboard.routes,
        *component.routes,
        *quota.routes,
        *admin.routes,
        Route("/healthz", health),
        Route("/openapi.json", openapi),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # WeChat answers an unknown path (a trailing slash included) with 404. Starlette's
    # slash redirect would also echo the access_token back in a Location header.
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.callback = callbacks
    app.state.platform_callback = platform_callback.PlatformCallbackService(callbacks)
    app.state.quotas = quotas
    app.add_middleware(RequestLog, log_all=settings.access_log == "all")
    return app
