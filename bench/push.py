"""Push-ingestion benchmark: sustained callback pushes/s and ack latency, next to a ceiling.

    python bench/push.py [--seconds 20] [--connections 64] [--long 1000000] [--no-record]

1. creates an account in a fresh SQLite database (``--db`` for another) and starts
   ``msgcube serve --workers 2`` on it with default settings (each request logged);
2. starts the ceiling, ``bench/ceiling_app.py`` — the same minimal Starlette app on
   uvicorn with 2 workers and a fixed answer as the API benchmark — and sends it the
   same push requests on its ``/datacube/{name}`` route (it reads the body and answers
   a fixed body);
3. loads each with ``wrk`` (as the API benchmark: 64 connections, 2 threads, one
   request in flight per connection like WeChat) for ``--seconds`` after a warm-up:
   the ceiling, msgcube in plaintext mode, msgcube in safe mode. Every push is a new
   MsgId, signed with the Token (safe mode: also AES-encrypted and ``msg_signature``-
   signed), prepared beforehand so ``wrk`` only replays bytes; a Lua hook counts any
   answer but HTTP 200 ``success``, which must be zero;
4. checks the database holds at least every acknowledged push and no more than were
   sent (duplicates are impossible by the unique keys);
5. with ``--long N``, sends N more plaintext pushes with an exact Python client
   (``push.Load``), samples the RSS of all server processes every 10%, and checks
   that exactly the N acknowledged pushes are stored;
6. prints the figures and appends a row to ``bench/RESULTS.md`` (``## Push ingestion``).

The load generator shares the machine's cores with the servers (the ceiling pays the
same price); the 1-minute load average before the run is recorded to show what else
ran. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from harness import (
    BENCH,
    LUA_DONE,
    MSGCUBE,
    ceiling_command,
    clean_env,
    free_port,
    load_of,
    require_wrk,
    run_wrk,
    start,
    stop,
)
from harness import Load as Wrk

RESULTS = BENCH / "RESULTS.md"
APPID = "wxpushbench000000001"
TOKEN = "bench-token"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ROW_MARK = "<!-- push rows -->"
CEILING_PATH = "/datacube/push"
GOALS = {"plain": 0.30, "safe": 0.20}
GOAL_P99_MS = 50.0


# --------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float:
    """Resident memory of a server and all its worker processes, in MiB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    except psutil.Error:
        return 0.0


# --------------------------------------------------------------------------- pushes


class Pushes:
    """Signed push requests, each with a new MsgId, as raw HTTP/1.1 bytes."""

    def __init__(self, mode: str, port: int, start_msgid: int, path: str = "") -> None:
        from msgcube.wechat import AESKey

        self.mode = mode
        self.path = path or f"/wechat/callback/{APPID}"
        self.host = f"127.0.0.1:{port}"
        self.key = AESKey(KEY)
        self.next_id = start_msgid
        self.users = [f"oBench{i:06d}{secrets.token_hex(6)}" for i in range(5000)]

    def __call__(self) -> bytes:
        from msgcube.wechat import cdata, encrypt

        msg_id = self.next_id
        self.next_id += 1
        now = int(time.time())
        user = self.users[msg_id % len(self.users)]
        xml = (
            f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
            f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{now}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello {msg_id}]]></Content>"
            f"<MsgId>{msg_id}</MsgId></xml>"
        ).encode()
        ts, nonce = str(now), str(1_000_000_000 + msg_id % 1_000_000_000)
        query = f"signature={_sha1(TOKEN, ts, nonce)}&timestamp={ts}&nonce={nonce}"
        if self.mode == "safe":
            encrypted = encrypt(self.key, xml, APPID)
            query += f"&encrypt_type=aes&msg_signature={_sha1(TOKEN, ts, nonce, encrypted)}"
            xml = (
                f"<xml><ToUserName>{cdata('gh_bench')}</ToUserName>"
                f"<Encrypt>{cdata(encrypted)}</Encrypt></xml>"
            ).encode()
        head = (
            f"POST {self.path}?{query} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(xml)}\r\n\r\n"
        ).encode()
        return head + xml


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


# --------------------------------------------------------------------------- load generator


@dataclass
class Load:
    sent: int = 0
    ok: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    measuring: bool = False
    expect: bytes | None = b"success"
    random: random.Random = field(default_factory=lambda: random.Random(20261130))

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0


