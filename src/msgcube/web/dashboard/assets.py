"""Static files: the dashboard's own CSS/JS, and plotly.js from the installed ``plotly`` wheel.

The PyPI ``plotly`` package ships the plotly.js bundle as package data
(``plotly/package_data/plotly.min.js``). msgcube serves that file from where pip put it:
no CDN, nothing fetched at run time, no copy of third-party code in this repository.
It is read once, gzipped once, and served with a content hash in its URL so browsers may
cache it for a year.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


def plotly_path() -> Path:
    """``plotly.min.js`` inside the installed ``plotly`` package (imports nothing)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (pip install plotly)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed plotly package")
    return path


@lru_cache(maxsize=8)
def load(path: Path, media_type: str) -> Asset:
    body = path.read_bytes()
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag=hashlib.sha256(body).hexdigest()[:16],
        media_type=media_type,
    )


def plotly_asset() -> Asset:
    return load(plotly_path(), "text/javascript; charset=utf-8")


def own_asset(name: str) -> Asset | None:
    media = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    path = STATIC_DIR / name
    if "/" in name or path.suffix not in media or not path.is_file():
        return None
    return load(path, media[path.suffix])


def asset_response(request: Request, asset: Asset) -> Response:
    """The asset, gzipped when the browser takes it; 304 when its copy is current.

    URLs carry ``?v=<etag>``, so a copy may be kept for a year.
    """
    headers = {
        "ETag": f'"{asset.etag}"',
        "Cache-Control": "public, max-age=31536000, immutable",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
