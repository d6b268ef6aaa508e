"""``Client`` and ``AsyncClient``: every datacube endpoint, any date range, one token.

Both are driven by the endpoint table: one method per row of ``ENDPOINTS``, named after
WeChat's cloud-call name (``getUpstreamMsgDistWeek`` → ``get_upstream_msg_dist_week``),
so an endpoint added to the table gets its method, its window splitting and its sync
table without touching this file. ``fetch(name, begin, end)`` is the generic form;
``call`` makes exactly one request (no splitting), for callers that plan their own windows.

A range is split into the fewest calls the endpoint's max span allows
(``call_plan.plan_windows``), capped at yesterday in the account's time zone (the
``clock`` is a seam for tests), and the rows come back merged in WeChat's order.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import httpx

from msgcube.client.call_plan import (
    DateLike,
    Row,
    as_date,
    as_endpoint,
    plan_windows,
    sort_rows,
)
from msgcube.client.errors import ClientError
from msgcube.client.protocol import (
    DEFAULT_BASE_URL,
    JSON_HEADERS,
    USER_AGENT,
    Attempts,
    Backoff,
    decode,
    http_url,
    join_url,
    json_body,
    network_error,
    rows_of,
)
from msgcube.client.tokens import (
    AsyncCallableTokenProvider,
    AsyncTokenProvider,
    CredentialTokenProvider,
    TokenApi,
    TokenCache,
    TokenProvider,
    is_async_provider,
    token_provider,
)
from msgcube.domain.endpoints import ENDPOINTS, SPAN_PROFILES, Endpoint
from msgcube.domain.periods import DEFAULT_TZ, local_today, zone
from msgcube.domain.windows import Window

Clock = Callable[[], datetime]
"""Returns the current time as an aware ``datetime`` (a seam: tests pin it)."""


def method_name(ep: Endpoint) -> str:
    """``getUpstreamMsgDistWeek`` → ``get_upstream_msg_dist_week``."""
    camel = ep.cloud_name.rsplit(".", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Base:
    """Configuration and bookkeeping shared by both clients (no I/O)."""

    def __init__(
        self,
        *,
        appid: str | None,
        base_url: str,
        span_profile: str,
        tz: str,
        clock: Clock | None,
        token_retries: int,
        backoff: Backoff | None,
        rng: random.Random | None,
    ) -> None:
        if span_profile not in SPAN_PROFILES:
            raise ValueError(f"span_profile must be one of {SPAN_PROFILES}, not {span_profile!r}")
        zone(tz)  # KeyError now rather than at the first call
        if token_retries < 0:
            raise ValueError("token_retries must be ≥ 0")
        self.appid = appid
        self.base_url = http_url(base_url).rstrip("/")
        self.span_profile = span_profile
        self.tz = tz
        self._clock = clock or _utc_now
        self.token_retries = token_retries
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._counts_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        """HTTP requests made per datacube path (retries included): what the quota sees."""

    def today(self) -> date:
        """The account's local date now: "yesterday" and ended periods are relative to it."""
        return local_today(self._clock(), self.tz)

    def windows(self, endpoint: str | Endpoint, begin: DateLike, end: DateLike) -> list[Window]:
        """The calls ``fetch`` would make for ``[begin, end]`` (none when nothing is due)."""
        return plan_windows(endpoint, begin, end, today=self.today(), profile=self.span_profile)

    def _count(self, path: str) -> None:
        with self._counts_lock:
            self.calls[path] += 1

    def _request(self, ep: Endpoint, begin: date, end: date, token: str) -> httpx.Request:
        body = {"begin_date": begin.isoformat(), "end_date": end.isoformat()}
        return httpx.Request(
            "POST",
            join_url(self.base_url, ep.path),
            params={"access_token": token},
            content=json_body(body),
            headers=JSON_HEADERS,
        )


