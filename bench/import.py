"""Import benchmark: ``msgcube import`` next to a plain Python loader, in one run.

    python bench/import.py [--messages 2000000] [--days 90] [--users 60000]

1. generates N messages for one account (``msgcube.domain.traffic``) into a JSONL file
   (kept in ``--workdir`` and reused when it already holds that many lines);
2. the reference — a plain loader, the practical limit of this stack: ``orjson.loads``
   per line, ``executemany`` into one SQLite table with a unique index on MsgId, one
   transaction per 100k rows, same pragmas as msgcube (WAL, ``synchronous=FULL``);
3. ``msgcube import --quiet`` of the same file into a fresh database, in a process of its
   own that reports its peak RSS (VmHWM);
4. prints both rates, the ratio (goal: ≤ 2×, and ≥ 200,000 msg/s, RSS < 300 MB) and
   appends a row to ``bench/RESULTS.md``.

Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from msgcube.ingest.synthetic import write_jsonl

APPID = "wxbenchimport000001"
PLAIN_TXN = 100_000

_MEASURE = (
    "import re, sys, threading, time\n"
    "from pathlib import Path\n"
    "def hwm(pid):\n"
    "    status = Path(f'/proc/{pid}/status').read_text()\n"
    "    return int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1])\n"
    "children = {}\n"
    "def watch():\n"
    "    while True:\n"
    "        for task in Path('/proc/self/task').iterdir():\n"
    "            for pid in (task / 'children').read_text().split():\n"
    "                try:\n"
    "                    children[pid] = max(children.get(pid, 0), hwm(pid))\n"
    "                except (OSError, TypeError):\n"
    "                    pass\n"
    "        time.sleep(0.05)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "from msgcube.cli.main import cli\n"
    "cli(sys.argv[1:], standalone_mode=False)\n"
    "print('peak_kb', hwm('self'), 'parser_peak_kb', max(children.values(), default=0))\n"
    "import resource\n"
    "me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
    "print('cpu_s', me.ru_utime + me.ru_stime, 'parser_cpu_s', kids.ru_utime + kids.ru_stime)\n"
)
"""Runs ``msgcube import`` and prints the peak RSS (VmHWM) of the importing process and of
its parser process (sampled every 50 ms from a thread: VmHWM only grows, and the parser's
memory is flat after its first batches)."""


def plain_loader(jsonl: Path, db: Path) -> tuple[int, float]:
    """The reference: parse each line, insert it; nothing else (no dedup report, no marks)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, msg_id INTEGER NOT NULL,"
        " openid TEXT NOT NULL, create_time INTEGER NOT NULL, msg_type TEXT NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX plain_msg_id ON plain (msg_id)")
    sql = "INSERT OR IGNORE INTO plain (msg_id, openid, create_time, msg_type) VALUES (?,?,?,?)"
    started = time.perf_counter()
    rows: list[tuple[object, ...]] = []
    n = 0

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        rows.clear()

    with open(jsonl, "rb") as stream:
        for line in stream:
            v = orjson.loads(line)
            if v.get("MsgType") == "event":
                continue
            rows.append((v["MsgId"], v["FromUserName"], v["CreateTime"], v["MsgType"]))
            n += 1
            if len(rows) >= PLAIN_TXN:
                flush()
    flush()
    seconds = time.perf_counter() - started
    conn.close()
    return n, seconds


def msgcube_import(jsonl: Path, db: Path) -> tuple[int, float, float, float]:
    """``msgcube import`` in its own process: (new messages, seconds, peak RSS in MB of the
    importing process and of its parser process). Prints both processes' CPU seconds: on
    a shared machine the importer's (the writer's) CPU is the comparable number."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    env = os.environ | {
        "MSGCUBE_DB": str(db),
        "MSGCUBE_NOW": "2026-07-01T09:00:00+08:00",
        "MSGCUBE_CONFIG": os.devnull,
        "MSGCUBE_TZ": "Asia/Shanghai",
    }
    cli = [sys.executable, "-m", "msgcube.cli"]
    subprocess.run(
        [*cli, "account", "add", "--appid", APPID, "--secret", "bench"],
        env=env,
        check=True,
        capture_output=True,
    )
    args = [sys.executable, "-c", _MEASURE, "import", "--appid", APPID, "--quiet", str(jsonl)]
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"msgcube import failed:\n{done.stdout}\n{done.stderr}")
    new = re.search(r"(\d+) new messages", done.stdout)
    peak = re.search(r"peak_kb (\d+) parser_peak_kb (\d+)", done.stdout)
    if not (new and peak):
        sys.exit(f"unexpected output of msgcube import:\n{done.stdout}")
    cpu = re.search(r"cpu_s ([\d.]+) parser_cpu_s ([\d.]+)", done.stdout)
    if cpu:
        print(f"CPU seconds: importer (writer) {float(cpu[1]):.1f}, parser {float(cpu[2]):.1f}")
    return int(new[1]), seconds, int(peak[1]) / 1024, int(peak[2]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="msgcube-bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    jsonl = work / f"import-{args.messages}-{args.days}-{args.users}.jsonl"
    if not jsonl.exists():
        n = write_jsonl(
            str(jsonl),
            appid=APPID,
            days=args.days,
            users=args.users,
            seed=1,
            end=date(2026, 6, 30),
            tz="Asia/Shanghai",
            messages_per_day=args.messages // args.days,
        )
        print(f"generated {n:,} records -> {jsonl}")

    n_plain, t_plain = plain_loader(jsonl, work / "plain.db")
    plain_rate = n_plain / t_plain
    print(f"plain loader: {n_plain:,} messages in {t_plain:.1f}s = {plain_rate:,.0f} msg/s")
    n_ours, t_ours, rss_writer, rss_parser = msgcube_import(jsonl, work / "msgcube.db")
    rate = n_ours / t_ours
    rss = rss_writer + rss_parser  # the goal is on the sum: both processes are the import
    print(
        f"msgcube import: {n_ours:,} messages in {t_ours:.1f}s = {rate:,.0f} msg/s, "
        f"peak RSS {rss:.0f} MB = importer {rss_writer:.0f} + parser process "
        f"{rss_parser:.0f} (process starts included)"
    )
    ratio = plain_rate / rate
    met = rate >= 200_000 and ratio <= 2 and rss < 300
    print(
        f"ratio plain/msgcube: {ratio:.2f}x (goal <= 2x, >= 200,000 msg/s, RSS < 300 MB): "
        + ("met" if met else "MISSED")
    )
    if not args.no_record:
        line = (
            f"| {date.today()} | {os.cpu_count()} | {n_ours:,} | {plain_rate:,.0f} | "
            f"{rate:,.0f} | {ratio:.2f}x | {rss:,.0f} | {platform.python_version()} |"
        )
        results = Path(__file__).with_name("RESULTS.md")
        text = results.read_text(encoding="utf-8")
        marker = "<!-- import rows -->"
        if marker in text:
            results.write_text(text.replace(marker, marker + "\n" + line, 1), encoding="utf-8")
        else:
            print("RESULTS.md has no import table marker; line not recorded:\n" + line)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
