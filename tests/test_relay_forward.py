"""``Relay.forward`` against a real server on loopback: what goes out, what comes back,
and how its HTTP/1.1 pool (``relay/http11.py``) keeps, replaces and secures connections."""

from __future__ import annotations

import asyncio
import base64
import datetime
import gc
import ipaddress
import ssl
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from msgcube.relay import Relay
from msgcube.relay.forward import MAX_ANSWER
from msgcube.relay.http11 import MAX_HEAD, Http11Pool, Origin
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
        assert outcome.reason.startswith("upstream unreachable (ConnectionRefusedError")

    asyncio.run(go())


def peer_app(peers: list[tuple[int, dict[bytes, bytes]]]) -> Any:
    """Notes each request's client port and headers. /close answers ``Connection: close``,
    /chunked answers in three chunks (no Content-Length), anything else ``ok``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        peers.append((scope["client"][1], dict(scope["headers"])))
        headers = [(b"content-type", b"text/plain")]
        if scope["path"] == "/close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/chunked":
            for part in (b"<xml>", b"<a/>", b"</xml>"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send(
            {"type": "http.response.body", "body": b"" if scope["path"] == "/chunked" else b"ok"}
        )

    return app


def test_connections_are_kept_alive_and_replaced_once_the_upstream_closes_them() -> None:
    peers: list[tuple[int, dict[bytes, bytes]]] = []

    async def go(base: str) -> list[str]:
        relay = Relay(timeout=5)
        async with relay.running():
            bodies = [(await relay.forward(base + "/wx", "POST", b"", None, b"x")).body]
            bodies += [(await relay.forward(base + "/wx", "POST", b"", None, b"x")).body]
            await asyncio.sleep(1.6)  # the upstream closes the idle connection after 1 s
            late = await relay.forward(base + "/wx", "POST", b"", None, b"x")
            assert (late.failed, late.body) == (False, b"ok")
            closing = await relay.forward(base + "/close", "POST", b"", None, b"")
            after = await relay.forward(base + "/chunked", "POST", b"", None, b"")
        assert (closing.failed, after.failed, after.body) == (False, False, b"<xml><a/></xml>")
        return [b.decode() for b in bodies]

    with serving(peer_app(peers), keep_alive=1) as base:
        assert asyncio.run(go(base)) == ["ok", "ok"]
    ports = [port for port, _ in peers]
    assert ports[0] == ports[1]  # kept alive
    assert ports[2] != ports[1]  # the closed one was replaced, and the push went through
    assert ports[3] == ports[2]  # reused until the answer said Connection: close
    assert ports[4] != ports[3]
    headers = peers[0][1]
    assert headers[b"host"] == base.removeprefix("http://").encode()
    assert headers[b"content-length"] == b"1" and b"content-type" not in headers


def test_an_idle_close_the_loop_has_not_seen_yet_costs_no_push() -> None:
    """The upstream's keep-alive ends while msgcube's loop is busy: the next push still
    goes through, on a new connection (the pool asks the socket, not only the loop)."""
    peers: list[tuple[int, dict[bytes, bytes]]] = []

    async def go(base: str) -> None:
        relay = Relay(timeout=5)
        async with relay.running():
            first = await relay.forward(base + "/wx", "POST", b"", None, b"x")
            # Block the loop (a busy worker) while the upstream closes the idle link after
            # 1 s: its FIN waits in the kernel, and the link has not been told.
            time.sleep(1.5)
            second = await relay.forward(base + "/wx", "POST", b"", None, b"x")
        assert (first.failed, first.body) == (False, b"ok")
        assert (second.failed, second.reason, second.body) == (False, "", b"ok")

    with serving(peer_app(peers), keep_alive=1) as base:
        asyncio.run(go(base))
    assert len(peers) == 2 and peers[0][0] != peers[1][0]  # a new connection for the second


def test_a_password_in_the_upstream_url_is_sent_as_basic_credentials() -> None:
    peers: list[tuple[int, dict[bytes, bytes]]] = []

    async def go(url: str) -> None:
        relay = Relay(timeout=5)
        async with relay.running():
            assert not (await relay.forward(url, "POST", b"a=1", "text/xml", b"<xml/>")).failed

    with serving(peer_app(peers)) as base:
        asyncio.run(go(base.replace("http://", "http://bot:p%40ss@") + "/wx"))
    assert peers[0][1][b"authorization"] == b"Basic " + base64.b64encode(b"bot:p@ss")


def self_signed(tmp: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "msgcube test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_https_upstreams_are_verified(tmp_path: Path) -> None:
    peers: list[tuple[int, dict[bytes, bytes]]] = []
    cert, key = self_signed(tmp_path)

    async def go(base: str) -> None:
        relay = Relay(timeout=5)  # certifi's CA bundle: a self-signed certificate is refused
        async with relay.running():
            refused = await relay.forward(base + "/wx", "POST", b"", None, b"")
        assert refused.failed and "CERTIFICATE_VERIFY_FAILED" in refused.reason
        trusting = Http11Pool(tls=ssl.create_default_context(cafile=cert))
        try:
            origin = Origin.of(base + "/wx?acct=1")
            headers = [(b"host", origin.host_header), (b"content-length", b"0")]
            for _ in range(2):
                answer = await trusting.request(
                    origin, b"POST", origin.target, headers, b"", max_body=10
                )
                assert (answer.status, answer.body) == (200, b"ok")
        finally:
            await trusting.aclose()

    with serving(peer_app(peers), tls=(cert, key)) as base:
        assert base.startswith("https://")
        asyncio.run(go(base))
    assert len(peers) == 2 and peers[0][0] == peers[1][0]  # over one kept-alive TLS connection
    # Closed means closed once the loop is gone: a TLS link still exchanging close_notify
    # when the pool returned was left to the garbage collector (an "unclosed transport").
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("size", [MAX_ANSWER, MAX_ANSWER + 1])
def test_the_answer_cap_is_exact(size: int) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(size // 65536):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b"x" * (size % 65536)})

    async def go(base: str) -> None:
        relay = Relay(timeout=5)
        async with relay.running():
            first = await relay.forward(base + "/wx", "POST", b"", None, b"")
            second = await relay.forward(base + "/wx", "POST", b"", None, b"")
        for outcome in (first, second):
            if size <= MAX_ANSWER:
                assert (outcome.failed, len(outcome.body)) == (False, size)
            else:
                assert (outcome.failed, outcome.reason) == (
                    True,
                    f"upstream answer over {MAX_ANSWER} bytes",
                )

    with serving(app) as base:
        asyncio.run(go(base))


# Answers written byte for byte, for the framing cases a real bot may produce; after
# each, ``close`` says whether the server closes the connection.
SCRIPTED: dict[bytes, tuple[bytes, bool]] = {
    # HTTP/1.0 style: no Content-Length, the body ends where the connection does
    b"/eof": (b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n<xml>until close</xml>", True),
    # an interim answer first; the final one is what WeChat must get
    b"/interim": (
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Type: text/plain\r\n\r\nsuccess",
        False,
    ),
    # bytes nobody asked for after a complete answer: the answer stands, the link goes
    b"/junk": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK", False),
    # a declared length the connection does not deliver
    b"/short": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True),
    b"/upgrade": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n",
        False,
    ),
    b"/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n<xml>\r\n6\r\n</xml>\r\n0\r\nX-Trailer: t\r\n\r\n",
        False,
    ),
    # a transfer coding the relay cannot pass on (the body would reach WeChat still coded)
    b"/gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b...", False),
    b"/gzip-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b.\r\n0\r\n\r\n",
        False,
    ),
    # heads as a misbehaving upstream may send them: many headers, one endless header,
    # endless interim answers — each far beyond MAX_HEAD, and one big but fine head
    b"/many-headers": (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(20_000))
        + b"Content-Length: 2\r\n\r\nok",
        True,
    ),
    b"/long-header": (
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * (2 << 20) + b"\r\nContent-Length: 2\r\n\r\nok",
        True,
    ),
    b"/interims": (b"HTTP/1.1 100 Continue\r\n\r\n" * 100_000, True),
    b"/cookies": (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"Set-Cookie: c%d=%s\r\n" % (i, b"v" * 100) for i in range(150))
        + b"Content-Length: 7\r\n\r\nsuccess",
        False,
    ),
}


async def scripted_server(requests: list[tuple[int, bytes]]) -> tuple[asyncio.Server, str]:
    """Reads each request whole (headers and Content-Length body), answers ``SCRIPTED``;
    ``requests`` gets (connection number, request bytes) in order."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                requests.append((number, request))
                answer, close = SCRIPTED[request.split(b" ")[1].split(b"?")[0]]
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_answer_framing_the_way_bots_write_it() -> None:
    requests: list[tuple[int, bytes]] = []

    async def go() -> dict[str, Any]:
        server, base = await scripted_server(requests)
        relay = Relay(timeout=5)
        out: dict[str, Any] = {}
        async with server, relay.running():
            for path in ("/eof", "/interim", "/interim", "/junk", "/chunked", "/short"):
                outcome = await relay.forward(base + path, "POST", b"a=1", "text/xml", b"<xml/>")
                out.setdefault(path, []).append(outcome)
            out["/upgrade"] = [await relay.forward(base + "/upgrade", "POST", b"", None, b"")]
        return out

    out = asyncio.run(go())
    (eof,) = out["/eof"]
    assert (eof.failed, eof.status, eof.content_type, eof.body) == (
        False,
        200,
        "text/xml",
        b"<xml>until close</xml>",
    )
    for interim in out["/interim"]:
        assert (interim.failed, interim.status, interim.content_type, interim.body) == (
            False,
            200,
            "text/plain",
            b"success",
        )
    (junk,) = out["/junk"]
    assert (junk.failed, junk.body) == (False, b"ok")
    (chunked,) = out["/chunked"]
    assert (chunked.failed, chunked.body) == (False, b"<xml></xml>")
    (short,) = out["/short"]
    assert (short.failed, short.reason) == (
        True,
        "upstream unreachable (connection closed before a complete answer)",
    )
    (upgrade,) = out["/upgrade"]
    assert (upgrade.failed, upgrade.reason) == (
        True,
        "upstream unreachable (it switched protocols)",
    )
    # Which connection each request came on: a new one after the EOF-delimited answer,
    # the same one for both interim exchanges and the junk, a new one after the junk.
    numbers = [number for number, _ in requests]
    assert numbers == [1, 2, 2, 2, 3, 3, 4]
    first = requests[0][1]
    assert first.startswith(b"POST /eof?a=1 HTTP/1.1\r\n")
    assert first.endswith(b"\r\ncontent-type: text/xml\r\n\r\n<xml/>")


