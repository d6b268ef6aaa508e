"""Relay benchmark: the latency msgcube adds in front of an account's own server.

    python bench/relay.py [--seconds 5] [--rounds 4] [--concurrency 1,8] [--think-ms 0,20]
                          [--rates 0] [--workers 1] [--db-dir DIR]
                          [--no-record]

1. starts a minimal upstream — ``upstream_app`` below, a bare ASGI app on uvicorn (one
   worker) answering every push with a fixed encrypted passive reply, as a bot would,
   after ``think`` ms (the bot's own work; 0 = as fast as it gets) — and ``msgcube
   serve`` (one worker, default settings) on a fresh SQLite database (in ``--db-dir``,
   default a temporary directory) with an account whose upstream is that app, and the
   bare relay (``bare_relay_app`` below: what any durable relay must do, and nothing
   else) in front of the same app;
2. for each think time and concurrency (connections, one push in flight each, like
   WeChat), runs ``--rounds`` alternating slices of ``--seconds``: WeChat-style pushes
   (signed, safe mode, a new MsgId each, text/xml) straight to the upstream, then the
   same kind of pushes to the bare relay, then to msgcube's callback URL, which stores
   each one durably and relays it there, concurrently. Alternating slices share
   whatever else the machine is doing;
   With ``--rates`` other than 0, each connection also waits ``connections / rate``
   seconds between its pushes, offering about that many pushes/s (see below);
3. compares the latency percentiles (request sent → whole answer read): the added
   latency is msgcube's p50 / p99 minus the upstream's own. Goals: added p50 ≤ 2 ms,
   added p99 ≤ 10 ms. The bare relay's added latency is the floor this machine sets
   any relay that stores durably; msgcube's minus it is msgcube's own work. Every
   answer must be the upstream's reply byte for byte;
4. checks every relayed push answered is stored, and that the timings recorded for
   interface analysis count at least every answered push (after a clean shutdown);
5. prints the figures and appends rows to ``bench/RESULTS.md`` (``## Relay``).

The load generator (``push.drive``, an exact asyncio client) shares the machine's cores
with both servers. To starve msgcube as little as possible it makes each slice's pushes
(``--prepare``) before the slice starts and then only writes bytes; msgcube's share of a
core during each relayed slice is printed: a concurrency at which it nears 100% measures
queueing behind one busy worker, not what a push costs. The 1-minute load average
before the run is recorded.

Why paced rates: with every connection sending its next push the moment the last one is
answered, a setting that saturates msgcube's one worker measures the queue in front of
it — by Little's law, connections ÷ pushes/s — rather than what relaying adds to a push.
The saturated rows give the throughput; the paced rows (same connections, a fixed
offered rate below it) give the latency a busy account sees. Never part of the test
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from harness import MSGCUBE
from push import (
    APPID,
    BENCH,
    KEY,
    RESULTS,
    TOKEN,
    Load,
    Pushes,
    clean_env,
    free_port,
    run_load,
    start,
    stop,
    stored_messages,
)

ROW_MARK = "<!-- relay rows, with the bare relay -->"
GOAL_P50_MS = 2.0
GOAL_P99_MS = 10.0


def passive_reply() -> bytes:
    """An encrypted passive text reply as a bot sends it (what the upstream answers)."""
    from msgcube.wechat import AESKey, cdata, encrypt, msg_signature

    xml = (
        b"<xml><ToUserName><![CDATA[oBench000000]]></ToUserName>"
        b"<FromUserName><![CDATA[gh_bench]]></FromUserName><CreateTime>1767196800</CreateTime>"
        b"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[thanks!]]></Content></xml>"
    )
    sealed = encrypt(AESKey(KEY), xml, APPID)
    signed = msg_signature(TOKEN, "1767196800", "1234567890", sealed)
    return (
        f"<xml><Encrypt>{cdata(sealed)}</Encrypt><MsgSignature>{cdata(signed)}</MsgSignature>"
        f"<TimeStamp>1767196800</TimeStamp><Nonce>{cdata('1234567890')}</Nonce></xml>"
    ).encode()


# The upstream process answers the reply its parent made (encryption is randomised).
REPLY = os.environ.get("RELAY_BENCH_REPLY", "").encode() or passive_reply()
REPLY_HEADERS = [
    (b"content-type", b"application/xml"),
    (b"content-length", str(len(REPLY)).encode()),
]


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The minimal upstream: read the push, think ``/bot/{ms}`` ms, answer the reply.

    ``uvicorn relay:upstream_app --app-dir bench --lifespan off``
    """
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    think = int(scope["path"].rsplit("/", 1)[-1] or 0)
    if think:
        await asyncio.sleep(think / 1000)
    await send({"type": "http.response.start", "status": 200, "headers": REPLY_HEADERS})
    await send({"type": "http.response.body", "body": REPLY})


