"""Benchmark: sync one year of one account (all seven datasets) and count the HTTP calls.

The claim under test: ``msgcube.client.sync`` makes the minimum number of datacube calls
the endpoints' max spans allow (for a year: 53 + 365 + 11 + 11 + 25 + 11 + 11 = 487 with
the classic spans), and how long that takes.

By default the benchmark is self-contained: it creates an account with a year of
generated traffic in a temporary msgcube database, starts ``msgcube serve`` and syncs
from it over HTTP into a fresh SQLite file (or ``--db``). With ``--base-url --appid
--secret`` it syncs from a server that is already running (msgcube, or WeChat itself).

    .venv/bin/python bench/sync.py [--concurrency 1 4 8] [--db postgresql://...]

Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from harness import free_port

from msgcube.client import Client, FileTokenCache
from msgcube.client.schema import TABLES, open_database, sync_state
from msgcube.client.sync import sync
from msgcube.domain.endpoints import ENDPOINTS, Endpoint, Period

NOW = datetime(2026, 1, 10, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
SINCE, UNTIL = date(2025, 1, 1), date(2025, 12, 31)
APPID, SECRET = "wxbench00000000001", "bench-secret-0123456789"


def minimum_calls(ep: Endpoint, since: date, until: date, today: date, profile: str) -> int:
    """The fewest calls covering every period sync fetches, computed independently.

    Labels are the days / Mondays / 1sts whose period touches [since, until] and has
    ended; one call covers labels less than ``span`` days apart (greedy is optimal).
    """
    span = ep.max_span(profile)
    day, labels = since, []
    if ep.label_period is Period.WEEK:
        day = since - timedelta(days=since.weekday())
    elif ep.label_period is Period.MONTH:
        day = since.replace(day=1)
    while day <= until:
        if ep.label_period is Period.WEEK:
            end, step = day + timedelta(days=6), timedelta(days=7)
        elif ep.label_period is Period.MONTH:
            nxt = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            end, step = nxt - timedelta(days=1), nxt - day
        else:
            end, step = day, timedelta(days=1)
        if end < today:
            labels.append(day)
        day += step
    calls, first = 0, None
    for label in labels:
        if first is None or (label - first).days >= span:
            calls, first = calls + 1, label
    return calls


def _msgcube() -> str:
    exe = shutil.which("msgcube", path=str(Path(sys.executable).parent))
    if exe is None:
        sys.exit("the msgcube command is not installed next to this Python")
    return exe


@contextlib.contextmanager
def local_server(work: Path, users: int, per_day: int) -> Iterator[str]:
    env = dict(os.environ)
    env.update(
        MSGCUBE_DB=f"sqlite:///{work / 'msgcube.db'}",
        MSGCUBE_NOW=NOW.isoformat(),
        MSGCUBE_CONFIG=os.devnull,  # no config file
        MSGCUBE_LOG_LEVEL="warning",
    )
    exe = _msgcube()
    for args in (
        ["account", "add", "--appid", APPID, "--secret", SECRET],
        [
            "generate",
            "--appid",
            APPID,
            "--days",
            "400",
            "--users",
            str(users),
            "--per-day",
            str(per_day),
            "--end",
            str(NOW.date() - timedelta(days=1)),
        ],
        ["rollup"],
    ):
        subprocess.run([exe, *args], env=env, check=True, capture_output=True)
    port = free_port()
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            sys.exit(f"msgcube serve did not start; see {work / 'serve.log'}")
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def clear(db: str, appid: str) -> None:
    engine = open_database(db)
    try:
        from msgcube.client.schema import create_schema

        create_schema(engine)
        with engine.begin() as conn:
            for table in (*TABLES.values(), sync_state):
                conn.execute(table.delete().where(table.c.appid == appid))
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="sync from this running server instead")
    parser.add_argument("--appid", default=APPID)
    parser.add_argument("--secret", default=SECRET)
    parser.add_argument("--db", help="target database URL (default: a temporary SQLite file)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--profile", default="classic", choices=["classic", "current"])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-day", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="msgcube-bench-") as tmp:
        work = Path(tmp)
        server = (
            contextlib.nullcontext(args.base_url)
            if args.base_url
            else local_server(work, args.users, args.per_day)
        )
        with server as base_url:
            today = NOW.date()
            minimum = {
                ep.name: minimum_calls(ep, SINCE, UNTIL, today, args.profile) for ep in ENDPOINTS
            }
            print(f"sync {SINCE} … {UNTIL} of one account from {base_url}\n")
            print("| concurrency | calls | minimum | rows written | wall time |")
            print("|---:|---:|---:|---:|---:|")
            details = None
            for workers in args.concurrency:
                db = args.db or f"sqlite:///{work / f'user-{workers}.db'}"
                clear(db, args.appid)
                with Client(
                    args.appid,
                    args.secret,
                    base_url=base_url,
                    span_profile=args.profile,
                    token_cache=FileTokenCache(work / "tokens"),
                    clock=lambda: NOW,
                ) as client:
                    started = time.perf_counter()
                    report = sync(
                        client, db, args.appid, since=SINCE, until=UNTIL, concurrency=workers
                    )
                    wall = time.perf_counter() - started
                assert report.complete, report.summary()
                print(
                    f"| {workers} | {report.calls} | {sum(minimum.values())} | "
                    f"{report.rows_written} | {wall:.2f} s |"
                )
                details = report
            if details is not None:
                print("\n| dataset | calls | minimum | span |")
                print("|---|---:|---:|---:|")
                for ep in ENDPOINTS:
                    got = details.datasets[ep.name].calls
                    print(
                        f"| {ep.name} | {got} | {minimum[ep.name]} | {ep.max_span(args.profile)} |"
                    )
                    if got != minimum[ep.name]:
                        sys.exit(f"{ep.name}: {got} calls, the minimum is {minimum[ep.name]}")
            days = (UNTIL - SINCE).days + 1
            print(f"\n{days} days; ceil(days / 7) = {math.ceil(days / 7)} getupstreammsg calls.")


if __name__ == "__main__":
    main()
