"""Forwarding a verified push to the account's upstream, and answering WeChat with its answer.

``Relay.relay`` is what a callback route calls for an account (or platform) with an
upstream URL, once the gate has accepted the push: it starts storing the push (the
committer's coroutine, passed in) and forwarding it *concurrently*, and returns the
answer for WeChat once both are done:

- the commit failed → 500 ``could not store`` (even if the upstream replied: WeChat
  retries, the retry is deduplicated and forwarded again, nothing acknowledged is lost);
- the upstream gave no complete answer within ``relay_timeout`` of the push's arrival →
  504 ``upstream timed out``;
- a transport error (refused, reset, not HTTP) or a non-2xx status → 502 ``upstream …``;
- otherwise the upstream's answer verbatim: its status, Content-Type and body bytes
  (a passive reply in plain or encrypted XML, ``success``, or the empty string).

Why these failure answers: WeChat retries a push it could not deliver — officially when
no answer arrives within 5 s (it then drops the connection and tries again, three tries
in all) — and its interface alarm counts an unusable answer (回应失败) as a failed push
just like a timeout. An upstream that is down or answers 500 makes WeChat see exactly
that without msgcube; a 502/504 makes it see the same kind of failure, so it retries
and the upstream gets its next chance, as it would have. A reply is never rewritten,
re-signed or re-encrypted: msgcube forwards what WeChat signed and returns what the
upstream signed, so the two ends stay in each other's keys.

``Relay.forward`` is the HTTP half alone. It sends the original method, the raw query
string (``signature``, ``timestamp``, ``nonce``, ``openid``, ``encrypt_type``,
``msg_signature``, unchanged) appended to the upstream URL, the Content-Type and the
exact body bytes over one pooled HTTP/1.1 keep-alive client per worker process. It
never retries (WeChat does), never follows redirects, ignores proxy environment
variables, caps concurrent calls per upstream origin (``relay_concurrency``: beyond it
a push waits, within its time budget) and never raises: every failure is an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from msgcube.domain.periods import local_day_hour
from msgcube.relay.recorder import RelayRecorder
from msgcube.relay.upstream import shown_upstream, upstream_target
from msgcube.storage.accounts import Account
from msgcube.storage.relay_calls import RelayCall

log = logging.getLogger("msgcube.relay")

MAX_ANSWER = 1 << 20
"""Bytes of an upstream answer accepted (a passive reply is a few KiB); beyond it → 502."""

TIMED_OUT = "upstream timed out"


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """What the upstream did with one forwarded push.

    ``status`` is the upstream's HTTP status (0: no answer); ``failed`` is WeChat's
    definition of a failed callback (no complete answer within ``relay_timeout``, a
    transport error, or a non-2xx status) and ``reason`` says which ("" when not failed).
    ``cost_ms`` runs from the push's arrival to the complete answer or the failure.
    """

    status: int
    content_type: str | None
    body: bytes
    cost_ms: int
    failed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RelayAnswer:
    """What WeChat is answered: the upstream's own answer, or a failure answer.

    ``reason`` is empty when the upstream's answer is passed on, else it says why this
    is a failure answer (for the access log; the body says the same in plain words).
    """

    status: int
    content_type: str | None
    body: bytes
    reason: str = ""

    @classmethod
    def failure(cls, status: int, reason: str) -> RelayAnswer:
        return cls(status, "text/plain; charset=utf-8", reason.encode("utf-8"), reason)


class Relay:
    """The relay of one worker process: a pooled HTTP client, the per-upstream bounds and
    the recorder of timings. ``running()`` owns the client's lifetime (the app lifespan);
    a call before it starts the client on first use."""

    def __init__(
        self,
        *,
        timeout: float = 4.5,
        concurrency: int = 100,
        recorder: RelayRecorder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.recorder = recorder
        self.clock = clock
        self._client: httpx.AsyncClient | None = None
        self._bounds: dict[tuple[str, str, int | None], asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the client (and run the recorder) for the app's lifetime; close both after."""
        recording = self.recorder.running() if self.recorder else contextlib.nullcontext()
        async with recording:
            # Made now, not by the first push: building the client (its TLS context
            # above all) takes long enough to eat into that push's relay_timeout.
            self._http()
            try:
                yield
            finally:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                http1=True,
                http2=False,
                trust_env=False,  # only configured proxies are believed: none here
                follow_redirects=False,
                timeout=httpx.Timeout(60.0),  # a backstop: relay_timeout bounds each call
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=1000, keepalive_expiry=60
                ),
                headers={"accept-encoding": "identity", "user-agent": "msgcube-relay"},
            )
        return self._client

    def _bound(self, url: str) -> asyncio.Semaphore:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        bound = self._bounds.get(key)
        if bound is None:
            bound = self._bounds[key] = asyncio.Semaphore(self.concurrency)
        return bound

    async def forward(
        self,
        upstream_url: str,
        method: str,
        query_string: bytes,
        content_type: str | None,
        body: bytes,
        *,
        received: float | None = None,
    ) -> RelayOutcome:
        """Send the push to ``upstream_url`` unchanged and read its whole answer.

        ``received`` is the ``time.perf_counter()`` at which the push arrived (default:
        now); both the deadline (``relay_timeout``) and ``cost_ms`` count from it.
        Never raises for anything the upstream or the network does.
        """
        started = time.perf_counter() if received is None else received

        def outcome(status: int, ctype: str | None, data: bytes, reason: str) -> RelayOutcome:
            cost = round((time.perf_counter() - started) * 1000)
            return RelayOutcome(status, ctype, data, cost, bool(reason), reason)

        # Header text is latin-1 as received: its exact bytes go on, whatever they are.
        headers = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
        url = upstream_target(upstream_url, query_string)
        remaining = self.timeout - (time.perf_counter() - started)
        status, ctype = 0, None
        try:
            async with asyncio.timeout(max(remaining, 0.0)), self._bound(upstream_url):
                request = self._http().build_request(method, url, content=body, headers=headers)
                response = await self._http().send(request, stream=True)
                try:
                    status, ctype = response.status_code, _content_type(response)
                    data = await _read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return outcome(status, ctype, b"", TIMED_OUT)
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return outcome(status, ctype, b"", f"upstream unreachable ({_describe(exc)})")
        except Exception as exc:  # e.g. a header httpx cannot encode: still only a failure
            log.exception("relaying to %s failed", shown_upstream(upstream_url))
            return outcome(status, ctype, b"", f"relay error ({_describe(exc)})")
        if data is None:
            return outcome(status, ctype, b"", f"upstream answer over {MAX_ANSWER} bytes")
        if not 200 <= status < 300:
            return outcome(status, ctype, data, f"upstream answered {status}")
        return outcome(status, ctype, data, "")

    async def relay(
        self,
        account: Account,
        upstream_url: str,
        method: str,
        query_string: bytes,
        content_type: str | None,
        body: bytes,
        store: Awaitable[None],
        *,
        received: float | None = None,
    ) -> RelayAnswer:
        """Store (``store``, the committer's coroutine) and forward concurrently; the answer.

        The timing of the forward is recorded for ``account`` whatever the commit did:
        the upstream was called either way.
        """
        started = time.perf_counter() if received is None else received
        received_at = int(self.clock().timestamp())
        storing = asyncio.ensure_future(store)
        outcome = await self.forward(
            upstream_url, method, query_string, content_type, body, received=started
        )
        if self.recorder is not None:
            day, hour = local_day_hour(received_at, account.tz)
            self.recorder.add(
                RelayCall(account.id, received_at, day, hour, outcome.cost_ms, outcome.failed)
            )
        try:
            await storing
        except Exception:
            return RelayAnswer.failure(500, "could not store")
        if outcome.failed:
            status = 504 if outcome.reason == TIMED_OUT else 502
            return RelayAnswer.failure(status, outcome.reason)
        return RelayAnswer(outcome.status, outcome.content_type, outcome.body)


def _content_type(response: httpx.Response) -> str | None:
    """The answer's Content-Type as latin-1 text of its exact bytes (Starlette sends it so)."""
    for name, value in response.headers.raw:
        if name.lower() == b"content-type":
            return value.decode("latin-1")
    return None


async def _read_capped(response: httpx.Response) -> bytes | None:
    """The whole answer body, or ``None`` once it exceeds ``MAX_ANSWER``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__
