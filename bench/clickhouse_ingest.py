"""ClickHouse ingest benchmark: pushes/s and bulk import msg/s on 1 shard and on 2 shards.

    python bench/clickhouse_ingest.py [--shards 1,2] [--replicas 2] [--pushes 4000]
                                      [--concurrency 64] [--import-messages 500000]

For each shard count, on a fresh cluster of Debian's clickhouse-server 18.16 + ZooKeeper
(the test harness, tests/support/clickhouse_cluster.py, REPLICAS replicas per shard):

1. ``msgcube serve --workers 2 --analytics-db clickhouse://…?cluster=msgcube`` (accounts
   in a SQLite file); PUSHES plaintext pushes (distinct MsgIds, 16 accounts so both
   shards get some) sent by CONCURRENCY concurrent clients; pushes/s acknowledged
   ``success`` (each one stored with ``insert_quorum=2`` before its answer);
2. ``msgcube import`` of IMPORT_MESSAGES messages of one account: msg/s;
3. the compressed bytes per message the cluster holds (``system.parts``, one replica per
   shard, messages + events + user-day + statistics after ``msgcube rollup``).

The load generator, the two workers and every server share this machine's cores, so the
figures show direction and where time goes, not a cluster's capacity. Rows are appended to
``bench/RESULTS.md``. Needs ``clickhouse-server`` and ``zookeeper`` (Debian; ``.ci/run``
installs them). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from clickhouse_driver import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from msgcube.domain.traffic import generate_traffic
from support.clickhouse_cluster import ClickHouseCluster, clickhouse_cluster
from support.deployment import Deployment
from support.wechat_push import ACK, Pusher

NOW = "2026-03-10T09:00:00+08:00"
TZ = "Asia/Shanghai"
LAST = date(2026, 3, 8)
TOKEN = "bench-token"
SECRET = "bench-secret-0123456789abcdef0123"
ACCOUNTS = 16
DATABASE = "msgcube_bench"


def pushes(count: int) -> list[tuple[str, dict[str, Any]]]:
    """COUNT text pushes spread over ACCOUNTS accounts and 7 days, every MsgId distinct."""
    start = int(datetime(2026, 3, 2, tzinfo=datetime.fromisoformat(NOW).tzinfo).timestamp())
    out = []
    for i in range(count):
        appid = f"wxbenchch{i % ACCOUNTS:04d}"
        record = {
            "ToUserName": "gh_bench",
            "FromUserName": f"o{i % 997:05d}",
            "CreateTime": start + (i * 37) % (7 * 86400),
            "MsgType": "text",
            "Content": "hello",
            "MsgId": 10**15 + i,
        }
        out.append((appid, record))
    return out


async def send(base_url: str, items: list[tuple[str, dict[str, Any]]], concurrency: int) -> float:
    """Send every push until acknowledged, CONCURRENCY at a time; the seconds it took."""
    pushers = {a: Pusher(base_url, a, TOKEN) for a, _ in items}
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                appid, record = queue.get_nowait()
                await pushers[appid].until_acked(client, record, pause=0.05)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    refused = sum(len(p.outcomes) - p.outcomes.count(ACK) for p in pushers.values())
    if refused:
        print(f"  ({refused} answers other than success, retried)")
    return elapsed


def stored_bytes(cluster: ClickHouseCluster) -> tuple[int, int]:
    """(compressed, uncompressed) bytes of the bench database (one replica per shard)."""
    compressed = uncompressed = 0
    for shard in range(1, cluster.shards + 1):
        rep = cluster.shard(shard)[0]
        conn = Client("127.0.0.1", port=rep.tcp_port)
        try:
            [(c, u)] = conn.execute(
                "SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes)"
                f" FROM system.parts WHERE active AND database = '{DATABASE}'"
            )
        finally:
            conn.disconnect()
        compressed += int(c or 0)
        uncompressed += int(u or 0)
    return compressed, uncompressed


def run(shards: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    with clickhouse_cluster(work / f"cluster{shards}", shards=shards, replicas=args.replicas) as ch:
        side = Deployment(work / f"msgcube{shards}", NOW, ch.url(DATABASE))
        for n in range(ACCOUNTS):
            side.add_account(f"wxbenchch{n:04d}", SECRET, TOKEN)
        items = pushes(args.pushes)
        with side.server(workers=2) as server:
            asyncio.run(send(server.base_url, items[:200], args.concurrency))  # warm-up
            seconds = asyncio.run(send(server.base_url, items[200:], args.concurrency))
        push_rate = (len(items) - 200) / seconds
        print(
            f"{shards} shard(s): {push_rate:,.0f} pushes/s ({len(items) - 200} in {seconds:.1f}s)"
        )

        appid = "wxbenchimport0001"
        side.add_account(appid, SECRET)
        jsonl = work / f"import{shards}.jsonl"
        days = 30
        records = generate_traffic(
            appid=appid,
            original_id="gh_benchimport",
            days=days,
            users=20_000,
            seed=1,
            end=LAST,
            tz=TZ,
            messages_per_day=args.import_messages // days,
        )
        messages = 0
        with jsonl.open("wb") as out:
            for record in records:
                messages += "MsgId" in record
                out.write(orjson.dumps(record) + b"\n")
        started = time.perf_counter()
        side.run("import", "--appid", appid, "--quiet", str(jsonl))
        import_rate = messages / (time.perf_counter() - started)
        print(f"{shards} shard(s): import {import_rate:,.0f} msg/s ({messages:,} messages)")
        started = time.perf_counter()
        side.run("rollup")
        rollup_s = time.perf_counter() - started
        compressed, uncompressed = stored_bytes(ch)
        total = messages + len(items)
        print(
            f"{shards} shard(s): rollup {rollup_s:.1f}s; {compressed / total:.1f} bytes/message"
            f" compressed ({uncompressed / total:.1f} uncompressed), all tables"
        )
        return {
            "push_rate": push_rate,
            "import_rate": import_rate,
            "messages": messages,
            "rollup_s": rollup_s,
            "bytes": compressed / total,
            "raw_bytes": uncompressed / total,
        }


def record(args: argparse.Namespace, shards: int, figures: dict[str, float]) -> None:
    load = os.getloadavg()[0]
    line = (
        f"| {date.today()} | {os.cpu_count()} | {load:.2f} | {shards} × {args.replicas} |"
        f" {args.concurrency} | {figures['push_rate']:,.0f} | {figures['messages']:,.0f} |"
        f" {figures['import_rate']:,.0f} | {figures['rollup_s']:.1f} | {figures['bytes']:.1f} |"
        f" {figures['raw_bytes']:.1f} | {platform.python_version()} |"
    )
    results = Path(__file__).with_name("RESULTS.md")
    text = results.read_text(encoding="utf-8")
    marker = "<!-- clickhouse ingest rows -->"
    if marker in text:
        results.write_text(text.replace(marker, marker + "\n" + line, 1), encoding="utf-8")
    else:
        print("RESULTS.md has no ClickHouse ingest marker; line not recorded:\n" + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,2", help="comma-separated shard counts")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--pushes", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--import-messages", type=int, default=500_000)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msgcube-bench-ch-") as tmp:
        for shards in (int(s) for s in args.shards.split(",")):
            figures = run(shards, args, Path(tmp))
            if not args.no_record:
                record(args, shards, figures)
    print(f"peak RSS of this process: {psutil.Process().memory_info().rss / 2**20:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
