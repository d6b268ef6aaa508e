"""Running the app under uvicorn (``msgcube serve``, ``msgcube demo``).

With several workers uvicorn starts fresh processes that import ``app_from_env``; the
parent passes its resolved settings down as ``MSGCUBE_*`` variables, so every worker
sees exactly what the command line said. Every mode runs with uvicorn's proxy-header
handling off: only msgcube's ``trusted_proxies`` decides whose ``X-Forwarded-For`` counts.
"""

from __future__ import annotations

import functools
import gc
import logging
import os

import uvicorn
from starlette.applications import Starlette

from msgcube.errors import ConfigError
from msgcube.settings import Settings, use_packaged_rules
from msgcube.storage.db import open_store
from msgcube.web.app import create_app


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("msgcube").setLevel(level.upper())
    # httpx logs each request's full URL at INFO — a platform's ticket URL with its signed
    # query, and any ``user:password@`` in it. msgcube logs its own line per ticket push.
    httpx_level = max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()])
    logging.getLogger("httpx").setLevel(httpx_level)


def export_settings(settings: Settings) -> None:
    """Put every resolved setting into the environment for worker processes."""
    os.environ.update(settings.environment())
    os.environ["MSGCUBE_CONFIG"] = os.devnull  # the environment is now complete


def freeze_startup_objects() -> None:
    """Move everything built at startup (modules, SQLAlchemy's metadata, the app) out of
    the garbage collector's reach.

    Those ≈ 90,000 objects live as long as the process, yet every full collection walks
    them all: ≈ 10–30 ms on the event loop's thread, during which every request in flight
    waits (bench/RESULTS.md, "API p99"). Frozen, a full collection only walks what
    requests allocated since. Nothing is leaked: frozen objects are never garbage.
    """
    gc.collect()
    gc.freeze()


def app_from_env() -> Starlette:
    use_packaged_rules()
    settings = Settings.load({})
    configure_logging(settings.log_level)
    app = create_app(
        settings, open_store(settings.db_url, analytics=settings.analytics_db), background=True
    )
    freeze_startup_objects()
    return app


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    run = functools.partial(
        uvicorn.run,
        host=settings.host,
        port=settings.port,
        access_log=False,  # msgcube logs each request itself, with its rid
        log_level=settings.log_level,
        timeout_keep_alive=30,
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the
        # client address before msgcube sees it; ``trusted_proxies`` (web/request_checks.py
        # ``client_ip``) is the only place that decides which proxies are believed.
        proxy_headers=False,
        forwarded_allow_ips="",
    )
    if settings.workers > 1:
        if settings.analytics_db is not None and settings.analytics_db.kind == "chdb":
            raise ConfigError(
                "analytics_db chdb:// is embedded in one process: serve it with --workers 1,"
                " or use a ClickHouse server (clickhouse://) for several workers"
            )
        export_settings(settings)
        run("msgcube.web.server:app_from_env", factory=True, workers=settings.workers)
        return
    app = create_app(
        settings, open_store(settings.db_url, analytics=settings.analytics_db), background=True
    )
    freeze_startup_objects()
    run(app)
