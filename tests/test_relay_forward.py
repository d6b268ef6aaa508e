"""``Relay.forward`` against a real server on loopback: what goes out, what comes back."""

from __future__ import annotations

import asyncio
from typing import Any

from msgcube.relay import Relay
from msgcube.relay.forward import MAX_ANSWER
from support.server import free_port
from support.upstream import serving

Seen = list[tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]]


def recorder_app(seen: Seen) -> Any:
    """Answers by path: /big (over MAX_ANSWER), /redirect (302), else an echo of the body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen.append((scope["method"], scope["path"], scope["query_string"], scope["headers"], body))
        status, headers, answer = 200, [(b"content-type", b"text/xml; charset=\xe9")], body
        if scope["path"] == "/big":
            answer = b"x" * (MAX_ANSWER + 1)
        elif scope["path"] == "/redirect":
            status, headers, answer = 302, [(b"location", b"/elsewhere")], b""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def test_the_request_goes_out_unchanged_and_the_answer_comes_back_unchanged() -> None:
    seen: Seen = []
    query = b"signature=5f1e&timestamp=1714036504&nonce=1514711492&openid=oX_y-1&encrypt_type=aes"
    body = b"<xml><Encrypt><![CDATA[a+b/c==]]></Encrypt>\r\n\xe4</xml>"

    async def go(base: str) -> None:
        relay = Relay(timeout=5)
        async with relay.running():
            ok = await relay.forward(base + "/wx?acct=1", "POST", query, "text/xml; x=\xe9", body)
            big = await relay.forward(base + "/big", "POST", query, None, b"")
            moved = await relay.forward(base + "/redirect", "POST", query, None, b"")
        assert (ok.status, ok.failed, ok.reason) == (200, False, "")
        assert ok.body == body and ok.content_type == "text/xml; charset=\xe9"
        assert 0 <= ok.cost_ms < 5000
        assert (big.failed, big.reason) == (True, f"upstream answer over {MAX_ANSWER} bytes")
        assert (moved.status, moved.failed, moved.reason) == (302, True, "upstream answered 302")

    with serving(recorder_app(seen)) as base:
        asyncio.run(go(base))
    method, path, raw_query, headers, got = seen[0]
    assert (method, path, raw_query, got) == ("POST", "/wx", b"acct=1&" + query, body)
    assert dict(headers)[b"content-type"] == b"text/xml; x=\xe9"
    assert [p for _, p, *_ in seen] == ["/wx", "/big", "/redirect"]  # no redirect followed


def test_nothing_listening_is_a_failure_not_an_exception() -> None:
    async def go() -> None:
        relay = Relay(timeout=2)
        async with relay.running():
            url = f"http://127.0.0.1:{free_port()}/wx"
            outcome = await relay.forward(url, "POST", b"a=1", None, b"")
        assert outcome.failed and outcome.status == 0
        assert outcome.reason.startswith("upstream unreachable (ConnectError")

    asyncio.run(go())
