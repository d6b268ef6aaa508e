"""The access log: one line per answered request, and the escaping of what it echoes.

``RequestLog`` gives every request its rid (``request.state.rid``) and, once the request
is answered, writes method, path, status, errcode, time, rid and any detail. Paths,
details and other request data are written through ``printable``, so a ``%0A`` in a
path or a ``\\n`` in a JSON field cannot forge a log line. Tokens and secrets are never
logged: the query string is not written.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msgcube.web.envelope import new_rid

log = logging.getLogger("msgcube.access")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """``text`` on one line: control characters, line separators and ``\\`` escaped.

    Every log line that echoes request data (paths, appids, errcode details) goes through
    here; other text is unchanged, so Chinese and other printable characters stay legible.
    """
    return _UNSAFE.sub(_escape, text)


class RequestLog:
    """Assigns ``request.state.rid`` and logs each request once it is answered.

    The exception handlers (``web/boundary.py``) note ``errcode``, ``detail`` and
    ``disconnected`` in the request's state; a fault that ends a streak of them is
    reported recovered by the first answer that follows (see ``web/faults.py``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_all: bool = False,
        answered: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.log_all = log_all
        self.answered = answered

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
            disconnected = state.get("disconnected", False)
            if self.answered is not None and status < 500 and errcode != -1:
                self.answered(scope["path"])
            # Successful requests are only logged with access_log=all: a log line per
            # request costs more than a cached answer (bench/RESULTS.md); every answer
            # that carries a rid is logged.
            wanted = self.log_all or errcode or status >= 400 or disconnected
            if wanted and log.isEnabledFor(logging.INFO):
                detail = state.get("detail")
                log.info(
                    "%s %s %s errcode=%s %.1fms rid=%s%s",
                    printable(scope["method"]),
                    printable(scope["path"]),
                    "client-disconnected" if disconnected else status,
                    errcode,
                    (time.perf_counter() - started) * 1000,
                    rid,
                    f" ({printable(detail)})" if detail else "",
                )
