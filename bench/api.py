"""API benchmark: ``msgcube serve --workers 2`` on the demo data next to a minimal ceiling.

    python bench/api.py [--duration 10] [--connections 64] [--db demo.db] [--no-record]

1. builds the demo database with ``msgcube demo --no-serve`` (or reuses ``--db``);
2. starts ``msgcube serve --workers 2`` on it (default settings, so each request is
   logged with its rid like in production; only the datacube quota is lifted so the
   run measures answers, not 45009s) and gets a token from ``/cgi-bin/token``;
3. fetches msgcube's answers to the three benchmarked requests — ``getupstreammsg``
   over 7 days, ``getupstreammsghour`` for yesterday, ``getupstreammsgdistmonth`` for
   last month — and starts the ceiling, ``bench/ceiling_app.py`` (minimal Starlette on
   uvicorn, 2 workers) answering the same POSTs with those bodies;
4. loads each with ``wrk`` (Debian's package; ``apt-get install wrk``) at 64
   connections for ``--duration`` seconds, msgcube then the ceiling per request, after a
   short warm-up, with no Content-Type on the POST (as wechatpy sends it); a Lua hook
   counts any non-200 answer or errcode body, which must be zero;
5. then loads both servers again at the same *paced* rate — half the ceiling's
   requests/s, the rate the goal asks msgcube to sustain — each connection waiting
   ``connections / rate`` between its requests (wrk's ``delay()`` hook), and takes the
   p99 latency there;
6. prints requests/s, p50 and p99 latency and the ratio to the ceiling (goal: ≥ 50 % of
   the ceiling's requests/s at saturation, p99 < 20 ms at the paced rate) and appends
   them to ``bench/RESULTS.md``.

Why the p99 is taken at a paced rate: at saturation the 64 connections are always
queued, so by Little's law the latency is ``connections / throughput`` (p50 ≈ 64 / 10,000
req/s ≈ 6 ms), and its tail is how long the OS leaves a worker descheduled while wrk and
the other worker (and anything else on a shared machine) run — the ceiling's own p99
there moved between 6 and 47 ms from run to run with nothing changed. A server at
exactly half the ceiling's throughput has twice its queueing latency by construction, so
the saturated p99 mostly restates the ratio. At a rate both servers can sustain the
queue is short and the p99 shows what a request itself costs, pauses included (garbage
collection, the quota counter's reads and flushes, the background rollup). The saturated
p99 is still printed and recorded next to it.

The load generator runs on the same machine as both servers, so all three share its
cores; the 1-minute load average before the run is recorded to show what else ran.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import harness
import httpx
from harness import Load

DEMO_APPID = "wx5d3c0be1a2f40001"
GOAL_RATIO = 0.5
GOAL_P99_MS = 20.0

LUA = """
%(pacing)s
wrk.method = "POST"
wrk.body = '%(body)s'
COUNTERS = {"errcodes", "bad"}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errcodes = 0; bad = 0 end
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1
  elseif string.find(body, '"errcode"', 1, true) then errcodes = errcodes + 1 end
end
"""


@dataclass(frozen=True)
class Case:
    label: str
    name: str
    begin: date
    end: date

    def body(self) -> str:
        return json.dumps({"begin_date": self.begin.isoformat(), "end_date": self.end.isoformat()})


def build_demo(db: Path, log: Path) -> None:
    if db.exists():
        print(f"reusing demo database {db}")
        return
    print(f"building the demo database {db} (msgcube demo --no-serve) …", flush=True)
    started = time.perf_counter()
    with open(log, "ab") as out:
        command = [harness.MSGCUBE, "demo", "--no-serve", "--db", str(db)]
        env = harness.clean_env()
        subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    print(f"  built in {time.perf_counter() - started:.1f}s")


def demo_secret() -> str:
    from msgcube.cli.demo import demo_secret as secret

    return secret()


def cases(today: date) -> list[Case]:
    yesterday = today - timedelta(days=1)
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return [
        Case("getupstreammsg, 7 days", "getupstreammsg", yesterday - timedelta(days=6), yesterday),
        Case("getupstreammsghour, 1 day", "getupstreammsghour", yesterday, yesterday),
        Case("getupstreammsgdistmonth, 1 month", "getupstreammsgdistmonth", last_month, last_month),
    ]


def wrk(
    url: str,
    body: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    workdir: Path,
    delay_ms: int = 0,
) -> Load:
    """One wrk run; with ``delay_ms`` each connection waits that long between requests
    (wrk starts the latency clock when it sends, so the wait is not counted)."""
    script = workdir / "post.lua"
    pacing = f"function delay() return {delay_ms} end" if delay_ms else ""
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(LUA % {"body": escaped, "pacing": pacing} + harness.LUA_DONE)
    fields = harness.run_wrk(script, url, seconds=seconds, connections=connections, threads=threads)
    return harness.load_of(fields)


def measure(
    url: str, body: str, args: argparse.Namespace, workdir: Path, server: subprocess.Popen[bytes]
) -> Load:
    """A warm-up run, then the measured one; prints the server's CPU time per request."""
    options = {"connections": args.connections, "threads": args.threads, "workdir": workdir}
    if args.warmup:
        wrk(url, body, seconds=args.warmup, **options)
    cpu = harness.session_cpu_seconds(server)
    load = wrk(url, body, seconds=args.duration, **options)
    cpu = harness.session_cpu_seconds(server) - cpu
    print(f"  {url.split('?')[0]}: server CPU {cpu / load.requests * 1e6:.0f} µs/request")
    return load


