"""The relay's HTTP/1.1 client: llhttp on asyncio connections kept alive per upstream origin.

Why not ``httpx.AsyncClient``: on the bench machine one call through it costs ≈ 0.9 ms of
CPU (its request and response models, httpcore's pool, anyio's cancel scopes; without
the optional ``sniffio`` httpcore even retries a failed import on every call) — most of
the relay's 2 ms budget. h11 (pure Python) took ≈ 53 µs per call for its framing alone;
llhttp, the C parser uvicorn reads requests with (``httptools``), reads an answer in
≈ 2 µs. llhttp does the protocol of the answer (status line, headers, Content-Length and
chunked bodies, interim 1xx answers, the keep-alive rules); this module writes the
request (its line and headers, checked for bytes that would break the framing), ends a
body without a length at EOF (llhttp's "finish", which httptools does not expose) and
holds the sockets:

- one ``_Link`` (an ``asyncio.Protocol``) per connection, one request in flight on it;
- idle links per origin (scheme, host, port), reused most recent first, dropped when
  the upstream closed them (a close the loop has not delivered yet included: the socket
  is asked), sent bytes unasked, or sat idle past ``keepalive`` seconds;
- a link whose exchange failed or was cancelled (``relay_timeout``) is closed, never
  reused; nothing is retried (WeChat retries);
- an answer's head (status line and headers, interim answers included) is bounded by
  ``MAX_HEAD``, its body by the caller's ``max_body``: llhttp sets no limit of its own,
  and within ``relay_timeout`` an upstream on a fast link can send gigabytes of headers.

Bytes go out as given: the request target, the header values (latin-1 text as received)
and the body. The caller bounds concurrency and time.
"""

from __future__ import annotations

import asyncio
import base64
import re
import select
import ssl
import time
from dataclasses import dataclass, field

import certifi
import httptools
import httpx

from msgcube.errors import UpstreamFailed

Headers = list[tuple[bytes, bytes]]

CUT_SHORT = "upstream unreachable (connection closed before a complete answer)"