class BareRelay:
    """The least any durable relay does, for a floor to measure msgcube against.

    Each push is appended to a file and fsynced on a worker thread (a durable store of one
    fsync, as msgcube's commit of a lone push) while its exact bytes go to the upstream
    over a kept-alive connection; the answer is the upstream's, sent when both are done.
    No signature, decryption, parsing, database or routing: what msgcube adds over this
    relay's own added latency is msgcube's work; the rest is what the machine charges
    any relay on this stack (uvicorn, uvloop, one thread hand-off, one fsync, one more
    process on the path). ``RELAY_BENCH_UPSTREAM_PORT`` and ``RELAY_BENCH_SPOOL`` say
    where to.
    """

    def __init__(self) -> None:
        self.port = int(os.environ["RELAY_BENCH_UPSTREAM_PORT"])
        self.spool = open(os.environ["RELAY_BENCH_SPOOL"], "ab", buffering=0)  # noqa: SIM115
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def store(self, body: bytes) -> None:
        self.spool.write(body)
        os.fsync(self.spool.fileno())

    async def forward(self, target: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        """(status, content type, body) of the upstream's answer to ``body``."""
        link = None
        while self.idle and link is None:
            link = self.idle.pop()
            if link[0].at_eof():  # the upstream closed it while idle (its keep-alive timeout)
                link[1].close()
                link = None
        link = link or await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = link
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (target, len(body), body)
        )
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if line)
        answer = await reader.readexactly(int(headers[b"content-length"]))
        self.idle.append(link)
        return int(lines[0].split(b" ")[1]), headers.get(b"content-type", b""), answer


_bare: BareRelay | None = None