def test_a_header_that_would_break_the_framing_is_never_sent() -> None:
    requests: list[tuple[int, bytes]] = []

    async def go() -> Any:
        server, base = await scripted_server(requests)
        relay = Relay(timeout=5)
        async with server, relay.running():
            return await relay.forward(
                base + "/interim", "POST", b"", "text/xml\r\nX-Injected: 1", b"<xml/>"
            )

    outcome = asyncio.run(go())
    assert (outcome.failed, outcome.reason) == (
        True,
        "relay error (header content-type not sendable)",
    )
    assert requests == []


def test_an_answers_head_is_bounded_and_other_transfer_codings_refused() -> None:
    """llhttp bounds no header: without MAX_HEAD, one upstream answering megabytes of
    headers for 4.5 s grew a worker by hundreds of MB per push in flight."""
    requests: list[tuple[int, bytes]] = []

    async def go() -> dict[str, Any]:
        server, base = await scripted_server(requests)
        relay = Relay(timeout=5)
        paths = ("/many-headers", "/long-header", "/interims", "/cookies", "/gzip", "/gzip-chunked")
        async with server, relay.running():
            return {p: await relay.forward(base + p, "POST", b"", None, b"") for p in paths}

    started = time.monotonic()
    out = asyncio.run(go())
    assert time.monotonic() - started < 4  # refused as the head grew, not at the timeout
    too_big = f"upstream answer headers over {MAX_HEAD} bytes"
    for path in ("/many-headers", "/long-header", "/interims"):
        assert (out[path].failed, out[path].status, out[path].reason) == (True, 0, too_big)
    cookies = out["/cookies"]
    assert (cookies.failed, cookies.status, cookies.body) == (False, 200, b"success")
    assert (out["/gzip"].failed, out["/gzip"].reason) == (
        True,
        "upstream unreachable (unsupported transfer coding: gzip)",
    )
    assert (out["/gzip-chunked"].failed, out["/gzip-chunked"].reason) == (
        True,
        "upstream unreachable (unsupported transfer coding: gzip, chunked)",
    )


def _link_local_address() -> tuple[str, str] | None:
    """An IPv6 link-local address of this host and its interface, from the kernel's list."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hex_address, _index, _prefix, scope, _flags, interface = line.split()
        if scope == "20":  # link
            return str(ipaddress.IPv6Address(bytes.fromhex(hex_address))), interface
    return None


async def test_an_ipv6_link_local_upstream_with_its_zone_is_reached() -> None:
    """``http://[fe80::…%25eth0]:port/``: the zone is written %25 in a URL (RFC 6874) and
    must reach the connection as %eth0; the old code looked up the name ``fe80::…%25eth0``."""
    found = _link_local_address()
    if found is None:
        pytest.skip("this host has no IPv6 link-local address")
    address, interface = found
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, f"{address}%{interface}", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http11Pool()
    try:
        origin = Origin.of(f"http://[{address}%25{interface}]:{port}/wx")
        headers = [(b"host", origin.host_header), (b"content-length", b"0")]
        answer_ = await pool.request(origin, b"POST", origin.target, headers, b"", max_body=10)
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
    assert (answer_.status, answer_.body) == (200, b"ok")
    assert heads and heads[0].startswith(b"POST /wx HTTP/1.1\r\n")