_CL = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class _Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time, each sent after
    a random pause of mean ``pause`` seconds after the previous answer (0: at once)."""

    def __init__(
        self, make: Callable[[], bytes], load: Load, budget: Iterator[int], pause: float = 0.0
    ) -> None:
        self.make, self.load, self.budget, self.pause = make, load, budget, pause
        self.buf = b""
        self.started = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():  # a paced send due after the slice closed it
            return
        if self.stopping or next(self.budget, None) is None:
            self.transport.close()
            return
        request = self.make()
        self.started = time.perf_counter()
        self.load.sent += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end]
        match = _CL.search(head)
        length = int(match.group(1)) if match else 0
        if len(self.buf) < end + 4 + length:
            return
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        elapsed = time.perf_counter() - self.started
        status = head[9:12].decode()
        if status == "200" and (self.load.expect is None or body == self.load.expect):
            self.load.ok += 1
            if self.load.measuring:
                self.load.latencies.append(elapsed)
        else:
            self.load.bad[status] = self.load.bad.get(status, 0) + 1
        if self.pause:
            wait = self.load.random.expovariate(1 / self.pause)
            asyncio.get_running_loop().call_later(wait, self.send)
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def drive(
    port: int,
    make: Callable[[], bytes],
    connections: int,
    seconds: float,
    warmup: float,
    total: int | None = None,
    on_tick: Callable[[Load], None] | None = None,
    expect: bytes | None = b"success",
    rate: float = 0.0,
) -> Load:
    """Keep ``connections`` busy for ``warmup + seconds`` (or until ``total`` requests).

    A request counts as answered when it gets HTTP 200 and, unless ``expect`` is None,
    exactly that body. With a ``rate``, each connection waits a random time of mean
    ``connections / rate`` seconds (exponential: pushes from many users arrive
    independently) after an answer before its next request: about that many requests/s
    are offered, fewer if answers are slow, so latency is measured below saturation
    instead of being the queue that saturation builds. A fixed pause would not do: the
    connections answered by one group commit would all come back at once, forever in
    step.
    """
    loop = asyncio.get_running_loop()
    load = Load(expect=expect)
    budget: Iterator[int] = iter(range(total)) if total is not None else iter(int, 1)
    conns: list[_Conn] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: _Conn(make, load, budget, connections / rate if rate else 0.0),
            "127.0.0.1",
            port,
        )
        conns.append(proto)
    if total is None:
        await asyncio.sleep(warmup)
        load.measuring, start = True, time.perf_counter()
        await asyncio.sleep(seconds)
        load.seconds = time.perf_counter() - start
        load.measuring = False
        for c in conns:
            c.stopping = True
    else:
        load.measuring, start = True, time.perf_counter()
        while not all(c.done.done() for c in conns):
            await asyncio.sleep(1.0)
            if on_tick:
                on_tick(load)
        load.seconds = time.perf_counter() - start
    await asyncio.wait([c.done for c in conns], timeout=30)
    return load


def run_load(*args: object, **kwargs: object) -> Load:
    try:
        import uvloop

        return uvloop.run(drive(*args, **kwargs))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(drive(*args, **kwargs))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- main


# --------------------------------------------------------------------------- wrk

LUA = r"""
COUNTERS = {"bad", "wrapped"}
local threads, count = {}, 0
function setup(thread)
  thread:set("tid", count); count = count + 1
  table.insert(threads, thread)
end
function init(args)
  targets, bodies, bad, n, wrapped = {}, {}, 0, 0, 0
  local i = 0
  for line in io.lines(FILE) do
    if i % NTHREADS == tid then
      local tab = string.find(line, "\t", 1, true)
      table.insert(targets, string.sub(line, 1, tab - 1))
      table.insert(bodies, string.sub(line, tab + 1))
    end
    i = i + 1
  end
end
function request()
  n = n + 1
  if n > #targets then wrapped = wrapped + 1 end
  local k = (n - 1) % #targets + 1
  return wrk.format("POST", targets[k], {["Content-Type"] = "text/xml"}, bodies[k])
end
function response(status, headers, body)
  if status ~= 200 or (EXPECT ~= "" and body ~= EXPECT) then bad = bad + 1 end
