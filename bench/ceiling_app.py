"""The ceiling for ``bench/api.py``: minimal Starlette on uvicorn answering a fixed body.

It does what msgcube's datacube endpoints do at the HTTP level and nothing else: route
``POST /datacube/<name>``, read the request body, answer HTTP 200 with a fixed JSON body
and WeChat's ``Content-Type``. The bodies are msgcube's real answers to the benchmarked
requests (same sizes on the wire), read from the JSON file named by
``CEILING_BODIES`` (``{"getupstreammsg": "<body>", ...}``); any other name gets
``{"list":[]}``.

    CEILING_BODIES=bodies.json uvicorn ceiling_app:app --app-dir bench --workers 2
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON_TYPE = "application/json; encoding=utf-8"


def _load_bodies() -> dict[str, bytes]:
    path = os.environ.get("CEILING_BODIES")
    if not path:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {name: body.encode() for name, body in data.items()}


BODIES = _load_bodies()
EMPTY = b'{"list":[]}'


async def datacube(request: Request) -> Response:
    await request.body()
    body = BODIES.get(request.path_params["name"], EMPTY)
    return Response(body, media_type=JSON_TYPE)


async def healthz(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(
    routes=[
        Route("/datacube/{name}", datacube, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)
