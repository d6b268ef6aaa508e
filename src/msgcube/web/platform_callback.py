"""``GET|POST /wechat/platform/{component_appid}/callback/{appid}``: a platform's message URL.

A third-party platform registers ``…/wechat/platform/COMPONENT_APPID/callback/$APPID$`` as
its 消息与事件接收URL; WeChat replaces ``$APPID$`` by the authorized account's appid and
sends that account's pushes there, signed with the *platform's* Token and encrypted with
the *platform's* EncodingAESKey for the component appid.

The checks are the account callback's gate (``ingest/gate.py``), fed the platform's
Token, keys and component appid instead of an account's: unknown platform → 404;
``signature`` → 403 before the body is read (GET answers ``echostr`` here); a push not in
safe mode → 403; body over 64 KiB → 413; ``msg_signature`` → 403; envelope, AES with the
current then the previous key, trailing appid = component appid, XML and record → 400 and
quarantined; then the account, then the group committer of the account callback.

Decisions:

- Safe mode only, as WeChat sends a platform's pushes. Plaintext is refused (403) before
  the body is read: its ``signature`` covers no body, so anyone holding one captured
  query string could post anything. Compatible mode (plaintext fields beside
  ``Encrypt``) is refused too (403): WeChat never sends it to a platform, so it is not
  WeChat. Neither is quarantined or forwarded.
- The account is the path's appid. An appid seen for the first time becomes an account
  of the platform, with ``ToUserName`` as its original id and an authorization of the
  platform for permission set 1, so the platform's authorizer tokens read its
  statistics as any authorized account's. Only a push that passed the platform's
  signatures *and* opened with its key for its component appid gets that far; the appid
  must look like one (``wx`` + 16 hex digits) and a platform creates at most
  ``account_limit`` accounts. An existing account is fed only if it authorized this
  platform and its authorization is not revoked (403 otherwise: one platform never
  writes into another's or an operator's account).
- WeChat's own notices to the platform (no ``ToUserName``; ``AppId`` = the component
  appid) are not messages: never counted, answered ``success`` by msgcube and not
  forwarded (WeChat sends a platform's notices to its authorization-event URL; the few
  that reach the message URL need no reply).
- With the platform's upstream URL set, the push goes through the account callback's
  relay (``$APPID$`` substituted): stored and forwarded concurrently, the upstream's
  answer returned verbatim, its timing recorded for the account's interface analysis.
"""

from __future__ import annotations

import time
from dataclasses import replace

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from msgcube.auth.platforms import admitted_account, create_platform_account, upstream_for
from msgcube.domain.identifiers import is_appid
from msgcube.errors import IngestError
from msgcube.ingest.gate import RawPush
from msgcube.ingest.platform_push import (
    open_platform_fields,
    platform_gate,
    read_platform_push,
)
from msgcube.storage.accounts import Account
from msgcube.storage.platforms import Platform, get_platform
from msgcube.web.callback import (
    CallbackService,
    echo,
    quarantine_response,
    refuse,
    refusing,
    relay_response,
    signed_query,
)
from msgcube.web.request_checks import read_body

CACHE_TTL = 1.0
"""Seconds a platform (Token, keys, upstream) or an admitted account is cached: a new
Token, upstream or a revocation takes effect within a second (a new key at once: a push
that fails to open re-reads the platform)."""


