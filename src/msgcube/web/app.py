"""``create_app(settings, store)``: the ASGI application.

Routes come from the modules that own them: the WeChat-compatible API from its table
(``api_table``), ``callback.routes`` for WeChat's pushes (whose group committer the
lifespan runs), ``dashboard.routes`` for the web dashboard and ``admin.routes`` for the
admin API; the quota flusher and the ticket pusher run in the lifespan. ``RequestLog``
(``access_log``) gives every request its rid and one log line; every exception a request
raises is answered by the one boundary of ``boundary.HANDLERS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from msgcube.auth.quotas import QuotaCounter
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.web import (
    admin,
    api_table,
    boundary,
    callback,
    dashboard,
    platform_callback,
)
from msgcube.web.access_log import RequestLog
from msgcube.web.background import rollup_loop
from msgcube.web.context import AppContext
from msgcube.web.envelope import JSONBody
from msgcube.web.openapi import openapi_document
from msgcube.web.quota_flusher import quota_flusher
from msgcube.web.ticket_pusher import ticket_pusher


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
        async with callbacks.running(), quota_flusher(quotas):
            if not background:
                yield
                return
            async with rollup_loop(ctx), ticket_pusher(ctx):
                yield

    routes = [
        *callback.routes,  # first: pushes are the busiest path, and routes are tried in order
        *platform_callback.routes,
        *api_table.routes(),
        *dashboard.routes,
        *admin.routes,
        Route("/healthz", health),
        Route("/openapi.json", openapi),
        # A person opening the server's address wants the dashboard, not a 404.
        Route("/", lambda _request: RedirectResponse("/dashboard", status_code=302)),
    ]
    # The boundary is an ExceptionMiddleware of its own, inside RequestLog: Starlette
    # would hand an ``Exception`` handler given to ``exception_handlers`` to its
    # ServerErrorMiddleware, which answers and then re-raises to the server — one
    # uvicorn traceback per fault, the log flood the fault log exists to prevent.
    middleware = [
        Middleware(
            RequestLog,
            log_all=settings.access_log == "all",
            answered=boundary.answered,
        ),
        Middleware(ExceptionMiddleware, handlers=boundary.HANDLERS),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    # WeChat answers an unknown path (a trailing slash included) with 404. Starlette's
    # slash redirect would also echo the access_token back in a Location header.
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.callback = callbacks
    app.state.platform_callback = platform_callback.PlatformCallbackService(callbacks)
    app.state.quotas = quotas
    return app
