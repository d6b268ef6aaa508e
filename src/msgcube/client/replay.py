"""Sending pushes to a callback URL the way WeChat does (``msgcube replay``).

Client side, for users testing their setup (msgcube's own callback or any other
server's) and for the benchmark: each record of a JSON Lines file (``msgcube generate
--out``) becomes WeChat's XML, signed with the Token (``signature`` over a fresh
timestamp and nonce), and in compatible or safe mode encrypted with the EncodingAESKey
and signed again (``msg_signature``). Requests go out concurrently over keep-alive
connections; like WeChat, a push that gets no HTTP 200 (or no answer within 5 s) is
tried again, up to three tries in all.

The XML comes from ``wechat.xml.build_push_xml`` and the envelope from
``wechat.crypto.encrypt``; the tests check msgcube's server against pushes built by
wechatpy instead, so the two sides are not checked only against each other.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from msgcube.client.protocol import http_url
from msgcube.wechat import AESKey, build_push_xml, cdata, encrypt, msg_signature, signature

Mode = Literal["plain", "compat", "safe"]
MODES: tuple[Mode, ...] = ("plain", "compat", "safe")


def callback_url(url: str, appid: str) -> str:
    """``url`` itself when it has a path, else msgcube's callback path on that server
    (``ValueError`` for a URL that cannot be called, ``client.protocol.http_url``)."""
    parts = urlsplit(http_url(url, "callback URL"))
    if parts.path in ("", "/"):
        return url.rstrip("/") + f"/wechat/callback/{appid}"
    return url


def push_fields(record: Mapping[str, Any]) -> dict[str, str | int]:
    """A JSON record as ``build_push_xml`` fields: numbers stay bare, ``null`` is dropped."""
    fields: dict[str, str | int] = {}
    for name, value in record.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, int | str):
            fields[name] = value
        elif isinstance(value, float):
            fields[name] = repr(value)
        else:
            fields[name] = orjson.dumps(value).decode()
    return fields


@dataclass(frozen=True)
class PushSigner:
    """Builds signed (and in compat/safe mode encrypted) push requests for one account."""

    appid: str
    token: str
    mode: Mode = "plain"
    aes_key: AESKey | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.mode != "plain" and self.aes_key is None:
            raise ValueError(f"{self.mode} mode needs the EncodingAESKey")

    def request(
        self, record: Mapping[str, Any], timestamp: int | None = None, nonce: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """``(query parameters, body)`` of one push, freshly signed."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce if nonce is not None else str(secrets.randbelow(9_000_000_000) + 10**9)
        fields = push_fields(record)
        xml = build_push_xml(fields)
        params = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if self.mode == "plain":
            return params, xml
        assert self.aes_key is not None
        encrypted = encrypt(self.aes_key, xml, self.appid)
        params["encrypt_type"] = "aes"
        params["msg_signature"] = msg_signature(self.token, ts, nonce, encrypted)
        if self.mode == "compat":  # plaintext fields and the ciphertext side by side
            return params, build_push_xml({**fields, "Encrypt": encrypted})
        to_user = str(fields.get("ToUserName", ""))
        body = (
            f"<xml><ToUserName>{cdata(to_user)}</ToUserName>"
            f"<Encrypt>{cdata(encrypted)}</Encrypt></xml>"
        )
        return params, body.encode("utf-8")


@dataclass(slots=True)
class ReplaySummary:
    """The outcome of a replay; ``latencies_ms`` holds each delivered push's last try."""

    pushes: int = 0
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    bad_lines: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def text(self) -> str:
        rate = self.pushes / self.seconds if self.seconds else 0.0
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.pushes} pushes: {self.delivered} answered 200, {self.failed} failed, "
            f"{self.retries} retries, {self.bad_lines} bad lines; {self.seconds:.2f}s, "
            f"{rate:.0f} pushes/s, ack p50 {self.percentile(0.50):.1f} ms, "
            f"p99 {self.percentile(0.99):.1f} ms (answers: {statuses or 'none'})"
        )


def read_jsonl(stream: IO[bytes], summary: ReplaySummary | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON Lines stream, lazily; bad lines are counted and skipped."""
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            yield value
        elif summary is not None:
            summary.bad_lines += 1


async def replay(
    records: Iterable[Mapping[str, Any]],
    url: str,
    signer: PushSigner,
    *,
    concurrency: int = 16,
    tries: int = 3,
    timeout: float = 5.0,
    summary: ReplaySummary | None = None,
    client: httpx.AsyncClient | None = None,
) -> ReplaySummary:
    """Send every record to ``url`` with ``concurrency`` pushes in flight; a summary.

    A try fails on a non-200 answer, a transport error or no answer within ``timeout``
    (WeChat waits 5 s); a push is tried at most ``tries`` times, signed afresh each time.
    """
    summary = summary or ReplaySummary()
    source = iter(records)
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with _client(client, limits, timeout) as http:

        async def worker() -> None:
            for record in source:  # one shared iterator: each record goes to one worker
                summary.pushes += 1
                await _send(http, url, signer, record, tries, summary)

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    summary.seconds = time.perf_counter() - started
    return summary


def _client(
    client: httpx.AsyncClient | None, limits: httpx.Limits, timeout: float
) -> httpx.AsyncClient | _Borrowed:
    if client is not None:
        return _Borrowed(client)
    return httpx.AsyncClient(limits=limits, timeout=timeout)


class _Borrowed:
    """A caller's client used as a context manager without closing it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _send(
    http: httpx.AsyncClient,
    url: str,
    signer: PushSigner,
    record: Mapping[str, Any],
    tries: int,
    summary: ReplaySummary,
) -> None:
    for attempt in range(1, max(1, tries) + 1):
        if attempt > 1:
            summary.retries += 1
        params, body = signer.request(record)
        started = time.perf_counter()
        try:
            response = await http.post(url, params=params, content=body)
        except httpx.TimeoutException:
            summary.statuses["timeout"] += 1
            continue
        except httpx.TransportError as exc:
            summary.statuses[type(exc).__name__] += 1
            await asyncio.sleep(0.05 * attempt)  # a refused connection: give it a moment
            continue
        summary.statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            summary.delivered += 1
            summary.latencies_ms.append((time.perf_counter() - started) * 1000)
            return
    summary.failed += 1