class PlatformCallbackService:
    """Per-process state: caches of platforms and of the accounts they may feed; the
    account callback's service (its group committer) does the storing."""

    def __init__(self, callbacks: CallbackService) -> None:
        self.callbacks = callbacks
        self.ctx = callbacks.ctx
        self._platforms: dict[str, tuple[float, Platform | None]] = {}
        self._accounts: dict[tuple[int, str, str], tuple[float, Account]] = {}

    async def platform(self, component_appid: str, *, fresh: bool = False) -> Platform | None:
        hit = self._platforms.get(component_appid)
        if hit is not None and hit[0] > time.monotonic() and not fresh:
            return hit[1]
        platform = await run_in_threadpool(self._read_platform, component_appid)
        if len(self._platforms) > 1_000:  # unknown component appids must not grow it
            self._platforms.clear()
        self._platforms[component_appid] = (time.monotonic() + CACHE_TTL, platform)
        return platform

    def _read_platform(self, component_appid: str) -> Platform | None:
        with self.ctx.store.read() as conn:
            return get_platform(conn, component_appid)

    async def account(self, platform: Platform, appid: str, original_id: str) -> Account:
        """The account this push is stored under, created on first sight; ``PushRefused``
        when the platform may not feed it. Refusals are not cached (only the platform
        itself can cause one)."""
        key = (platform.id, appid, original_id)
        hit = self._accounts.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        account = await run_in_threadpool(self._admit, platform, appid, original_id)
        if len(self._accounts) > 100_000:
            self._accounts.clear()
        self._accounts[key] = (time.monotonic() + CACHE_TTL, account)
        return account

    def _admit(self, platform: Platform, appid: str, original_id: str) -> Account:
        store = self.ctx.store
        with store.read() as conn:
            account = admitted_account(conn, platform, appid, original_id)
        if account is not None:
            return account
        now = int(self.ctx.now().timestamp())
        with store.write() as conn:
            return create_platform_account(
                conn, platform, appid, original_id, self.ctx.settings.tz, now
            )


@refusing
async def platform_callback(request: Request) -> Response:
    received = time.perf_counter()
    service: PlatformCallbackService = request.app.state.platform_callback
    component_appid = request.path_params["component_appid"]
    appid = request.path_params["appid"]
    platform = await service.platform(component_appid) if is_appid(component_appid) else None
    if platform is None:
        return refuse(request, 404, "unknown platform")
    raw = signed_query(request, appid, platform_gate(platform))
    if request.method in ("GET", "HEAD"):
        return echo(raw)
    if (raw.query.get("encrypt_type") or "").strip().lower() != "aes":
        return refuse(request, 403, "a platform's pushes must be encrypted (encrypt_type=aes)")
    if platform.aes_key is None:
        return refuse(request, 403, "the platform has no EncodingAESKey (msgcube platform set)")
    body = await read_body(request)
    raw = replace(raw, body=body)
    try:
        platform, fields = await _open(service, platform, raw)
        push = read_platform_push(platform, fields, body)  # compatible mode: PushRefused
        if push.record is None:
            return PlainTextResponse("success")  # WeChat's notice to the platform
        account = await service.account(platform, appid, push.to_user)
    except IngestError as exc:  # XmlError and DecryptError are IngestErrors too
        reason = f"platform {component_appid}: {exc.reason}"
        return await quarantine_response(
            request, service.callbacks, raw, reason, component_appid=component_appid
        )
    storing = service.callbacks.committer.commit(account, push.record)
    if platform.upstream_url:
        answer = await service.callbacks.relay.relay(
            account,
            upstream_for(platform, appid),
            request.method,
            request.scope["query_string"],
            request.headers.get("content-type"),
            body,
            storing,
            received=received,
        )
        return relay_response(request, answer)
    try:
        await storing
    except Exception:
        return refuse(request, 500, "could not store")
    return PlainTextResponse("success")


async def _open(
    service: PlatformCallbackService, platform: Platform, raw: RawPush
) -> tuple[Platform, dict[str, str]]:
    """``open_platform_fields``, retried once with the platform re-read
    if they just changed (as the account callback does for an account's)."""
    try:
        return platform, open_platform_fields(platform, raw)
    except IngestError:
        fresh = await service.platform(platform.component_appid, fresh=True)
        if fresh is None or _keys(fresh) == _keys(platform):
            raise
        return fresh, open_platform_fields(fresh, raw)


def _keys(platform: Platform) -> tuple[str, str | None, str | None]:
    return platform.push_token, platform.aes_key, platform.prev_aes_key


routes = [
    Route(
        "/wechat/platform/{component_appid}/callback/{appid}",
        platform_callback,
        methods=["GET", "POST"],
        name="platform_callback",
    )
]
