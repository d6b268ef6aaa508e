"""Rollup benchmark: msgcube's full rollup next to DuckDB computing the same rollups.

    python bench/rollup.py [--messages 5000000] [--days 90] [--db sqlite|postgresql://...]
                           [--analytics-db chdb://DIR|clickhouse://...]

1. generates N messages for one account over D days (``msgcube.domain.traffic``) into a JSONL file;
2. imports it with msgcube's bulk importer (the same code as ``msgcube import``);
3. runs msgcube's full rollup (all seven endpoints' rows, every closed period);
4. loads the same messages into an in-memory DuckDB (not timed) and times DuckDB
   computing the same seven rollups with plain SQL — the physical-limit reference;
5. checks both agree (every daily, hourly, weekly and monthly row), prints the figures
   and appends them to ``bench/RESULTS.md``.

With ``--analytics-db`` (``chdb`` alone: a fresh embedded directory in the work dir) the
messages and the rollup live in ClickHouse, as with msgcube's ``analytics_db`` setting;
the ``db`` column of the results then names the analytics form.

Run with ``make bench-rollup``; never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import duckdb
import psutil

from msgcube.analytics.url import parse_analytics_url
from msgcube.domain.endpoints import BY_NAME
from msgcube.domain.periods import has_ended, zone
from msgcube.ingest.files import import_stream
from msgcube.ingest.synthetic import write_jsonl
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import read_rows
from msgcube.storage.accounts import add_account, get_account
from msgcube.storage.db import open_store

APPID = "wxbench000000000001"
TZ_OFFSET = 8 * 3600  # Asia/Shanghai has had no DST since 1991: a fixed offset is exact.

DUCK_ROLLUPS = {
    "hour": """
        SELECT day, hour * 100 AS ref_hour, msg_type, COUNT(DISTINCT user_id) AS msg_user,
               COUNT(*) AS msg_count
        FROM m GROUP BY ALL""",
    "user_day": """
        CREATE TEMP TABLE ud AS
        SELECT day, date_trunc('week', day)::DATE AS week, date_trunc('month', day)::DATE AS month,
               user_id, msg_type, COUNT(*) AS n
        FROM m GROUP BY ALL""",
    "day": """
        SELECT day, msg_type, COUNT(DISTINCT user_id) AS msg_user, SUM(n) AS msg_count
        FROM ud GROUP BY ALL""",
    "week": """
        SELECT week, msg_type, COUNT(DISTINCT user_id) AS msg_user, SUM(n) AS msg_count
        FROM ud GROUP BY ALL""",
    "month": """
        SELECT month, msg_type, COUNT(DISTINCT user_id) AS msg_user, SUM(n) AS msg_count
        FROM ud GROUP BY ALL""",
    "dist_day": """
        SELECT day, CASE WHEN t <= 5 THEN 1 WHEN t <= 10 THEN 2 ELSE 3 END AS ci, COUNT(*)
        FROM (SELECT day, user_id, SUM(n) AS t FROM ud GROUP BY ALL) GROUP BY ALL""",
    "dist_week": """
        SELECT week, CASE WHEN t <= 5 THEN 1 WHEN t <= 10 THEN 2 ELSE 3 END AS ci, COUNT(*)
        FROM (SELECT week, user_id, SUM(n) AS t FROM ud GROUP BY ALL) GROUP BY ALL""",
    "dist_month": """
        SELECT month, CASE WHEN t <= 5 THEN 1 WHEN t <= 10 THEN 2 ELSE 3 END AS ci, COUNT(*)
        FROM (SELECT month, user_id, SUM(n) AS t FROM ud GROUP BY ALL) GROUP BY ALL""",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temp file) or a PostgreSQL URL")
    parser.add_argument(
        "--analytics-db",
        default=None,
        help="chdb (a fresh chdb:// directory in the work dir) or an analytics_db URL",
    )
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="msgcube-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    end = date(2026, 6, 30)
    today = end + timedelta(days=1)
    per_day = args.messages // args.days
    jsonl = work / "traffic.jsonl"

    t0 = time.perf_counter()
    n_records = write_jsonl(
        str(jsonl),
        appid=APPID,
        days=args.days,
        users=args.users,
        seed=1,
        end=end,
        tz="Asia/Shanghai",
        messages_per_day=per_day,
    )
    t_generate = time.perf_counter() - t0
    print(f"generated {n_records:,} records in {t_generate:.1f}s -> {jsonl}")

    url = f"sqlite:///{work / 'bench.db'}" if args.db == "sqlite" else args.db
    if args.db == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(work / "bench.db") + suffix).unlink(missing_ok=True)
    analytics_url = args.analytics_db
    if analytics_url == "chdb":
        shutil.rmtree(work / "chdb", ignore_errors=True)
        analytics_url = f"chdb://{work / 'chdb'}"
    analytics = None if analytics_url is None else parse_analytics_url(analytics_url)
    store = open_store(url, analytics=analytics)
    with store.write() as conn:
        account = get_account(conn, APPID) or add_account(
            conn, appid=APPID, secret="bench", tz="Asia/Shanghai", now=int(time.time())
        )
    t0 = time.perf_counter()
    with open(jsonl, "rb") as stream:
        report = import_stream(
            store,
            account,
            stream,
            datetime.combine(today, dtime(9), zone(account.tz)),
            source=str(jsonl),
        )
    t_import = time.perf_counter() - t0
    n_messages = report.written.messages_new
    print(
        f"imported {n_messages:,} messages ({report.written.events_new:,} events) "
        f"in {t_import:.1f}s = {n_messages / t_import:,.0f} msg/s"
    )

    with store.read() as conn:
        account = get_account(conn, APPID)
    assert account is not None
    t0 = time.perf_counter()
    rollup = refresh(store, account, today, chunk=100)
    t_rollup = time.perf_counter() - t0
    print(f"msgcube full rollup: {rollup.total} periods in {t_rollup:.2f}s")

    # DuckDB reads the same file (not timed), deduplicated and typed as msgcube does.
    duck = duckdb.connect()
    duck.execute(f"""
        CREATE TABLE m AS
        SELECT FromUserName AS user_id,
               CASE MsgType WHEN 'text' THEN 1 WHEN 'image' THEN 2 WHEN 'voice' THEN 3
                            WHEN 'video' THEN 4 WHEN 'shortvideo' THEN 4 WHEN 'link' THEN 6 END
                 AS msg_type,
               DATE '1970-01-01' + ((CreateTime + {TZ_OFFSET}) // 86400)::INTEGER AS day,
               (((CreateTime + {TZ_OFFSET}) % 86400) // 3600)::INTEGER AS hour
        FROM (SELECT DISTINCT ON (MsgId) * FROM read_json('{jsonl}', format='newline_delimited',
              columns={{FromUserName: 'VARCHAR', CreateTime: 'BIGINT', MsgType: 'VARCHAR',
                        MsgId: 'BIGINT'}}) WHERE MsgId IS NOT NULL)
        WHERE MsgType IN ('text', 'image', 'voice', 'video', 'shortvideo', 'link')""")
    best_duck = float("inf")
    results: dict[str, list[tuple[object, ...]]] = {}
    for _ in range(3):  # best of three: DuckDB's first run pays for warm-up
        duck.execute("DROP TABLE IF EXISTS ud")
        t0 = time.perf_counter()
        for name, sql in DUCK_ROLLUPS.items():
            cursor = duck.execute(sql)
            if name != "user_day":
                results[name] = cursor.fetchall()
        best_duck = min(best_duck, time.perf_counter() - t0)
    print(f"DuckDB same rollups: {best_duck:.2f}s (best of 3)")

    mismatches = compare(store, account.id, results, today)
    print("results agree" if not mismatches else f"MISMATCH: {mismatches}")
    ratio = t_rollup / best_duck
    goal = 3.0 if analytics is None else 1.5  # issue 13: a column store within 1.5x
    print(f"ratio msgcube/DuckDB: {ratio:.1f}x (goal <= {goal}x)")
    rss = psutil.Process().memory_info().rss / 2**20
    if not args.no_record:
        record(
            args,
            n_messages,
            t_generate,
            t_import,
            t_rollup,
            best_duck,
            rollup.total,
            rss,
            store.dialect if analytics is None else analytics.kind,
        )
    store.dispose()
    return 1 if mismatches else 0


def compare(
    store: object, account_id: int, duck: dict[str, list[tuple[object, ...]]], today: date
) -> list[str]:
    """Every row msgcube serves equals DuckDB's, endpoint by endpoint."""
    from msgcube.storage.db import Store

    assert isinstance(store, Store)
    problems: list[str] = []
    checks = {
        "getupstreammsghour": ("hour", lambda r: (r[0], r[1], r[2], r[3], r[4])),
        "getupstreammsg": ("day", lambda r: (r[0], r[1], r[2], r[3])),
        "getupstreammsgweek": ("week", lambda r: (r[0], r[1], r[2], r[3])),
        "getupstreammsgmonth": ("month", lambda r: (r[0], r[1], r[2], r[3])),
        "getupstreammsgdist": ("dist_day", lambda r: (r[0], r[1], r[2])),
        "getupstreammsgdistweek": ("dist_week", lambda r: (r[0], r[1], r[2])),
        "getupstreammsgdistmonth": ("dist_month", lambda r: (r[0], r[1], r[2])),
    }
    for name, (key, shape) in checks.items():
        ep = BY_NAME[name]
        expected = sorted(
            shape(r) for r in duck[key] if has_ended(ep.label_period, _as_date(r[0]), today)
        )
        labels = sorted({r[0] for r in expected})
        with store.read() as conn:
            got = sorted(
                tuple(date.fromisoformat(v) if k == "ref_date" else v for k, v in row.items())
                for row in read_rows(conn, account_id, ep, labels)
            )
        # Only closed periods are reported: DuckDB's rows of the running week are dropped.
        if got != expected:
            problems.append(f"{name}: {len(got)} rows vs DuckDB {len(expected)}")
    return problems


def _as_date(value: object) -> date:
    return value.date() if isinstance(value, datetime) else value  # type: ignore[return-value]


def record(
    args: argparse.Namespace,
    n: int,
    t_gen: float,
    t_import: float,
    t_rollup: float,
    t_duck: float,
    periods: int,
    rss: float,
    dialect: str,
) -> None:
    line = (
        f"| {date.today()} | {os.cpu_count()} | {dialect} | {n:,} | {args.days} | "
        f"{n / t_gen:,.0f} | {n / t_import:,.0f} | {t_rollup:.2f} | {periods} | "
        f"{t_duck:.2f} | {t_rollup / t_duck:.1f}x | {rss:,.0f} | {platform.python_version()} |\n"
    )
    results = Path(__file__).with_name("RESULTS.md")
    text = results.read_text(encoding="utf-8") if results.exists() else ""
    marker = "<!-- rollup rows -->"
    if marker in text:
        results.write_text(text.replace(marker, marker + "\n" + line.rstrip("\n"), 1))
    else:
        print("RESULTS.md has no rollup table marker; line not recorded:\n" + line)


if __name__ == "__main__":
    sys.exit(main())
