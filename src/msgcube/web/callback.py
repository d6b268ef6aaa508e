"""``GET|POST /wechat/callback/{appid}``: the URL a developer registers with WeChat.

Order of the checks, each answered the moment it fails:

1. an appid that cannot exist (``domain.identifiers``) or is unknown → 404;
2. ``signature`` (constant-time) → 403, before the body is read, so an unsigned request
   costs a SHA-1 and nothing else; GET answers ``echostr`` verbatim here;
3. body over 64 KiB → 413 (never read past the limit, so never quarantined);
4. the gate (``ingest.gate.open_body``): in compatible/safe mode ``msg_signature`` over
   the ``Encrypt`` element → 403 (also when the envelope is not XML or has no
   ``Encrypt``: then nothing about the body is authenticated); then AES, XML and record —
   a failure here came with valid signatures, so the raw body and query string are
   quarantined and the answer is 400 — unless the same signed request is already kept
   (400, not stored twice) or the account's quarantine is full (503, logged);
5. the record goes to the group committer; ``success`` only once its transaction has
   committed, 500 if it failed (WeChat then retries; the retry is deduplicated).
   An account with an upstream URL instead gets the relay (``msgcube.relay``): stored
   and forwarded concurrently, answered with the upstream's answer verbatim or a failure.

Decisions: there is no timestamp freshness window. In compatible and safe mode
``msg_signature`` binds the ciphertext, and a replayed push is deduplicated on MsgId or
(FromUserName, CreateTime, Event), so a resent capture changes nothing. In plaintext mode
``signature`` does not cover the body at all, so a window would not stop forgery within
it either — safe mode is the protection. Meanwhile a window would turn a skewed server
clock into pushes refused until WeChat gives up, i.e. silent loss. The answer ``success``
is plain text in every mode: WeChat accepts it unencrypted even in safe mode.

Accounts are cached for a second: a push needs the Token and keys before anything else,
and a database read per push would cost more than the rest of the check. A signed push
that fails to open re-reads the account once before it is quarantined (the keys may
have just changed), and the committer re-reads what decides dirty periods inside its
transaction, so neither a key change nor the statistics wait on the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from msgcube.domain.identifiers import is_appid
from msgcube.errors import BadSignature, BodyTooLarge, IngestError, PushRefused
from msgcube.ingest.committer import GroupCommitter
from msgcube.ingest.gate import RawPush, VerifiedPush, check_request_signature, open_body
from msgcube.relay import Relay, RelayAnswer, RelayRecorder
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.quarantine import Kept, QuarantineLimits
from msgcube.web.context import AppContext
from msgcube.web.faults import faults
from msgcube.web.request_checks import read_body

log = logging.getLogger("msgcube.callback")

ACCOUNT_TTL = 1.0
"""Seconds an account (Token, EncodingAESKeys) is cached; a change takes effect after it."""


class CallbackService:
    """Per-process state of the callback: the group committer and the account cache."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        s = ctx.settings
        limits = QuarantineLimits(
            max_entries=s.quarantine_max_entries,
            max_bytes=s.quarantine_max_bytes,
            retention_days=s.quarantine_retention_days,
        )
        self.committer = GroupCommitter(ctx.store, ctx.now, limits=limits, faults=faults)
        self.relay = Relay(
            timeout=s.relay_timeout,
            concurrency=s.relay_concurrency,
            recorder=RelayRecorder(ctx.store, clock=ctx.now),
            clock=ctx.now,
        )
        self._accounts: dict[str, tuple[float, Account | None]] = {}
        self._refreshing: dict[str, asyncio.Future[Account | None]] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the committer for the app's lifetime; on shutdown, commit what is queued."""
        await self.committer.start()
        try:
            async with self.relay.running():
                yield
        finally:
            await self.committer.stop()
            s = self.committer.stats
            if s.items:
                log.info(
                    "group commit: %d pushes in %d transactions (largest %d, %d failed)",
                    s.items,
                    s.batches,
                    s.largest,
                    s.failed_batches,
                )

    async def account(self, appid: str) -> Account | None:
        """The account, from a cache refreshed in the background once a second.

        An expired entry is still answered while one task re-reads it: otherwise every
        push in flight at the moment of expiry would queue its own database read, and
        each second would start with a burst of slow answers.
        """
        hit = self._accounts.get(appid)
        if hit is not None:
            if hit[0] <= time.monotonic() and appid not in self._refreshing:
                self._refreshing[appid] = asyncio.ensure_future(self._refresh(appid))
            return hit[1]
        return await self.reload(appid)

    async def reload(self, appid: str) -> Account | None:
        """The account read afresh now (joining a re-read already under way)."""
        pending = self._refreshing.get(appid)
        if pending is None:
            pending = self._refreshing[appid] = asyncio.ensure_future(self._refresh(appid))
        return await asyncio.shield(pending)

    async def _refresh(self, appid: str) -> Account | None:
        try:
            account = await run_in_threadpool(self._read_account, appid)
        except Exception:
            stale = self._accounts.get(appid)
            if stale is None:
                raise
            log.warning("could not re-read account %s; using the cached copy", appid)
            account = stale[1]
        finally:
            self._refreshing.pop(appid, None)
        if len(self._accounts) > 10_000:  # unknown appids must not grow this forever
            self._accounts.clear()
        self._accounts[appid] = (time.monotonic() + ACCOUNT_TTL, account)
        return account

    def _read_account(self, appid: str) -> Account | None:
        with self.ctx.store.read() as conn:
            return get_account(conn, appid)


