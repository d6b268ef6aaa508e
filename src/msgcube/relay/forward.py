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
exact body bytes over one pool of HTTP/1.1 keep-alive connections per worker process
(``http11``: llhttp on asyncio, a fraction of httpx's cost per call). It never retries
(WeChat does), never follows redirects, uses no proxy, caps concurrent calls per
upstream origin (``relay_concurrency``: beyond it a push waits, within its time budget)
and never raises: every failure is an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from msgcube.domain.periods import local_day_hour
from msgcube.errors import UpstreamFailed
from msgcube.relay.http11 import Answer, Http11Pool, Origin, describe
from msgcube.relay.recorder import RelayRecorder
from msgcube.relay.upstream import escaped_query, shown_upstream
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
    """The relay of one worker process: a pool of upstream connections, the per-upstream
    bounds and the recorder of timings. ``running()`` owns the pool's lifetime (the app
    lifespan); a call before it opens connections all the same."""

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
        self._pool = Http11Pool()
        self._origins: dict[str, Origin] = {}
        self._bounds: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the recorder for the app's lifetime; close both it and the connections after."""
        recording = self.recorder.running() if self.recorder else contextlib.nullcontext()
        async with recording:
            # Made now, not by the first push to an https upstream: loading the CA bundle
            # takes long enough to eat into that push's relay_timeout.
            self._pool.tls()
            try:
                yield
            finally:
                await self._pool.aclose()

    def _origin(self, url: str) -> Origin:
        """``url`` parsed, once per URL (a platform's upstream differs per appid)."""
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) > 10_000:  # bounded, like the account cache
                self._origins.clear()
            origin = self._origins[url] = Origin.of(url)
        return origin

    def _bound(self, origin: Origin) -> asyncio.Semaphore:
        key = (origin.scheme, origin.host, origin.port)
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

        remaining = self.timeout - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                origin = self._origin(upstream_url)
                async with self._bound(origin):
                    answer = await self._pool.request(
                        origin,
                        method.encode("ascii"),
                        _target(origin, query_string),
                        _headers(origin, content_type, body),
                        body,
                        max_body=MAX_ANSWER,
                    )
        except TimeoutError:
            timed_out = outcome(0, None, b"", TIMED_OUT)
            # The event loop's timers may fire a fraction of a millisecond early (uvloop
            # counts whole milliseconds): a call that timed out took the whole budget.
            return replace(timed_out, cost_ms=max(timed_out.cost_ms, round(self.timeout * 1000)))
        except UpstreamFailed as exc:
            return outcome(0, None, b"", str(exc))
        except OSError as exc:
            return outcome(0, None, b"", f"upstream unreachable ({describe(exc)})")
        except Exception as exc:  # a bug of ours: logged, still only a failure
            log.exception("relaying to %s failed", shown_upstream(upstream_url))
            return outcome(0, None, b"", f"relay error ({describe(exc)})")
        ctype = _content_type(answer)
        if not 200 <= answer.status < 300:
            reason = f"upstream answered {answer.status}"
            return outcome(answer.status, ctype, answer.body, reason)
        return outcome(answer.status, ctype, answer.body, "")

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


def _target(origin: Origin, query_string: bytes) -> bytes:
    """The request target: the upstream URL's path and query, then WeChat's query."""
    query = escaped_query(query_string).encode("ascii")
    if not query:
        return origin.target
    return origin.target + (b"&" if b"?" in origin.target else b"?") + query


def _headers(origin: Origin, content_type: str | None, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", origin.host_header),
        (b"user-agent", b"msgcube-relay"),
        (b"accept-encoding", b"identity"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if content_type:
        # Header text is latin-1 as received: its exact bytes go on, whatever they are.
        headers.append((b"content-type", content_type.encode("latin-1")))
    if origin.authorization:
        headers.append((b"authorization", origin.authorization))
    return headers


def _content_type(answer: Answer) -> str | None:
    """The answer's Content-Type as latin-1 text of its exact bytes (Starlette sends it so)."""
    value = answer.header(b"content-type")
    return None if value is None else value.decode("latin-1")