def pacing_delay_ms(rate: float, connections: int) -> int:
    """The wait per connection between requests that offers about ``rate`` requests/s
    (a little less: each connection also waits for its answer)."""
    return max(1, round(connections * 1000 / rate))


def measure_paced(
    url: str, body: str, delay_ms: int, args: argparse.Namespace, workdir: Path
) -> Load:
    """The same requests at a paced rate (see the module docstring), no warm-up needed:
    the saturated run just warmed the server."""
    options = {"connections": args.connections, "threads": args.threads, "workdir": workdir}
    return wrk(url, body, seconds=args.duration, delay_ms=delay_ms, **options)


def answers(base: str, token: str, today: date) -> dict[str, str]:
    """msgcube's answer to each benchmarked request (rows required: no empty benchmark)."""
    bodies: dict[str, str] = {}
    for case in cases(today):
        url = f"{base}/datacube/{case.name}"
        answer = httpx.post(url, params={"access_token": token}, content=case.body())
        data = answer.json()
        if not data.get("list"):
            raise RuntimeError(f"{case.label}: no rows to serve: {answer.text[:200]}")
        bodies[case.name] = answer.text
        print(f"{case.label}: {len(data['list'])} rows, {len(answer.content)} bytes")
    return bodies


@dataclass(frozen=True)
class Result:
    """One request's figures: both servers saturated, then both at the same paced rate."""

    case: Case
    mine: Load
    ceiling: Load
    mine_paced: Load
    ceiling_paced: Load