class Client(_Base):
    """Blocking client. Thread-safe: ``msgcube.client.sync`` fetches windows from a pool.

    Credentials: ``appid`` + ``secret`` (tokens from ``stable_token``, or ``/cgi-bin/token``
    with ``token_api="token"``, shared through ``token_cache`` — by default a file cache
    in the user's cache directory), or ``token=``: a ``TokenProvider``, a function
    returning a token (e.g. a third-party platform's authorizer token) or a token string.
    """

    def __init__(
        self,
        appid: str | None = None,
        secret: str | None = None,
        *,
        token: TokenProvider | Callable[[], str] | str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        token_api: TokenApi = "stable_token",  # noqa: S107 - an API name, not a secret
        token_cache: TokenCache | None = None,
        span_profile: str = "classic",
        tz: str = DEFAULT_TZ,
        clock: Clock | None = None,
        token_retries: int = 2,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            appid=appid,
            base_url=base_url,
            span_profile=span_profile,
            tz=tz,
            clock=clock,
            token_retries=token_retries,
            backoff=backoff,
            rng=rng,
        )
        self._sleep = sleep
        self._owns_http = http is None
        self._http = http or httpx.Client(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )
        self._owned_provider: CredentialTokenProvider | None = None
        if token is not None:
            self.tokens: TokenProvider = token_provider(token)
        elif appid and secret:
            self._owned_provider = CredentialTokenProvider(
                appid,
                secret,
                base_url=self.base_url,
                api=token_api,
                cache=token_cache,
                http=self._http,
                backoff=self.backoff,
                sleep=sleep,
                rng=self._rng,
            )
            self.tokens = self._owned_provider
        else:
            self.close()
            raise ValueError("give appid and secret, or token=")

    if TYPE_CHECKING:
        # The per-endpoint methods are generated from ENDPOINTS below.
        def __getattr__(self, name: str) -> Callable[[DateLike, DateLike], list[Row]]: ...

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def fetch(self, endpoint: str | Endpoint, begin: DateLike, end: DateLike) -> list[Row]:
        """Every row ``endpoint`` reports for ``[begin, end]``, however long the range."""
        ep = as_endpoint(endpoint)
        rows: list[Row] = []
        for window in self.windows(ep, begin, end):
            rows.extend(self.call(ep, window.begin, window.end))
        return sort_rows(ep, rows)

    def call(self, endpoint: str | Endpoint, begin: DateLike, end: DateLike) -> list[Row]:
        """Exactly one datacube request (plus retries), no splitting and no capping."""
        ep = as_endpoint(endpoint)
        first, last = as_date(begin), as_date(end)
        attempts = Attempts(self.token_retries, self.backoff, self._rng)
        token = self.tokens.get_token()
        while True:
            try:
                return self._call_once(ep, first, last, token)
            except ClientError as exc:
                retry = attempts.next(exc)
                if retry is None:
                    raise
                if retry.refresh_token:
                    self.tokens.invalidate(token)
                    fresh = self.tokens.get_token()
                    if fresh == token:
                        raise  # the provider has nothing better: retrying would only repeat
                    token = fresh
                else:
                    self._sleep(retry.delay)
                    token = self.tokens.get_token()

    def _call_once(self, ep: Endpoint, begin: date, end: date, token: str) -> list[Row]:
        self._count(ep.path)
        try:
            response = self._http.send(self._request(ep, begin, end, token))
        except httpx.TransportError as exc:
            raise network_error(exc, ep.path) from None
        return rows_of(decode(response, ep.path), ep.path)