end
"""


def request_file(
    path: Path, mode: str, port: int, first_id: int, count: int, target: str = ""
) -> Path:
    """``count`` pushes, one ``TARGET\tBODY`` line each, every one a new MsgId."""
    pushes = Pushes(mode, port, first_id, path=target)
    with open(path, "wb") as out:
        for _ in range(count):
            head, body = pushes().split(b"\r\n\r\n", 1)
            out.write(head.split(b" ", 2)[1] + b"\t" + body + b"\n")
    return path


def wrk(
    port: int,
    requests: Path,
    seconds: float,
    args: argparse.Namespace,
    workdir: Path,
    expect: str = "success",
) -> Wrk:
    script = workdir / "push.lua"
    header = f"FILE = {str(requests)!r}\nNTHREADS = {args.threads}\nEXPECT = {expect!r}\n"
    script.write_text(header + LUA + LUA_DONE)
    url = f"http://127.0.0.1:{port}/"
    fields = run_wrk(
        script, url, seconds=seconds, connections=args.connections, threads=args.threads
    )
    if fields["wrapped"] and expect:
        raise RuntimeError(f"{requests.name}: ran out of distinct pushes (raise the rate budget)")
    return load_of(fields)


# --------------------------------------------------------------------------- main


def stored_messages(db: str) -> int:
    from sqlalchemy import func, select

    from msgcube.storage.db import open_store
    from msgcube.storage.schema import messages

    store = open_store(db, migrate_schema=False)
    try:
        with store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())
    finally:
        store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="server workers (both servers)")
    parser.add_argument("--long", type=int, default=0, help="pushes in the RSS run (0: none)")
    parser.add_argument("--db", default="", help="database URL (default: a temp SQLite file)")
    parser.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    if not require_wrk():
        return 2

    from msgcube.settings import Settings

    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="msgcube-push-bench-"))
    db = Settings(db=args.db or str(workdir / "bench.db")).db_url
    log = workdir / "servers.log"
    subprocess.run(
        [MSGCUBE, "account", "add", "--appid", APPID, "--token", TOKEN, "--aes-key", KEY],
        env=clean_env(MSGCUBE_DB=db),
        check=True,
        capture_output=True,
    )
    print(f"cores: {os.cpu_count()}, load average {load_before:.2f}, db {db}", flush=True)

    # Distinct pushes for each run at a generous rate: warm-up and measured run read
    # separate files, and a run that would wrap around (resend MsgIds) is refused
    # (plaintext pushes passed 10,000/s on the idle 2-core machine of 2026-11-30).
    rate = 25_000
    port, c_port = free_port(), free_port()
    files: dict[str, Path] = {
        "ceiling": request_file(workdir / "ceiling.req", "plain", c_port, 1, 50_000, CEILING_PATH),
    }
    for n, mode in enumerate(("plain", "safe"), start=1):
        for part, seconds in (("warm", args.warmup), ("run", args.seconds)):
            first = n * 10**12 + (5 * 10**11 if part == "run" else 0)
            files[f"{mode}-{part}"] = request_file(
                workdir / f"{mode}-{part}.req", mode, port, first, int(rate * seconds) + 1000
            )

    ceiling = start(ceiling_command(c_port, args.workers), clean_env(), log, c_port)
    try:
        wrk(c_port, files["ceiling"], args.warmup, args, workdir, expect="")
        c = wrk(c_port, files["ceiling"], args.seconds, args, workdir, expect="")
    finally:
        stop(ceiling)
    print(f"ceiling: {c.rps:,.0f} req/s, p50 {c.p50_ms:.1f} ms, p99 {c.p99_ms:.1f} ms", flush=True)

    serve_env = clean_env(MSGCUBE_DB=db, MSGCUBE_PORT=str(port), MSGCUBE_WORKERS=str(args.workers))
    server = start([MSGCUBE, "serve"], serve_env, log, port)
    results: dict[str, Wrk] = {}
    rss: list[tuple[int, float]] = []
    checks: list[str] = []
    try:
        for mode in ("plain", "safe"):
            before = stored_messages(db)
            warm = wrk(port, files[f"{mode}-warm"], args.warmup, args, workdir)
            run = wrk(port, files[f"{mode}-run"], args.seconds, args, workdir)
            stored = stored_messages(db) - before
            answered = warm.requests + run.requests
            # wrk drops the requests in flight when its time is up: those may be stored
            # without being counted, at most one per connection per run.
            if not answered <= stored <= answered + 2 * args.connections:
                checks.append(f"{mode}: {answered} answered but {stored} stored")
            results[mode] = run
            print(
                f"{mode}: {run.rps:,.0f} pushes/s ({run.rps / c.rps:.0%} of the ceiling), "
                f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms; {answered:,} answered "
                f"success, {stored:,} stored",
                flush=True,
            )
        if args.long:
            before = stored_messages(db)
            acked = long_run(args, port, server, rss)
            stored = stored_messages(db) - before
            if stored != acked:
                checks.append(f"long run: {acked} acknowledged but {stored} stored")
            print(f"long run: {acked:,} acknowledged, {stored:,} stored", flush=True)
    finally:
        stop(server)
        if not args.db:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_record:
        record(args, c, results, rss, load_before, not checks)
    met = all(results[m].rps >= GOALS[m] * c.rps and results[m].p99_ms < GOAL_P99_MS for m in GOALS)
    print(
        f"cores {os.cpu_count()}, load average before {load_before:.2f}, "
        f"after {os.getloadavg()[0]:.2f}; goals {'met' if met else 'NOT met'}; "
        f"stored checks {'; '.join(checks) or 'ok'}"
    )
    return 1 if checks else 0


def long_run(
    args: argparse.Namespace,
    port: int,
    server: subprocess.Popen[bytes],
    rss: list[tuple[int, float]],
) -> int:
    """N plaintext pushes with the exact client while sampling the servers' RSS."""
    pushes = Pushes("plain", port, 3 * 10**12)
    rss.append((0, rss_mb(server.pid)))
    marks = sorted({args.long * k // 10 for k in range(1, 11)})

    def tick(load: Load) -> None:
        while marks and load.ok >= marks[0]:
            marks.pop(0)
            rss.append((load.ok, rss_mb(server.pid)))
            print(f"  {load.ok:,} pushes, server RSS {rss[-1][1]:.0f} MiB", flush=True)

    load = run_load(port, pushes, args.connections, 0, 0, total=args.long, on_tick=tick)
    rss.append((load.ok, rss_mb(server.pid)))
    print(
        f"long run: {load.ok:,} pushes in {load.seconds:.0f}s ({load.ok / load.seconds:,.0f}/s), "
        f"p50 {load.pct(0.5):.1f} ms, p99 {load.pct(0.99):.1f} ms, failed {load.bad or 0}",
        flush=True,
    )
    return load.ok


SECTION = """## Push ingestion (`bench/push.py`)

`msgcube serve --workers 2` (default settings: each request logged) on a fresh SQLite
database, next to the ceiling `bench/ceiling_app.py` (minimal Starlette on uvicorn, same
workers, reads the body and answers a fixed body), both driven in the same run by `wrk`
at 64 connections (2 threads, one push in flight per connection like WeChat) on the same
machine, so the load generator and the servers share its cores. Every push is a new
MsgId, signed with the Token; safe mode also AES-encrypted with `msg_signature`. Warm-up
3 s, then the stated seconds per mode. Latency is wrk's (request sent → answer read).
"answered = stored" checks that every push answered `success` is in the database (and
at most the requests cut off in flight more). The long run sends N plaintext pushes
with an exact client and samples the RSS of all server processes every 10%; its
pushes/s come from that Python client, not wrk. Goals: plaintext ≥ 30% of the
ceiling's requests/s, safe ≥ 20%, p99 < 50 ms, memory flat. "load" is the 1-minute
load average before the run (other work on the machine).

| date | cores | load | s | ceiling req/s | plain pushes/s | plain p50 / p99 ms \
| safe pushes/s | safe p50 / p99 ms | long run: pushes, RSS MiB at 10% → end | answered = stored |
|---|---|---|---|---|---|---|---|---|---|---|
<!-- push rows -->
"""


def record(
    args: argparse.Namespace,
    c: Wrk,
    results: dict[str, Wrk],
    rss: list[tuple[int, float]],
    load: float,
    exact: bool,
) -> None:
    plain, safe = results["plain"], results["safe"]
    memory = "not run"
    if len(rss) > 2:  # rss[0] is before the first push, rss[1] after the first 10%
        memory = f"{rss[-1][0]:,}: {rss[1][1]:.0f} → {rss[-1][1]:.0f}"
    row = (
        f"| {date.today()} | {os.cpu_count()} | {load:.2f} | {args.seconds:g} "
        f"| {c.rps:,.0f} | {plain.rps:,.0f} ({plain.rps / c.rps:.0%}) "
        f"| {plain.p50_ms:.1f} / {plain.p99_ms:.1f} | {safe.rps:,.0f} ({safe.rps / c.rps:.0%}) "
        f"| {safe.p50_ms:.1f} / {safe.p99_ms:.1f} | {memory} | {'yes' if exact else 'NO'} |"
    )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if ROW_MARK not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION
    # Rows go above the marker, so the table reads oldest to newest.
    text = text.replace(ROW_MARK, row + "\n" + ROW_MARK, 1)
    RESULTS.write_text(text, encoding="utf-8")
    print(f"recorded in {RESULTS} (Python {platform.python_version()})")


if __name__ == "__main__":
    sys.exit(main())