async def bare_relay_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``BareRelay`` as an ASGI app: ``/relay/bot/{ms}?…`` is sent on as ``/bot/{ms}?…``.

    ``uvicorn relay:bare_relay_app --app-dir bench --lifespan off``
    """
    global _bare
    if scope["type"] != "http":
        return
    relay = _bare = _bare or BareRelay()
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    target = scope["raw_path"].removeprefix(b"/relay") + b"?" + scope["query_string"]
    stored = asyncio.ensure_future(asyncio.to_thread(relay.store, body))
    status, ctype, answer = await relay.forward(target, body)
    await stored
    headers = [(b"content-type", ctype), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@dataclass
class Pair:
    """Pooled latencies of one setting: straight to the upstream, through the bare relay
    and through msgcube."""

    think: int
    concurrency: int
    rate: float  # offered pushes/s (0: each connection as fast as answers come)
    direct: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    relayed: list[float] = field(default_factory=list)
    relayed_ok: int = 0
    bad: collections.Counter[str] = field(default_factory=collections.Counter)  # side: status
    cpu: list[float] = field(default_factory=list)  # msgcube's share of a core, per slice
    cpu_ms: list[float] = field(default_factory=list)  # msgcube's CPU ms per push, per slice
    relayed_s: float = 0.0  # measured seconds of the relayed slices

    @property
    def setting(self) -> str:
        """The connections, and the offered rate when paced."""
        return f"{self.concurrency} @ {self.rate:g}/s" if self.rate else str(self.concurrency)

    def pct(self, which: str, q: float) -> float:
        lat = sorted(getattr(self, which))
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

    def added(self, q: float, which: str = "relayed") -> float:
        """``which``'s percentile ``q`` over the upstream's own, in ms."""
        return self.pct(which, q) - self.pct("direct", q)


class Prepared:
    """``count`` pushes made before the slice starts, so that the load generator only
    writes bytes and leaves the cores to the servers; more are made as needed."""

    def __init__(self, pushes: Pushes, count: int) -> None:
        self.pushes = pushes
        self.ready = collections.deque(pushes() for _ in range(count))

    def __call__(self) -> bytes:
        return self.ready.popleft() if self.ready else self.pushes()


class Cpu:
    """The share of one core msgcube's processes (with ``--workers`` > 1 its worker
    processes) used from now until ``share()``."""

    def __init__(self, server: subprocess.Popen[bytes]) -> None:
        import psutil

        parent = psutil.Process(server.pid)
        self.procs = [parent, *parent.children(recursive=True)]
        self.cpu, self.wall = self._total(), time.perf_counter()

    def _total(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs)

    def used(self) -> float:
        return self._total() - self.cpu

    def share(self) -> float:
        return self.used() / (time.perf_counter() - self.wall)


def measure(
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    port: int,
    u_port: int,
    b_port: int,
    env: dict[str, str],
) -> list[Pair]:
    pairs: list[Pair] = []
    next_id = 10**12
    for think in args.think_ms:
        path = f"/bot/{think}"
        msgcube(
            "account",
            "set",
            "--appid",
            APPID,
            "--upstream",
            f"http://127.0.0.1:{u_port}{path}",
            env=env,
        )
        time.sleep(1.5)  # the server's account cache (1 s) sees the new upstream
        for concurrency, rate in [(c, r) for c in args.concurrency for r in args.rates]:
            pair = Pair(think, concurrency, rate)
            for _ in range(args.rounds):
                sides = (
                    (u_port, path, "direct", "upstream"),
                    (b_port, f"/relay{path}", "bare", "bare relay"),
                    (port, "", "relayed", "msgcube"),
                )
                for target, target_path, kept_in, side in sides:
                    pushes = Prepared(
                        Pushes("safe", target, next_id, path=target_path), args.prepare
                    )
                    next_id += 10**9
                    cpu = Cpu(server)
                    load: Load = run_load(
                        *(target, pushes, concurrency, args.seconds, args.warmup),
                        expect=REPLY,
                        rate=rate,
                    )
                    getattr(pair, kept_in).extend(load.latencies)
                    pair.bad.update({f"{side} {status}": n for status, n in load.bad.items()})
                    if target == port:
                        pair.cpu.append(cpu.share())
                        pair.cpu_ms.append(cpu.used() * 1000 / max(load.ok, 1))
                        pair.relayed_ok += load.ok
                        pair.relayed_s += load.seconds
            pairs.append(pair)
            print(
                f"think {think} ms, c={pair.setting} ({len(pair.relayed) / pair.relayed_s:,.0f}"
                f" relayed/s, msgcube at {max(pair.cpu):.0%} of a core, "
                f"{min(pair.cpu_ms):.2f} ms CPU per push): "
                f"upstream p50 {pair.pct('direct', 0.5):.2f} "
                f"/ p99 {pair.pct('direct', 0.99):.2f} ms; through msgcube p50 "
                f"{pair.pct('relayed', 0.5):.2f} / p99 {pair.pct('relayed', 0.99):.2f} ms; "
                f"added p50 {pair.added(0.5):+.2f} ms, p99 {pair.added(0.99):+.2f} ms "
                f"(the bare relay's {pair.added(0.5, 'bare'):+.2f} / "
                f"{pair.added(0.99, 'bare'):+.2f} ms); "
                f"{len(pair.relayed):,} relayed, bad answers {dict(pair.bad) or 0}",
                flush=True,
            )
    return pairs


def msgcube(*args: str, env: dict[str, str]) -> None:
    subprocess.run([MSGCUBE, *args], env=env, check=True, capture_output=True)


def relay_calls(db: str) -> tuple[int, int]:
    """(rows, failed rows) in relay_calls."""
    from sqlalchemy import case, func, select

    from msgcube.storage.db import open_store
    from msgcube.storage.schema import relay_calls as table

    store = open_store(db, migrate_schema=False)
    try:
        with store.read() as conn:
            rows = conn.execute(
                select(func.count(), func.sum(case((table.c.failed, 1), else_=0)))
            ).one()
            return int(rows[0]), int(rows[1] or 0)
    finally:
        store.dispose()


def uvicorn_cmd(app: str, port: int) -> list[str]:
    """One uvicorn worker serving ``app`` of this module, as the bot and the bare relay run."""
    return [
        *(sys.executable, "-m", "uvicorn", f"relay:{app}", "--app-dir", str(BENCH)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--lifespan", "off"),
        *("--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "30"),
    ]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per slice")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up per slice")
    parser.add_argument("--rounds", type=int, default=4, help="slices per side and setting")
    parser.add_argument(
        "--concurrency", type=_ints, default=[1, 8], help="comma-separated connection counts"
    )
    parser.add_argument(
        "--think-ms", type=_ints, default=[0, 20], help="comma-separated upstream think times in ms"
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.0],
        help="comma-separated offered pushes/s (0: unpaced, each connection flat out)",
    )
    parser.add_argument("--workers", type=int, default=1, help="msgcube serve's workers")
    parser.add_argument("--db-dir", default="", help="directory of the SQLite file")
    parser.add_argument("--prepare", type=int, default=20_000, help="pushes made before each slice")
    parser.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()

    from msgcube.settings import Settings

    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="msgcube-relay-bench-", dir=args.db_dir or None))
    db = Settings(db=str(workdir / "bench.db")).db_url
    log = workdir / "servers.log"
    port, u_port, b_port = free_port(), free_port(), free_port()
    env = clean_env(MSGCUBE_DB=db)
    msgcube("account", "add", "--appid", APPID, "--token", TOKEN, "--aes-key", KEY, env=env)
    print(f"cores: {os.cpu_count()}, load average {load_before:.2f}, db {db}", flush=True)

    upstream_env = clean_env(RELAY_BENCH_REPLY=REPLY.decode())
    upstream = start(uvicorn_cmd("upstream_app", u_port), upstream_env, log, u_port)
    bare_env = clean_env(
        RELAY_BENCH_UPSTREAM_PORT=str(u_port), RELAY_BENCH_SPOOL=str(workdir / "bare.spool")
    )
    bare = start(uvicorn_cmd("bare_relay_app", b_port), bare_env, log, b_port)
    checks: list[str] = []
    try:
        serve_env = env | {"MSGCUBE_PORT": str(port), "MSGCUBE_WORKERS": str(args.workers)}
        server = start([MSGCUBE, "serve"], serve_env, log, port)
        try:
            pairs = measure(args, server, port, u_port, b_port, env)
        finally:
            stop(server)  # SIGTERM: the recorder writes its last timings
        answered = sum(p.relayed_ok for p in pairs)
        stored = stored_messages(db)
        calls, failed = relay_calls(db)
        bad = sum((p.bad for p in pairs), collections.Counter[str]())
        if bad:
            checks.append(f"answers that were not the upstream's reply: {dict(bad)}")
        # Requests cut off in flight at the end of a slice may be stored (and relayed)
        # without being counted: at most one per connection per slice.
        slack = sum(p.concurrency for p in pairs) * args.rounds
        if not answered <= stored <= answered + slack:
            checks.append(f"{answered} answered but {stored} stored")
        if not answered <= calls <= answered + slack:
            checks.append(f"{answered} answered but {calls} relay timings recorded")
        print(
            f"relayed and answered {answered:,}; stored {stored:,}; timings {calls:,} "
            f"({failed} failed)",
            flush=True,
        )
    finally:
        stop(bare)
        stop(upstream)
        shutil.rmtree(workdir, ignore_errors=True)
    met = all(
        p.relayed and p.added(0.5) <= GOAL_P50_MS and p.added(0.99) <= GOAL_P99_MS for p in pairs
    )
    if not args.no_record:
        record(args, pairs, load_before, not checks)
    print(
        f"cores {os.cpu_count()}, load average before {load_before:.2f}, after "
        f"{os.getloadavg()[0]:.2f}; goals {'met' if met else 'NOT met'}; "
        f"checks {'; '.join(checks) or 'ok'}"
    )
    return 1 if checks else 0


SECTION = """## Relay (`bench/relay.py`)