class _ThreadedTokens:
    """A blocking ``TokenProvider`` used from the event loop (its file lock and its HTTP
    call run in a worker thread; they happen about once per two hours)."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    async def get_token(self) -> str:
        return await asyncio.to_thread(self.provider.get_token)

    async def invalidate(self, token: str) -> None:
        await asyncio.to_thread(self.provider.invalidate, token)


class AsyncClient(_Base):
    """Asyncio client: like ``Client``, and windows are fetched ``concurrency`` at a time.

    Token providers may be async (``AsyncTokenProvider``, or a coroutine function for
    ``token=``) or blocking (run in a worker thread). With ``appid`` + ``secret`` the
    token calls use a blocking ``httpx.Client`` over ``token_transport`` (by default
    ``transport`` when that is also a blocking transport, as ``httpx.MockTransport`` is).
    """

    def __init__(
        self,
        appid: str | None = None,
        secret: str | None = None,
        *,
        token: TokenProvider
        | AsyncTokenProvider
        | Callable[[], str]
        | Callable[[], Awaitable[str]]
        | str
        | None = None,
        base_url: str = DEFAULT_BASE_URL,
        token_api: TokenApi = "stable_token",  # noqa: S107 - an API name, not a secret
        token_cache: TokenCache | None = None,
        span_profile: str = "classic",
        tz: str = DEFAULT_TZ,
        clock: Clock | None = None,
        token_retries: int = 2,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeout: float = 30.0,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        token_transport: httpx.BaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            appid=appid,
            base_url=base_url,
            span_profile=span_profile,
            tz=tz,
            clock=clock,
            token_retries=token_retries,
            backoff=backoff,
            rng=rng,
        )
        if concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")
        self.concurrency = concurrency
        self._sleep = sleep
        self._owned_provider: CredentialTokenProvider | None = None
        self.tokens: AsyncTokenProvider
        if token is not None:
            self.tokens = self._async_provider(token)
        elif appid and secret:
            if token_transport is None and isinstance(transport, httpx.BaseTransport):
                token_transport = transport
            self._owned_provider = CredentialTokenProvider(
                appid,
                secret,
                base_url=self.base_url,
                api=token_api,
                cache=token_cache,
                transport=token_transport,
                timeout=timeout,
                backoff=self.backoff,
                rng=self._rng,
            )
            self.tokens = _ThreadedTokens(self._owned_provider)
        else:
            raise ValueError("give appid and secret, or token=")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    @staticmethod
    def _async_provider(token: Any) -> AsyncTokenProvider:
        if is_async_provider(token):
            provider: AsyncTokenProvider = token
            return provider
        if callable(token) and inspect.iscoroutinefunction(token):
            return AsyncCallableTokenProvider(token)
        return _ThreadedTokens(token_provider(token))

    if TYPE_CHECKING:

        def __getattr__(
            self, name: str
        ) -> Callable[[DateLike, DateLike], Awaitable[list[Row]]]: ...

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
        if self._owned_provider is not None:
            self._owned_provider.close()

    async def fetch(self, endpoint: str | Endpoint, begin: DateLike, end: DateLike) -> list[Row]:
        """Every row for ``[begin, end]``; windows run ``concurrency`` at a time.

        The first failing window cancels the others and its error is raised as is (not
        wrapped in an exception group).
        """
        ep = as_endpoint(endpoint)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(window: Window) -> list[Row]:
            async with gate:
                return await self.call(ep, window.begin, window.end)

        tasks = [asyncio.ensure_future(one(w)) for w in self.windows(ep, begin, end)]
        try:
            parts = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return sort_rows(ep, (row for part in parts for row in part))

    async def call(self, endpoint: str | Endpoint, begin: DateLike, end: DateLike) -> list[Row]:
        """Exactly one datacube request (plus retries), no splitting and no capping."""
        ep = as_endpoint(endpoint)
        first, last = as_date(begin), as_date(end)
        attempts = Attempts(self.token_retries, self.backoff, self._rng)
        token = await self.tokens.get_token()
        while True:
            try:
                return await self._call_once(ep, first, last, token)
            except ClientError as exc:
                retry = attempts.next(exc)
                if retry is None:
                    raise
                if retry.refresh_token:
                    await self.tokens.invalidate(token)
                    fresh = await self.tokens.get_token()
                    if fresh == token:
                        raise
                    token = fresh
                else:
                    await self._sleep(retry.delay)
                    token = await self.tokens.get_token()

    async def _call_once(self, ep: Endpoint, begin: date, end: date, token: str) -> list[Row]:
        self._count(ep.path)
        try:
            response = await self._http.send(self._request(ep, begin, end, token))
        except httpx.TransportError as exc:
            raise network_error(exc, ep.path) from None
        return rows_of(decode(response, ep.path), ep.path)


def _endpoint_methods(
    ep: Endpoint,
) -> tuple[Callable[..., list[Row]], Callable[..., Awaitable[list[Row]]]]:
    def sync_method(self: Client, begin: DateLike, end: DateLike) -> list[Row]:
        return self.fetch(ep, begin, end)

    async def async_method(self: AsyncClient, begin: DateLike, end: DateLike) -> list[Row]:
        return await self.fetch(ep, begin, end)

    return sync_method, async_method


def _install_endpoint_methods() -> None:
    """One method per row of ``ENDPOINTS`` on both clients."""
    for ep in ENDPOINTS:
        name = method_name(ep)
        doc = (
            f"{ep.title_en} ({ep.title_zh}): the rows of ``{ep.path}`` for [begin, end],\n"
            f"fetched in as few calls as its max span allows. Fields: {', '.join(ep.fields)}."
        )
        sync_method, async_method = _endpoint_methods(ep)
        for cls, method in ((Client, sync_method), (AsyncClient, async_method)):
            method.__name__ = name
            method.__qualname__ = f"{cls.__name__}.{name}"
            method.__doc__ = doc
            setattr(cls, name, method)


_install_endpoint_methods()