def run(args: argparse.Namespace, workdir: Path) -> list[Result]:
    db = args.db or workdir / "demo.db"
    log = workdir / "servers.log"
    build_demo(db, log)
    port, ceiling_port = harness.free_port(), harness.free_port()
    base, ceiling = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ceiling_port}"
    serve_env = harness.clean_env(
        MSGCUBE_DB=str(db),
        MSGCUBE_PORT=str(port),
        MSGCUBE_WORKERS=str(args.workers),
        MSGCUBE_QUOTA_DATACUBE=str(10**9),
    )
    ceiling_cmd = harness.ceiling_command(ceiling_port, args.workers)
    results: list[Result] = []
    with harness.running([harness.MSGCUBE, "serve"], serve_env, log, port) as server:
        credentials = {
            "grant_type": "client_credential",
            "appid": DEMO_APPID,
            "secret": demo_secret(),
        }
        token = httpx.get(f"{base}/cgi-bin/token", params=credentials).json()["access_token"]
        from msgcube.domain.periods import local_today
        from msgcube.settings import Settings

        today = local_today(Settings.load({}, env=serve_env).clock())
        bodies_file = workdir / "bodies.json"
        bodies_file.write_text(json.dumps(answers(base, token, today)))
        ceiling_env = harness.clean_env(CEILING_BODIES=str(bodies_file))
        with harness.running(ceiling_cmd, ceiling_env, log, ceiling_port) as ceiling_server:
            for case in cases(today):
                path = f"/datacube/{case.name}?access_token={token}"
                mine = measure(base + path, case.body(), args, workdir, server)
                ceil = measure(ceiling + path, case.body(), args, workdir, ceiling_server)
                delay = pacing_delay_ms(GOAL_RATIO * ceil.rps, args.connections)
                result = Result(
                    case,
                    mine,
                    ceil,
                    measure_paced(base + path, case.body(), delay, args, workdir),
                    measure_paced(ceiling + path, case.body(), delay, args, workdir),
                )
                results.append(result)
                print_row(result)
        # The token still answers rows: nothing in the run was a quota or token error.
        first = cases(today)[0]
        check = httpx.post(
            f"{base}/datacube/{first.name}", params={"access_token": token}, content=first.body()
        )
        if "list" not in check.json():
            raise RuntimeError(f"after the run: {check.text}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="server workers (both servers)")
    parser.add_argument("--db", type=Path, default=None, help="demo database (built if missing)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    if not harness.require_wrk():
        return 2
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="msgcube-bench-api-") as tmp:
        results = run(args, Path(tmp))
    print(
        f"cores: {os.cpu_count()}, 1-min load average before {load_before:.2f}, "
        f"after {os.getloadavg()[0]:.2f}"
    )
    if not args.no_record:
        record(args, results, load_before)
    ok = all(met(r) for r in results)
    print(
        "goal met"
        if ok
        else "goal NOT met (≥ 50% of the ceiling's requests/s, p99 < 20 ms at the paced rate)"
    )
    return 0


def met(r: Result) -> bool:
    return r.mine.rps >= GOAL_RATIO * r.ceiling.rps and r.mine_paced.p99_ms < GOAL_P99_MS


def print_row(r: Result) -> None:
    m, c, mp, cp = r.mine, r.ceiling, r.mine_paced, r.ceiling_paced
    print(
        f"{r.case.label:34} saturated: msgcube {m.rps:8,.0f} req/s p50 {m.p50_ms:6.2f} ms "
        f"p99 {m.p99_ms:6.2f} ms | ceiling {c.rps:8,.0f} req/s p50 {c.p50_ms:6.2f} ms "
        f"p99 {c.p99_ms:6.2f} ms | {m.rps / c.rps:5.0%}\n"
        f"{'':34} paced:     msgcube {mp.rps:8,.0f} req/s p50 {mp.p50_ms:6.2f} ms "
        f"p99 {mp.p99_ms:6.2f} ms | ceiling {cp.rps:8,.0f} req/s p50 {cp.p50_ms:6.2f} ms "
        f"p99 {cp.p99_ms:6.2f} ms",
        flush=True,
    )


SECTION = """## API (`bench/api.py`)

`msgcube serve --workers 2` on the demo database (`msgcube demo --no-serve`: 120 days,
3000 users; default settings) next to the ceiling, `bench/ceiling_app.py` (minimal
Starlette on uvicorn, 2 workers, answering the same POST with msgcube's own answer as a
fixed body), measured in the same run with `wrk` at 64 connections (2 threads) on the
same machine, so the load generator and the servers share its cores.
"""

PACED_SECTION = """### Saturated throughput, p99 at a paced rate

From 2026-11-30 (issue 14) each request is measured twice per server: saturated (warm-up
2 s, then the stated seconds; gives the requests/s ratio), then paced at the same offered
rate for both servers — half the ceiling's saturated requests/s, each connection waiting
`64 / rate` between requests — for the p99 the goal is judged on (the saturated p99 is
kept in the table; why, in `bench/api.py`'s docstring and the notes below). Goal:
msgcube ≥ 50% of the ceiling's requests/s and p99 < 20 ms at the paced rate. "load" is
the 1-minute load average before the run (other work on the machine).

| date | cores | load | request | s | msgcube req/s | p99 ms | ceiling req/s | p99 ms \
| ratio | paced req/s msgcube / ceiling | paced p50 ms msgcube / ceiling \
| paced p99 ms msgcube / ceiling | goal |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
<!-- api paced rows -->
"""
OLD_MARKER = "<!-- api rows -->"
MARKER = "<!-- api paced rows -->"


def record(args: argparse.Namespace, results: list[Result], load: float) -> None:
    lines = []
    for r in results:
        m, c, mp, cp = r.mine, r.ceiling, r.mine_paced, r.ceiling_paced
        lines.append(
            f"| {date.today()} | {os.cpu_count()} | {load:.2f} | {r.case.label} | "
            f"{args.duration:g} | {m.rps:,.0f} | {m.p99_ms:.2f} | {c.rps:,.0f} | "
            f"{c.p99_ms:.2f} | {m.rps / c.rps:.0%} | {mp.rps:,.0f} / {cp.rps:,.0f} | "
            f"{mp.p50_ms:.2f} / {cp.p50_ms:.2f} | {mp.p99_ms:.2f} / {cp.p99_ms:.2f} | "
            f"{'yes' if met(r) else 'no'} |"
        )
    path = harness.BENCH / "RESULTS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if MARKER not in text:
        if OLD_MARKER in text:  # the saturated-only table of earlier runs stays above
            text = text.replace(OLD_MARKER, OLD_MARKER + "\n\n" + PACED_SECTION.rstrip("\n"), 1)
        else:
            text = text.rstrip("\n") + "\n\n" + SECTION + "\n" + PACED_SECTION
    # Rows go above the marker, so the table reads oldest to newest.
    text = text.replace(MARKER, "\n".join(lines) + "\n" + MARKER, 1)
    path.write_text(text, encoding="utf-8")
    print(f"recorded in {path} (Python {platform.python_version()})")


if __name__ == "__main__":
    sys.exit(main())
