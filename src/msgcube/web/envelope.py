"""WeChat's response conventions, in one place.

Every errcode answer is HTTP 200 with ``{"errcode": N, "errmsg": "<text> rid: <rid>"}`` and
``Content-Type: application/json; encoding=utf-8`` (WeChat's own header, quirk included).
The rid — three groups of eight hex digits, the first the request's Unix time — is also
in the server's log line for that request, so a user quoting an error can be found.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from starlette.responses import Response

from msgcube.errors import ApiError

JSON_TYPE = "application/json; encoding=utf-8"


def new_rid() -> str:
    random = os.urandom(8).hex()
    return f"{int(time.time()) & 0xFFFFFFFF:08x}-{random[:8]}-{random[8:]}"


class JSONBody(Response):
    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def error_response(exc: ApiError, rid: str) -> JSONBody:
    return JSONBody({"errcode": exc.errcode, "errmsg": f"{exc.errmsg} rid: {rid}"})


def ok_response(content: Any) -> JSONBody:
    return JSONBody(content)
