"""The relay's HTTP/1.1 client: h11 on asyncio connections kept alive per upstream origin.

Why not ``httpx.AsyncClient``: on the bench machine one call through it costs ≈ 0.9 ms of
CPU (its request and response models, httpcore's pool, anyio's cancel scopes; without
the optional ``sniffio`` httpcore even retries a failed import on every call) — most of
the relay's 2 ms budget. Here a call costs ≈ 0.15 ms. h11 does the protocol (framing,
chunked bodies, the keep-alive rules of both sides); this module only holds the sockets:

- one ``_Link`` (an ``asyncio.Protocol``) per connection, one request in flight on it;
- idle links per origin (scheme, host, port), reused most recent first, dropped when
  the upstream closed them, sent bytes unasked, or sat idle past ``keepalive`` seconds;
- a link whose exchange failed or was cancelled (``relay_timeout``) is closed, never
  reused; nothing is retried (WeChat retries).

Bytes go out as given: the request target, the header values (latin-1 text as received)
and the body. The caller bounds concurrency and time.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass

import certifi
import h11
import httpx

from msgcube.errors import UpstreamFailed

Headers = list[tuple[bytes, bytes]]

CUT_SHORT = "upstream unreachable (connection closed before a complete answer)"


@dataclass(frozen=True, slots=True)
class Origin:
    """An upstream URL parsed once: where to connect and the fixed parts of each request.

    ``target`` is the URL's own path and query; ``authorization`` the Basic credentials
    of a ``user:password@`` in the URL (as httpx sent them), if any.
    """

    scheme: str
    host: str
    port: int
    host_header: bytes
    target: bytes
    authorization: bytes | None

    @classmethod
    def of(cls, url: str) -> Origin:
        parsed = httpx.URL(url)  # IDNA hosts, default ports, percent-encoding of the path
        tls = parsed.scheme == "https"
        authorization = None
        if parsed.userinfo:
            pair = f"{parsed.username}:{parsed.password}".encode()
            authorization = b"Basic " + base64.b64encode(pair)
        return cls(
            scheme=parsed.scheme,
            host=parsed.raw_host.decode("ascii"),
            port=parsed.port or (443 if tls else 80),
            host_header=parsed.netloc,
            target=parsed.raw_path,
            authorization=authorization,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream's complete answer: status, headers (names lowercased), body bytes."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Link(asyncio.Protocol):
    """One keep-alive connection: bytes in are fed to h11 while a request is in flight.

    ``live`` is the pool's set of connections not yet lost: the link is in it from the
    moment it connected (TLS handshake done) until the transport reports it closed, so a
    closing TLS connection (still exchanging close_notify) is waited for at shutdown.
    """

    def __init__(self, live: set[_Link]) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._live = live
        self.idle_since = 0.0
        self.broken = False  # closed, reset, or sent bytes nobody asked for
        self._busy = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.broken = True  # an idle upstream has nothing to say: never reuse it
            return
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self.broken = True
        if self._busy:
            self.h11.receive_data(b"")
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._live.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self, method: bytes, target: bytes, headers: Headers, body: bytes, max_body: int
    ) -> Answer:
        """Send one request and read its whole answer (``UpstreamFailed`` over ``max_body``)."""
        assert self.transport is not None
        conn = self.h11
        self._busy = True
        out = conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            out += conn.send(h11.Data(data=body))
        self.transport.write(out + conn.send(h11.EndOfMessage()))
        status, answer_headers, chunks, size = 0, [], [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if self.broken:  # reset or closed before the answer was complete
                    raise UpstreamFailed(
                        "upstream unreachable (connection closed before a complete answer)"
                    )
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            elif isinstance(event, h11.Response):
                status, answer_headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise UpstreamFailed(f"upstream answer over {max_body} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._busy = False
                return Answer(status, answer_headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed(
                    "upstream unreachable (connection closed before a complete answer)"
                )
            # h11.InformationalResponse (100 Continue …): the final answer follows

    def reusable(self) -> bool:
        """Ready for the next request (h11 says both sides keep the connection)."""
        conn = self.h11
        if self.broken or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True


class Http11Pool:
    """Keep-alive HTTP/1.1 connections per origin; ``request`` sends one and reads the answer."""

    def __init__(self, *, keepalive: float = 60.0, tls: ssl.SSLContext | None = None) -> None:
        self.keepalive = keepalive
        self._idle: dict[tuple[str, str, int], list[_Link]] = {}
        self._live: set[_Link] = set()
        self._tls = tls

    def tls(self) -> ssl.SSLContext:
        """The TLS context: the one given, else certifi's CA bundle (loaded once: that
        takes milliseconds)."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        *,
        max_body: int,
    ) -> Answer:
        """The upstream's answer; ``OSError``, ``h11.ProtocolError`` or ``UpstreamFailed``."""
        key = (origin.scheme, origin.host, origin.port)
        link = self._reuse(key) or await self._connect(origin)
        try:
            answer = await link.exchange(method, target, headers, body, max_body)
        except BaseException:
            self._discard(link)
            raise
        if link.reusable():
            link.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(link)
        else:
            self._discard(link)
        return answer

    def _reuse(self, key: tuple[str, str, int]) -> _Link | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = time.monotonic() - self.keepalive
        while idle and idle[0].idle_since < stale:  # the oldest first: past keep-alive
            self._discard(idle.pop(0))
        while idle:
            link = idle.pop()  # the most recently used
            if not link.broken:
                return link
            self._discard(link)
        return None

    async def _connect(self, origin: Origin) -> _Link:
        tls = self.tls() if origin.scheme == "https" else None
        live = self._live
        _, link = await asyncio.get_running_loop().create_connection(
            lambda: _Link(live),
            origin.host,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls else None,
        )
        return link

    def _discard(self, link: _Link) -> None:
        link.close()  # it leaves ``_live`` when the transport reports it lost

    async def aclose(self, grace: float = 1.0) -> None:
        """Close every connection (idle, in use, or still closing) and wait until each is.

        A TLS connection closes only after close_notify went both ways; one that has not
        within ``grace`` seconds is aborted. Returning earlier would leave sockets for the
        garbage collector once the event loop is gone.
        """
        self._idle.clear()
        for attempt in range(2):
            links = list(self._live)
            if not links:
                return
            for link in links:
                if attempt == 0:
                    link.close()
                elif link.transport is not None:
                    link.transport.abort()
            await asyncio.wait([link.lost for link in links], timeout=grace)
