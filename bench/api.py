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
5. prints requests/s, p50 and p99 latency and the ratio to the ceiling (goal: ≥ 50 % of
   the ceiling's requests/s, p99 < 20 ms) and appends them to ``bench/RESULTS.md``.

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
    url: str, body: str, *, seconds: float, connections: int, threads: int, workdir: Path
) -> Load:
    script = workdir / "post.lua"
    script.write_text(
        LUA % {"body": body.replace("\\", "\\\\").replace("'", "\\'")} + harness.LUA_DONE
    )
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


def run(args: argparse.Namespace, workdir: Path) -> list[tuple[Case, Load, Load]]:
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
    results: list[tuple[Case, Load, Load]] = []
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
                results.append((case, mine, ceil))
                print_row(case, mine, ceil)
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
    ok = all(met(m, c) for _, m, c in results)
    print("goal met" if ok else "goal NOT met (≥ 50% of the ceiling's requests/s, p99 < 20 ms)")
    return 0


def met(m: Load, c: Load) -> bool:
    return m.rps >= GOAL_RATIO * c.rps and m.p99_ms < GOAL_P99_MS


def print_row(case: Case, m: Load, c: Load) -> None:
    print(
        f"{case.label:34} msgcube {m.rps:8,.0f} req/s p50 {m.p50_ms:6.2f} ms "
        f"p99 {m.p99_ms:6.2f} ms | ceiling {c.rps:8,.0f} req/s p50 {c.p50_ms:6.2f} ms "
        f"p99 {c.p99_ms:6.2f} ms | {m.rps / c.rps:5.0%}",
        flush=True,
    )


SECTION = """## API (`bench/api.py`)

`msgcube serve --workers 2` on the demo database (`msgcube demo --no-serve`: 120 days,
3000 users; default settings, each request logged with its rid) next to the ceiling,
`bench/ceiling_app.py` (minimal Starlette on uvicorn, 2 workers, answering the same POST
with msgcube's own answer as a fixed body), measured in the same run with `wrk` at 64
connections (2 threads) on the same machine, so the load generator and the servers share
its cores. Warm-up 2 s, then the stated seconds per request and server. Goal: msgcube ≥ 50%
of the ceiling's requests/s and p99 < 20 ms. "load" is the 1-minute load average before
the run (other work on the machine).

| date | cores | load | request | s | msgcube req/s | p50 ms | p99 ms \
| ceiling req/s | p50 ms | p99 ms | ratio | goal |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
<!-- api rows -->
"""


def record(args: argparse.Namespace, results: list[tuple[Case, Load, Load]], load: float) -> None:
    lines = []
    for case, m, c in results:
        ok = met(m, c)
        lines.append(
            f"| {date.today()} | {os.cpu_count()} | {load:.2f} | {case.label} | "
            f"{args.duration:g} | {m.rps:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
            f"{c.rps:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {m.rps / c.rps:.0%} | "
            f"{'yes' if ok else 'no'} |"
        )
    path = harness.BENCH / "RESULTS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    marker = "<!-- api rows -->"
    if marker not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION
    # Rows go above the marker, so the table reads oldest to newest.
    text = text.replace(marker, "\n".join(lines) + "\n" + marker, 1)
    path.write_text(text, encoding="utf-8")
    print(f"recorded in {path} (Python {platform.python_version()})")


if __name__ == "__main__":
    sys.exit(main())
