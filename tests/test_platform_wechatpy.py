"""Third-party conformance: a platform written with wechatpy's ``WeChatComponent`` against a
real ``msgcube serve``.

The platform is what a developer writes with wechatpy 1.8.18, only its base URLs pointed
at msgcube: a real HTTP server (uvicorn, in a thread) receives the ticket that
msgcube's lifespan pushes, ``WeChatComponent.parse_message`` decrypts and caches it,
``fetch_access_token`` trades it for a component token, ``refresh_authorizer_token``
gets an authorizer token, and ``WeChatComponentClient``'s datacube API reads the
account's statistics with it. Everything on msgcube's side is set up with the
``msgcube`` command, as an operator would (``account add``, ``generate``, ``platform
add|authorize|ticket|revoke``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.client import WeChatComponentClient
from wechatpy.component import WeChatComponent
from wechatpy.exceptions import WeChatClientException

from support.server import ServerProcess, free_port, msgcube_env, run_msgcube

pytestmark = pytest.mark.slow

NOW = "2026-02-15T10:00:00+08:00"
YESTERDAY = date(2026, 2, 14)
APPID = "wxplatformconf0001"
SECRET = "platform-conformance-secret-0001"
COMPONENT_APPID = "wxcomponentconf001"
COMPONENT_SECRET = "component-conformance-secret-001"
PUSH_TOKEN = "componentpushtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class Component(WeChatComponent):  # type: ignore[misc]
    """wechatpy's component client; only its base URL is msgcube's."""


class Platform:
    """The platform's server: its authorization-event URL, served by a real uvicorn."""

    def __init__(self) -> None:
        self.component = Component(COMPONENT_APPID, COMPONENT_SECRET, PUSH_TOKEN, AES_KEY)
        self.pushes = 0
        self.port = free_port()
        app = Starlette(routes=[Route("/wechat/component", self.event, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wechat/component"

    async def event(self, request: Request) -> Response:
        q = request.query_params
        self.component.parse_message(
            await request.body(), q["msg_signature"], q["timestamp"], q["nonce"]
        )
        self.pushes += 1
        return PlainTextResponse("success")

    def __enter__(self) -> Platform:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the platform's server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def platform() -> Iterator[Platform]:
    with Platform() as p:
        yield p


def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_wechatpy_component_trades_the_pushed_ticket_and_reads_the_account(
    platform: Platform, tmp_path: Path
) -> None:
    db = tmp_path / "msgcube.db"
    env = msgcube_env(db, NOW)
    run_msgcube("account", "add", "--appid", APPID, "--secret", SECRET, env=env)
    run_msgcube("generate", "--appid", APPID, "--days", "20", "--users", "30", env=env)
    added = run_msgcube(
        "platform",
        "add",
        "--component-appid",
        COMPONENT_APPID,
        "--component-secret",
        COMPONENT_SECRET,
        "--ticket-url",
        platform.url,
        "--token",
        PUSH_TOKEN,
        "--aes-key",
        AES_KEY,
        env=env,
    )
    assert added.splitlines()[-1] == f"{COMPONENT_APPID} {COMPONENT_SECRET}"
    refresh = run_msgcube(
        "platform",
        "authorize",
        "--component-appid",
        COMPONENT_APPID,
        "--appid",
        APPID,
        "--func",
        "1,15",
        env=env,
    ).splitlines()[-1]
    ticket = run_msgcube(
        "platform", "ticket", "--component-appid", COMPONENT_APPID, env=env
    ).splitlines()[-1]

    with ServerProcess(db, tmp_path, now=NOW) as server:
        # msgcube's lifespan pushes the ticket; wechatpy decrypts and caches it.
        wait_for(lambda: platform.pushes >= 1)
        component = platform.component
        component.API_BASE_URL = server.base_url + "/cgi-bin"
        assert component.component_verify_ticket == ticket

        grant = component.fetch_access_token()
        assert grant["expires_in"] == 7200
        result = component.refresh_authorizer_token(APPID, refresh)
        assert set(result) == {"authorizer_access_token", "expires_in", "authorizer_refresh_token"}

        client = WeChatComponentClient(
            APPID,
            component,
            result["authorizer_access_token"],
            result["authorizer_refresh_token"],
            session=component.session,
        )
        client.API_BASE_URL = server.base_url + "/cgi-bin/"
        client.datacube.API_BASE_URL = server.base_url + "/datacube/"
        rows = client.datacube.get_upstream_msg(date(2026, 2, 8), YESTERDAY)
        assert rows, "the account has data in that week"

        own = httpx.get(
            server.base_url + "/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": APPID,
                "secret": SECRET,
            },
        ).json()["access_token"]
        direct = httpx.post(
            server.base_url + "/datacube/getupstreammsg",
            params={"access_token": own},
            content=b'{"begin_date": "2026-02-08", "end_date": "2026-02-14"}',
        ).json()
        assert rows == direct["list"]

        # Revoked: the token answers 40001, wechatpy refreshes, and the refresh fails 61003.
        run_msgcube(
            "platform", "revoke", "--component-appid", COMPONENT_APPID, "--appid", APPID, env=env
        )
        with pytest.raises(WeChatClientException) as failure:
            client.datacube.get_upstream_msg(date(2026, 2, 8), YESTERDAY)
        assert failure.value.errcode == 61003