def refuse(request: Request, status: int, reason: str) -> Response:
    request.state.detail = reason  # the access log line says why; the query is never logged
    return PlainTextResponse(reason, status_code=status)


Endpoint = Callable[[Request], Awaitable[Response]]


def refusing(endpoint: Endpoint) -> Endpoint:
    """The push URLs' refusals answered in one place: a bad signature or a push msgcube
    will not take 403, an oversized body 413 (plain text, as WeChat expects)."""

    @functools.wraps(endpoint)
    async def call(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (BadSignature, PushRefused) as exc:
            return refuse(request, 403, exc.reason)
        except BodyTooLarge:
            return refuse(request, 413, "request body too large")

    return call


def signed_query(request: Request, appid: str, gate: Account) -> RawPush:
    """The request with its query checked against ``gate``'s Token (``BadSignature``)."""
    raw = RawPush(appid, request.scope.get("query_string", b"").decode("latin-1"), b"")
    check_request_signature(gate, raw.query)
    return raw


def echo(raw: RawPush) -> Response:
    """The answer to WeChat's URL check (a signed GET): its ``echostr``."""
    return PlainTextResponse(
        raw.query.get("echostr", ""), headers={"X-Content-Type-Options": "nosniff"}
    )


@refusing
async def callback(request: Request) -> Response:
    received = time.perf_counter()
    service: CallbackService = request.app.state.callback
    appid = request.path_params["appid"]
    account = await service.account(appid) if is_appid(appid) else None
    if account is None:
        return refuse(request, 404, "unknown appid")
    raw = signed_query(request, appid, account)
    if request.method in ("GET", "HEAD"):
        return echo(raw)
    raw = raw.with_body(await read_body(request))
    try:
        push = await _open(service, account, raw)
    except IngestError as exc:
        return await quarantine_response(request, service, raw, exc.reason)
    if account.upstream_url:
        return relay_response(request, await _relay(service, request, account, push, received))
    try:
        await service.committer.commit(account, push.record)
    except Exception:
        return refuse(request, 500, "could not store")
    return PlainTextResponse("success")


async def quarantine_response(
    request: Request,
    service: CallbackService,
    raw: RawPush,
    reason: str,
    *,
    component_appid: str = "",
) -> Response:
    """Keep a signed push that cannot be stored, within the quarantine's bounds
    (``component_appid``: received on that platform's message URL)."""
    entry = raw.quarantined(reason, service.ctx.now_ts(), component_appid)
    try:
        kept = await service.committer.quarantine(entry)
    except Exception:
        return refuse(request, 500, "could not store")
    if kept is Kept.FULL:
        log.warning("quarantine of %s is full: a signed push was refused (%r)", raw.appid, reason)
        return refuse(request, 503, f"quarantine full, not kept: {reason}")
    if kept is Kept.DUPLICATE:
        return refuse(request, 400, f"already quarantined: {reason}")
    return refuse(request, 400, f"quarantined: {reason}")


async def _relay(
    service: CallbackService,
    request: Request,
    account: Account,
    push: VerifiedPush,
    received: float,
) -> RelayAnswer:
    """Store and forward the push concurrently (``msgcube.relay``); answer when both are done."""
    assert account.upstream_url
    return await service.relay.relay(
        account,
        account.upstream_url,
        request.method,
        request.scope["query_string"],
        request.headers.get("content-type"),
        push.raw.body,
        service.committer.commit(account, push.record),
        received=received,
    )


def relay_response(request: Request, answer: RelayAnswer) -> Response:
    """The relay's answer as sent to WeChat: the upstream's bytes, or a failure answer."""
    if answer.reason:
        request.state.detail = answer.reason
    headers = {"content-type": answer.content_type} if answer.content_type else None
    return Response(answer.body, status_code=answer.status, headers=headers)


async def _open(service: CallbackService, account: Account, raw: RawPush) -> VerifiedPush:
    """``open_body``, retried once with the account re-read if its keys just changed.

    A push that fails after a valid signature is about to be quarantined; if the
    operator changed the EncodingAESKey in the last second the cached copy is to blame,
    so that one case pays for a database read. Forged requests never get here.
    """
    try:
        return open_body(account, raw)
    except IngestError:
        fresh = await service.reload(account.appid)
        if fresh is None or _keys(fresh) == _keys(account):
            raise
        return open_body(fresh, raw)


def _keys(account: Account) -> tuple[str, str | None, str | None]:
    return account.callback_token, account.aes_key, account.prev_aes_key


routes = [Route("/wechat/callback/{appid}", callback, methods=["GET", "POST"], name="callback")]