What msgcube adds in front of an account's own server. A minimal upstream (a bare ASGI
app on one uvicorn worker answering each push with a fixed encrypted passive reply after
"think" ms, the bot's own work) is sent WeChat-style pushes (safe mode, signed, a new
MsgId each, `text/xml`, one in flight per connection; "8 @ 500/s": 8 connections
offering 500 pushes/s between them, each pausing after an answer) straight, and through `msgcube
serve` (one worker, default settings, a fresh SQLite database in "db dir": every push is
committed durably *and* forwarded, concurrently, and answered when both are done), in
alternating slices so both sides share whatever else the machine runs. Latency is the
exact client's (request sent → whole answer read; each slice's pushes are made before it
starts, so the client only writes bytes); "added" is msgcube's percentile minus the
upstream's own. Goals: added p50 ≤ 2 ms, p99 ≤ 10 ms. The same pushes also go through
the bare relay (`BareRelay`: an fsync of the push on a worker thread, concurrently with
sending its bytes on over a kept-alive connection, and nothing else, on the same uvicorn
stack); its added latency is what this machine charges any durable relay, and "msgcube
over bare" what msgcube's own work adds to that.
Every answer was checked to be the upstream's reply byte for byte; "stored" checks every
answered push is in the database and its timing was recorded. "load" is the 1-minute
load average before the run (other work on the machine).

