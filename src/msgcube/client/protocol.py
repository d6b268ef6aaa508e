"""The I/O-free half of a call: building requests, reading answers, deciding retries.

``Client`` and ``AsyncClient`` differ only in how they wait (``httpx.Client`` vs
``httpx.AsyncClient``, ``time.sleep`` vs ``asyncio.sleep``). Everything they must agree
on — the exact request WeChat documents, what counts as an error, when to refresh the
token and when to back off — lives here once, so the two cannot drift apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from msgcube.client.errors import (
    InvalidCredential,
    NetworkError,
    ResponseError,
    SystemBusy,
    TokenExpired,
    WeChatError,
)
from msgcube.domain.urls import http_url_parts

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
USER_AGENT = "msgcube-client/0.1"
JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": USER_AGENT}

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""Statuses a gateway in front of WeChat (or msgcube) answers when it is briefly unwell."""


def http_url(url: str, what: str = "base URL") -> str:
    """``url`` if msgcube can call it (``domain.urls``: http or https, a host, a valid
    port, and what httpx accepts), else ``ValueError`` saying why."""
    http_url_parts(url, what)
    try:
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"invalid {what} {url!r}: {exc}") from None
    return url


def join_url(base_url: str, path: str) -> str:
    """``base_url`` (possibly with a path prefix, e.g. behind a proxy) + an API path."""
    return base_url.rstrip("/") + path


def json_body(body: dict[str, Any]) -> bytes:
    """Compact JSON, the way WeChat's own examples send it."""
    return orjson.dumps(body)


def decode(response: httpx.Response, api: str) -> dict[str, Any]:
    """The JSON object of a WeChat answer, or ``ResponseError``.

    WeChat answers errors with HTTP 200, so any other status means something between us
    and WeChat (a proxy, a wrong base_url) failed; its body is not a WeChat answer.
    """
    if response.status_code != 200:
        raise ResponseError(
            f"HTTP {response.status_code} from {api} (not a WeChat answer; check base_url)",
            status=response.status_code,
            api=api,
        )
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ResponseError(f"{api} answered with a body that is not JSON", api=api) from None
    if not isinstance(body, dict):
        raise ResponseError(f"{api} answered with JSON that is not an object", api=api)
    return body


def raise_for_errcode(body: dict[str, Any], api: str) -> None:
    """Raise the typed ``WeChatError`` of an error body; success bodies pass.

    Datacube successes carry no errcode at all; other APIs send ``"errcode": 0``.
    """
    errcode = body.get("errcode")
    if errcode not in (None, 0):
        raise WeChatError.from_body(body, api=api)


def rows_of(body: dict[str, Any], api: str) -> list[dict[str, Any]]:
    """The ``list`` of a datacube success body."""
    raise_for_errcode(body, api)
    rows = body.get("list")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ResponseError(f"{api} answered without a list of rows", api=api)
    return rows


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, for ``-1 system error`` and flaky transports.

    Retry ``n`` (from 0) waits between half and all of ``min(cap, base * 2**n)``: the
    jitter keeps many workers that failed together from retrying together, the lower
    half keeps the wait meaningful. ``retries`` bounds the attempts: WeChat being busy
    for long is reported, not waited out forever.
    """

    retries: int = 4
    base: float = 0.5
    cap: float = 8.0

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * 2.0**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + rng.random() * ceiling / 2


NO_BACKOFF = Backoff(retries=0)


@dataclass(frozen=True, slots=True)
class Retry:
    """What to do before the next attempt: refresh the token, or wait ``delay`` seconds."""

    refresh_token: bool
    delay: float


class Attempts:
    """The retry budget of one call: token refreshes and backoffs are counted separately.

    40001/42001 mean *our token* is bad (superseded by another process, expired): a fresh
    token fixes it, so it is retried at once, at most ``token_retries`` times — a wrong
    secret or a revoked authorization must surface, not loop. ``-1`` and transport
    failures are retried with backoff. Everything else is final.
    """

    def __init__(self, token_retries: int, backoff: Backoff, rng: random.Random) -> None:
        self.token_retries = token_retries
        self.backoff = backoff
        self.rng = rng
        self.refreshes = 0
        self.backoffs = 0

    def next(self, exc: BaseException) -> Retry | None:
        """How to retry after ``exc``, or ``None`` when the call should fail with it."""
        if isinstance(exc, InvalidCredential | TokenExpired):
            if self.refreshes >= self.token_retries:
                return None
            self.refreshes += 1
            return Retry(refresh_token=True, delay=0.0)
        if _is_transient(exc):
            if self.backoffs >= self.backoff.retries:
                return None
            delay = self.backoff.delay(self.backoffs, self.rng)
            self.backoffs += 1
            return Retry(refresh_token=False, delay=delay)
        return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NetworkError):
        return not exc.refused  # a wrong URL or a stopped server: say so now, not in 24 s
    if isinstance(exc, SystemBusy):
        return True
    return isinstance(exc, ResponseError) and exc.status in RETRYABLE_STATUS


def network_error(exc: httpx.TransportError, api: str) -> NetworkError:
    """Our exception for a transport failure, without the URL (it carries the token)."""
    return NetworkError(
        f"{type(exc).__name__} calling {api}: {exc}", api=api, refused=_refused(exc)
    )


def _refused(exc: BaseException) -> bool:
    """True when the connection was refused (httpx wraps the OS error twice)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
