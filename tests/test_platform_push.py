"""The component_verify_ticket push, checked by a platform written with wechatpy.

The receiver is what a platform developer writes with wechatpy: its authorization-event
URL hands the body and query to ``WeChatComponent.parse_message``, which checks
``msg_signature``, decrypts with the EncodingAESKey, checks the appid inside and caches
the ticket. If msgcube sealed the push any differently from WeChat, it would raise.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.component import ComponentVerifyTicketMessage, WeChatComponent
from wechatpy.utils import check_signature

from msgcube.auth.platforms import current_ticket, register_platform
from msgcube.errors import PlatformError
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.storage.platforms import get_platform
from msgcube.web.app import create_app
from msgcube.web.server import configure_logging
from msgcube.web.ticket_pusher import push_due_tickets
from support.api import shanghai

from conftest import fresh_appid

T0 = shanghai(2026, 3, 2, 10, 3)


def aes_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))


@dataclass
class Receiver:
    """A platform's event URL built with wechatpy; only answers its own path."""

    component_appid: str
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    key: str = field(default_factory=aes_key)
    received: list[ComponentVerifyTicketMessage] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.component = WeChatComponent(self.component_appid, "unused", self.token, self.key)

    @property
    def path(self) -> str:
        return f"/events/{self.component_appid}"

    async def handle(self, request: Request) -> Response:
        q = dict(request.query_params)
        check_signature(self.token, q["signature"], q["timestamp"], q["nonce"])  # raises if bad
        message = self.component.parse_message(
            await request.body(), q["msg_signature"], q["timestamp"], q["nonce"]
        )
        self.received.append(message)
        self.queries.append(q)
        return PlainTextResponse("success")

    def app(self) -> Starlette:
        return Starlette(routes=[Route(self.path, self.handle, methods=["POST"])])


def register(store: Store, receiver: Receiver, ticket_url: str, push_token: str = "") -> None:
    """Register the receiver's platform with this ticket URL (its Token unless given)."""
    with store.write() as conn:
        register_platform(
            conn,
            component_appid=receiver.component_appid,
            secret="s",
            now=int(T0.timestamp()),
            ticket_url=ticket_url,
            push_token=push_token or receiver.token,
            aes_key=receiver.key,
        )


@pytest.fixture
async def pushed(store: Store) -> AsyncIterator[tuple[Receiver, Starlette, httpx.AsyncClient]]:
    receiver = Receiver(fresh_appid("wxpush"))
    register(store, receiver, f"http://receiver.test{receiver.path}?from=msgcube")
    app = create_app(Settings(now=T0.isoformat()), store)
    transport = httpx.ASGITransport(app=receiver.app())
    async with httpx.AsyncClient(transport=transport) as client:
        yield receiver, app, client


async def test_the_ticket_is_pushed_signed_and_encrypted_like_wechat(
    pushed: tuple[Receiver, Starlette, httpx.AsyncClient], store: Store
) -> None:
    receiver, app, client = pushed
    ctx = app.state.ctx
    await push_due_tickets(ctx, client)
    assert len(receiver.received) == 1
    message = receiver.received[0]
    with store.read() as conn:
        platform = get_platform(conn, receiver.component_appid)
    assert platform is not None
    expected = current_ticket(platform, int(T0.timestamp())).ticket
    assert message.type == "component_verify_ticket"
    assert message.appid == receiver.component_appid
    assert message.verify_ticket == expected
    assert int(message.create_time.timestamp()) == int(T0.timestamp())
    assert receiver.component.component_verify_ticket == expected  # cached, ready to use
    query = receiver.queries[0]
    assert query["encrypt_type"] == "aes" and query["from"] == "msgcube"
    assert query["nonce"].isdigit() and query["timestamp"] == str(int(T0.timestamp()))

    # One push per 10-minute slot, however often the pusher looks.
    await push_due_tickets(ctx, client)
    assert len(receiver.received) == 1
    ctx.settings = ctx.settings.with_(now=(T0 + timedelta(minutes=10)).isoformat())
    await push_due_tickets(ctx, client)
    assert len(receiver.received) == 2
    assert receiver.received[1].verify_ticket != expected


async def test_two_workers_push_each_ticket_once(
    pushed: tuple[Receiver, Starlette, httpx.AsyncClient], store: Store
) -> None:
    receiver, app, client = pushed
    other_worker = create_app(Settings(now=T0.isoformat()), store)
    for ctx in (app.state.ctx, other_worker.state.ctx, app.state.ctx):
        await push_due_tickets(ctx, client)
    assert len(receiver.received) == 1


async def test_a_failing_receiver_is_logged_not_retried_within_the_slot(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(fresh_appid("wxpush"))
    register(store, receiver, "http://receiver.test/nowhere", push_token="t")
    app = create_app(Settings(now=T0.isoformat()), store)
    transport = httpx.ASGITransport(app=receiver.app())
    async with httpx.AsyncClient(transport=transport) as client:
        await push_due_tickets(app.state.ctx, client)
    assert f"ticket push to {receiver.component_appid} answered HTTP 404" in caplog.text


async def test_the_ticket_url_stays_out_of_the_log(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs every request's URL at INFO: with the server's logging, only msgcube's
    own line is written — not the signed query, nor a password in the URL."""
    receiver = Receiver(fresh_appid("wxpush"))
    register(store, receiver, f"http://platform:pw-in-url-42@receiver.test{receiver.path}")
    app = create_app(Settings(now=T0.isoformat()), store)
    saved = {name: logging.getLogger(name).level for name in ("httpx", "msgcube")}
    try:
        configure_logging("info")
        caplog.set_level(logging.INFO)
        transport = httpx.ASGITransport(app=receiver.app())
        async with httpx.AsyncClient(transport=transport) as client:
            await push_due_tickets(app.state.ctx, client)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    assert len(receiver.received) == 1
    assert f"pushed component_verify_ticket to {receiver.component_appid}" in caplog.text
    assert "pw-in-url-42" not in caplog.text and "msg_signature" not in caplog.text


def test_a_ticket_url_needs_a_token_and_a_valid_aes_key(store: Store) -> None:
    with store.write() as conn:
        for kwargs in (
            {"ticket_url": "http://x.test/t", "push_token": "t"},
            {"ticket_url": "http://x.test/t", "aes_key": aes_key()},
            {"ticket_url": "ftp://x.test/t", "push_token": "t", "aes_key": aes_key()},
            {"aes_key": "short"},
        ):
            with pytest.raises(PlatformError):
                register_platform(
                    conn, component_appid=fresh_appid("wxbad"), secret="s", now=0, **kwargs
                )  # type: ignore[arg-type]
        appid = fresh_appid("wxdup")
        register_platform(conn, component_appid=appid, secret="s", now=0)
        with pytest.raises(PlatformError, match="already exists"):
            register_platform(conn, component_appid=appid, secret="s", now=0)
