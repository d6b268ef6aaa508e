"""Upstreams for the relay tests: a real bot written with wechatpy, and broken servers.

``Bot`` is what an official account runs behind its server URL, written the way a
developer would with wechatpy (``check_signature``, ``WeChatCrypto``, ``parse_message``,
``create_reply``): text messages get a passive text reply — encrypted with wechatpy when
the push came encrypted, plain otherwise — events get ``success`` and every other
message the empty string. It keeps a journal of every request it saw and the exact
bytes it answered, so a test can compare what WeChat got through msgcube with what the
bot sent. ``plan`` lets a test make a push's first tries fail (500, or too slow).

``serving(app)`` runs an ASGI app under uvicorn on a thread, on a loopback port;
``raw_server(kind)`` is a TCP server that answers garbage or resets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from wechatpy import create_reply, parse_message  # type: ignore[import-untyped]
from wechatpy.crypto import WeChatCrypto  # type: ignore[import-untyped]
from wechatpy.exceptions import (  # type: ignore[import-untyped]
    InvalidSignatureException,
)
from wechatpy.utils import check_signature  # type: ignore[import-untyped]

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Seen:
    """One request the bot received, and what it answered."""

    method: str
    query_string: bytes
    content_type: str | None
    body: bytes
    key: str  # MsgId, or FromUserName/CreateTime/Event for events ("" if unreadable)
    attempt: int  # 1 for the first time this key arrived
    action: str  # reply | 500 | slow | bad-signature
    status: int
    answer_type: str | None
    answer: bytes


@dataclass
class Bot:
    """The account's own server. ``plan(key, attempt)`` → "reply" (default), "500" or "slow"."""

    appid: str
    token: str
    aes_key: str
    slow_seconds: float = 1.0
    plan: Callable[[str, int], str] = lambda key, attempt: "reply"
    journal: list[Seen] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.crypto = WeChatCrypto(self.token, self.aes_key, self.appid)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        status, ctype, answer, key, action = await self._handle(query, body)
        with self._lock:
            attempt = self.attempts[key] if key else 0
            seen = Seen(
                scope["method"],
                scope["query_string"],
                headers.get("content-type"),
                body,
                key,
                attempt,
                action,
                status,
                ctype,
                answer,
            )
            self.journal.append(seen)
        extra = [(b"content-type", ctype.encode())] if ctype else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": answer})

    async def _handle(
        self, query: dict[str, str], body: bytes
    ) -> tuple[int, str | None, bytes, str, str]:
        try:
            check_signature(self.token, query["signature"], query["timestamp"], query["nonce"])
            encrypted = query.get("encrypt_type") == "aes"
            xml = body.decode("utf-8")
            if encrypted:
                xml = self.crypto.decrypt_message(
                    xml, query["msg_signature"], query["timestamp"], query["nonce"]
                )
        except (KeyError, InvalidSignatureException):
            return 403, "text/plain", b"bad signature", "", "bad-signature"
        message = parse_message(xml)
        if message.type == "event":
            created = message.time  # an int or a datetime, depending on the message class
            created = int(created.timestamp()) if hasattr(created, "timestamp") else int(created)
            key = f"{message.source}/{created}/{message.event.lower()}"  # wechatpy lowercases
        else:
            key = str(message.id)
        with self._lock:
            self.attempts[key] += 1
            action = self.plan(key, self.attempts[key])
        if action == "500":
            return 500, "text/html", b"<h1>Internal Server Error</h1>", key, action
        if action == "slow":
            await asyncio.sleep(self.slow_seconds)
        if message.type == "text":
            reply = create_reply(f"echo: {message.content}", message).render()
            if encrypted:
                reply = self.crypto.encrypt_message(reply, query["nonce"], query["timestamp"])
            return 200, "application/xml; charset=utf-8", reply.encode("utf-8"), key, action
        if message.type == "event":
            return 200, "text/plain", b"success", key, action
        return 200, None, b"", key, action

    def seen(self, key: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.journal if s.key == key]


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    return sock


@contextlib.contextmanager
def serving(
    app: Any, port: int = 0, *, keep_alive: int = 5, tls: tuple[str, str] | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread; yields its base URL (``http://127.0.0.1:P``).

    ``keep_alive``: seconds an idle connection is kept; ``tls``: (certificate file, key
    file) to serve https instead.
    """
    sock = _listening_socket(port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=keep_alive,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the upstream did not start")
            threading.Event().wait(0.01)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class RawServer:
    url: str
    hits: list[bytes] = field(default_factory=list)  # the bytes of each request received


@contextlib.contextmanager
def raw_server(kind: str) -> Iterator[RawServer]:
    """A TCP server that reads a request, then answers bytes that are not HTTP
    (``kind="garbage"``) or resets the connection (``kind="reset"``)."""
    sock = _listening_socket()
    sock.settimeout(0.2)
    stop = threading.Event()
    handle = RawServer(f"http://127.0.0.1:{sock.getsockname()[1]}")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    handle.hits.append(conn.recv(65536))
                    if kind == "garbage":
                        conn.sendall(b"\x00\xffSSH-2.0-not-http\r\n\x7f\x80garbage\r\n\r\n")
                    else:  # RST instead of FIN
                        linger = struct.pack("ii", 1, 0)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield handle
    finally:
        stop.set()
        thread.join(5)
        sock.close()