MAX_HEAD = 64 << 10
"""Bytes of an answer's status lines and headers accepted (a bot sends a few hundred;
common servers refuse heads over 8–64 KiB); beyond it the exchange fails."""


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
        host = parsed.raw_host.decode("ascii")
        if ":" in host:  # an IPv6 literal: its zone is written %25 in a URL (RFC 6874)
            host = host.replace("%25", "%", 1)
        return cls(
            scheme=parsed.scheme,
            host=host,
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
    """One keep-alive connection: bytes in are fed to llhttp while a request is in flight.

    ``live`` is the pool's set of connections not yet lost: the link is in it from the
    moment it connected (TLS handshake done) until the transport reports it closed, so a
    closing TLS connection (still exchanging close_notify) is waited for at shutdown.
    The parser's callbacks (``on_header`` …) collect one answer; ``exchange`` waits for it.
    """

    def __init__(self, live: set[_Link]) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._live = live
        self.idle_since = 0.0
        self.broken = False  # closed, reset, or sent bytes nobody asked for
        self._busy = False
        self._waiter: asyncio.Future[None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer = _Reading(0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.broken = True  # an idle upstream has nothing to say: never reuse it
            return
        answer = self._answer
        if answer.error:
            return  # the exchange failed: the link is being closed, nothing more is read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer.fail("upstream unreachable (it switched protocols)")
        except httptools.HttpParserError as exc:
            if self._answer.done:
                self.broken = True  # junk after a complete answer: that answer stands
            else:
                self._answer.fail(f"upstream unreachable (not HTTP: {describe(exc)})")
        if not answer.head_done:
            # Still no final head after this chunk, so all of it was head: llhttp holds a
            # header line until it ends, so this is what bounds the memory an answer takes.
            answer.head_size += len(data)
            if answer.head_size > MAX_HEAD:
                answer.fail(f"upstream answer headers over {MAX_HEAD} bytes")
        self._wake()

    def eof_received(self) -> bool:
        self._closed_cleanly()
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._closed_cleanly()  # TLS: may end without an EOF of its own
        self.broken = True
        self._live.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def _closed_cleanly(self) -> None:
        """The upstream closed: a body without a length ends here (llhttp's "finish")."""
        self.broken = True
        answer = self._answer
        if self._busy and answer.until_close and not answer.done:
            answer.done = True

    # llhttp's callbacks, while an answer is read
    def on_message_begin(self) -> None:
        if self._answer.done:
            self.broken = True  # bytes after the answer, unasked: never reuse this link

    def on_header(self, name: bytes, value: bytes) -> None:
        self._answer.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        answer, status = self._answer, self._parser.get_status_code()
        answer.status = status
        if 100 <= status < 200:
            return  # an interim answer (100 Continue …): the final one follows
        answer.head_done = True
        codings = b",".join(v for n, v in answer.headers if n == b"transfer-encoding")
        if codings and codings.strip().lower() != b"chunked":
            # gzip & co. (asked for with none): the body would reach WeChat still coded,
            # and without chunked last, llhttp waits for the close (RFC 9112 §6.3).
            shown = codings[:80].decode("latin-1")
            answer.fail(f"upstream unreachable (unsupported transfer coding: {shown})")
            return
        framed = bool(codings) or any(name == b"content-length" for name, _ in answer.headers)
        answer.until_close = not framed and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        answer = self._answer
        answer.size += len(body)
        if answer.size > answer.max_body:
            answer.fail(f"upstream answer over {answer.max_body} bytes")
        elif answer.error is None:
            answer.chunks.append(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        if 100 <= answer.status < 200:
            answer.headers.clear()  # the interim answer's; the final answer's come next
            return
        answer.done = True
        answer.keep_alive = self._parser.should_keep_alive()

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
        request = _request_head(method, target, headers)
        answer = self._answer = _Reading(max_body)
        self._busy = True
        self.transport.writelines((request, body))
        while True:
            if answer.error:
                raise UpstreamFailed(answer.error)
            if answer.done:
                break
            if self.broken:  # reset or closed before the answer was complete
                raise UpstreamFailed(CUT_SHORT)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._busy = False
        return Answer(answer.status, answer.headers, b"".join(answer.chunks))

    def reusable(self) -> bool:
        """Ready for the next request: both sides keep the connection, nothing is pending."""
        return not self.broken and self._answer.done and self._answer.keep_alive

    def news_pending(self) -> bool:
        """Whether the kernel holds bytes or a close for this idle link that the event
        loop has not delivered yet.

        An upstream closes an idle connection when its own keep-alive ends (uvicorn's and
        Node's after 5 s, gunicorn's after 2 s); if the loop was busy when that close
        arrived, the link still looks alive, and the push sent on it would fail although
        the upstream is fine. Asking the socket (one ``poll``, a few µs) closes that gap;
        only a close that crosses the request on the wire is left, and WeChat retries that.
        """
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))


@dataclass(slots=True)
class _Reading:
    """The answer being read on a link: what llhttp's callbacks collected so far."""

    max_body: int
    status: int = 0
    headers: Headers = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False
    keep_alive: bool = False
    until_close: bool = False  # no Content-Length, not chunked: the body ends with EOF
    head_done: bool = False  # the final answer's headers are complete
    head_size: int = 0  # bytes received while they were not
    error: str | None = None  # why the answer cannot be passed on

    def fail(self, reason: str) -> None:
        if not self.error:
            self.error = reason


def _request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    """The request line and header block, refused (``UpstreamFailed``) if a byte would
    break the framing: a request target is visible ASCII, a header value has no CR, LF
    or NUL (RFC 9112 §3.2, §5.5)."""
    if not _TARGET.fullmatch(target):
        raise UpstreamFailed(f"relay error (request target not sendable: {target[:80]!r})")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if _UNSAFE_VALUE.search(value):
            raise UpstreamFailed(f"relay error (header {name.decode()} not sendable)")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


_TARGET = re.compile(rb"[\x21-\x7e]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\x00]")


def describe(exc: BaseException) -> str:
    """An exception in a failure reason: its type and the start of its text."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


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
        """The upstream's answer; ``OSError`` or ``UpstreamFailed``."""
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
            if not link.broken and not link.news_pending():
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