"""
COLUMNS = (
    "date",
    "cores",
    "load",
    "db dir",
    "think ms",
    "connections",
    "slices × s",
    "upstream p50 / p99 ms",
    "through msgcube p50 / p99 ms",
    "added p50 / p99 ms",
    "bare relay added p50 / p99 ms",
    "msgcube over bare p50 / p99 ms",
    "stored",
)
SECTION += "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"


def record(args: argparse.Namespace, pairs: list[Pair], load: float, ok: bool) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if ROW_MARK not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION + ROW_MARK + "\n"
    db_dir = args.db_dir or tempfile.gettempdir()
    rows = "".join(
        f"| {date.today()} | {os.cpu_count()} | {load:.2f} | {db_dir} | {p.think} | "
        f"{p.setting} | {args.rounds} × {args.seconds:g} | "
        f"{p.pct('direct', 0.5):.2f} / {p.pct('direct', 0.99):.2f} | "
        f"{p.pct('relayed', 0.5):.2f} / {p.pct('relayed', 0.99):.2f} | "
        f"{p.added(0.5):+.2f} / {p.added(0.99):+.2f} | "
        f"{p.added(0.5, 'bare'):+.2f} / {p.added(0.99, 'bare'):+.2f} | "
        f"{p.pct('relayed', 0.5) - p.pct('bare', 0.5):+.2f} / "
        f"{p.pct('relayed', 0.99) - p.pct('bare', 0.99):+.2f} | {'yes' if ok else 'NO'} |\n"
        for p in pairs
    )
    RESULTS.write_text(text.replace(ROW_MARK, rows + ROW_MARK), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
