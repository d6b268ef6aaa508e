"""The import's parser process: same answers as parsing inline, and a failure stops cleanly.

Lines are parsed in a child process (``ingest.parser_process``) one batch ahead of the
writer. These tests run it for real on real files: rejects and line numbers across batch
boundaries, duplicates inside and across batches, both backends; a parser killed mid-way
(SIGKILL) stops the import with one clear error, leaves only whole batches committed,
and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from msgcube.errors import ImportStopped
from msgcube.ingest.files import ImportReport, import_stream
from msgcube.storage.accounts import Account, add_account
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import events, messages, senders, user_day, user_period

from conftest import STAMP, fresh_appid

NOW = datetime(2026, 3, 10, 4, tzinfo=UTC)
BASE = 1772600000


def new_account(store: Store) -> Account:
    with store.write() as conn:
        return add_account(
            conn, appid=fresh_appid("wxpipe"), secret="s", tz="Asia/Shanghai", now=STAMP
        )


def push(i: int, user: str = "u1", kind: str = "text", **extra: object) -> bytes:
    fields = {"FromUserName": user, "CreateTime": BASE + 3000 * i, "MsgType": kind, "MsgId": i}
    return orjson.dumps(fields | extra)


def sample_lines() -> list[bytes]:
    """Good lines, bad ones at batch edges (batch=4), duplicates, events, odd types."""
    return [
        push(1),
        push(2, "u2"),
        b"{not json",  # 3
        push(3, "u3", "image"),
        push(4),  # 5: the first line of the second batch of 4 records
        b'{"MsgType": ["text"], "CreateTime": 1772600000, "MsgId": 1, "FromUserName": "u"}',  # 6
        push(1),  # a duplicate from the batch before
        b"",
        push(5, "u2", "location"),
        orjson.dumps(
            {"FromUserName": "u4", "CreateTime": BASE, "MsgType": "event", "Event": "subscribe"}
        ),
        b"[1, 2]",  # 11
        push(6, "u4", "voice"),
        push(6, "u4", "voice"),  # a duplicate inside its batch
        push(7, "u1", "text", MsgId=" 7 "),  # slow path: a number as text
        push(8, "u5", FromUserName=["u5"]),  # 15: an unhashable openid
        json.dumps(
            {"FromUserName": "u5", "CreateTime": BASE, "MsgType": "link", "MsgId": 2**64 - 1}
        ).encode(),  # unsigned, above 2**63
        push(9, "u5", "video"),  # 17
    ]


def counts(store: Store, account: Account) -> dict[str, object]:
    with store.read() as conn:
        a = account.id
        day = conn.execute(
            select(user_day.c.day, senders.c.openid, user_day.c.total, user_day.c.c1)
            .join(senders, senders.c.id == user_day.c.user_id)
            .where(user_day.c.account_id == a)
            .order_by(user_day.c.day, senders.c.openid)
        ).all()
        period = conn.execute(
            select(user_period.c.period, user_period.c.start, user_period.c.total)
            .where(user_period.c.account_id == a)
            .order_by(user_period.c.period, user_period.c.start, user_period.c.total)
        ).all()
        ids = conn.execute(
            select(messages.c.msg_id).where(messages.c.account_id == a).order_by(messages.c.msg_id)
        ).scalars()
        n_events = conn.execute(
            select(func.count()).select_from(events).where(events.c.account_id == a)
        ).scalar_one()
        return {
            "day": [tuple(r) for r in day],
            "period": [tuple(r) for r in period],
            "ids": list(ids),
            "events": n_events,
        }


def run_import(
    store: Store, path: Path, parser: str, batch: int
) -> tuple[Account, ImportReport, bytes]:
    account = new_account(store)
    rejects = path.with_suffix(f".{parser}.rejects")
    with open(path, "rb") as stream, open(rejects, "wb") as bad:
        report = import_stream(
            store, account, stream, NOW, source=str(path), rejects=bad, parser=parser, batch=batch
        )
    return account, report, rejects.read_bytes()


@pytest.mark.parametrize("batch", [1, 4, 1000])
def test_parser_process_gives_the_inline_answer(store: Store, tmp_path: Path, batch: int) -> None:
    lines = sample_lines()
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = {}
    for parser in ("process", "inline"):
        account, report, rejected = run_import(store, path, parser, batch)
        w = report.written
        got[parser] = (
            [(b.source, b.line, b.reason) for b in report.bad],
            rejected,
            (report.lines, w.messages_new, w.messages_duplicate, w.events_new, report.bad_count),
            dict(report.uncounted),
            counts(store, account),
        )
    assert got["process"] == got["inline"]
    bad, rejected, totals, uncounted, stored = got["process"]
    assert [(line, reason.split(":")[0]) for _, line, reason in bad] == [
        (3, "invalid JSON"),
        (6, "MsgType must be a string, not list"),
        (11, "a line must be a JSON object"),
        (15, "FromUserName must be a string, not list"),
    ]
    assert rejected.splitlines() == [lines[2], lines[5], lines[10], lines[14]]
    assert totals == (16, 9, 2, 1, 4)
    assert uncounted == {"location": 1}
    assert stored["ids"] == [-1, 1, 2, 3, 4, 5, 6, 7, 9]  # 2**64-1 stored as -1
    assert stored["events"] == 1
    # one counted message per (day, sender) here, each stored once
    assert sum(total for _, _, total, _ in stored["day"]) == 8


def killed_children() -> list[int]:
    """Pids of this process's parser children (from /proc)."""
    me = os.getpid()
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"msgcube.ingest.parser_process" in cmdline:
                found.append(int(pid))
    return found


def test_a_killed_parser_stops_the_import_with_whole_batches_committed(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kill.db'}")
    account = new_account(store)
    path = tmp_path / "big.jsonl"
    n = 30_000  # far more than the pipe holds: the parser is still busy when killed
    path.write_bytes(b"".join(push(i, f"u{i % 97}") + b"\n" for i in range(1, n + 1)))
    report = ImportReport()
    victims: list[int] = []

    def kill_parser(lines: int, position: int | None) -> None:
        if not victims:
            victims.extend(killed_children())
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)

    with open(path, "rb") as stream, pytest.raises(ImportStopped) as stopped:
        import_stream(
            store,
            account,
            stream,
            NOW,
            source=str(path),
            report=report,
            progress=kill_parser,
            parser="process",
            batch=1000,
        )
    assert str(stopped.value) == (
        f"{path}: the parser process ended unexpectedly (killed by signal {signal.SIGKILL})"
    )
    # The child is reaped: no process, not even a zombie, and no parser left at all.
    assert not Path(f"/proc/{victims[0]}").exists()
    assert killed_children() == []
    # Whole batches only (1000 messages each), and the user layers count exactly them.
    stored = report.written.messages_new
    assert 1000 <= stored < n and stored % 1000 == 0
    with store.read() as conn:
        in_db = conn.execute(
            select(func.count()).select_from(messages).where(messages.c.account_id == account.id)
        ).scalar_one()
        counted = conn.execute(
            select(func.sum(user_day.c.total)).where(user_day.c.account_id == account.id)
        ).scalar_one()
    assert in_db == counted == stored
    # Importing the file again stores the rest; what was stored counts as duplicates.
    with open(path, "rb") as stream:
        again = import_stream(store, account, stream, NOW, parser="process", batch=1000)
    assert (again.written.messages_new, again.written.messages_duplicate) == (n - stored, stored)
    store.dispose()


def test_parser_process_reads_a_pipe(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'pipe.db'}")
    account = new_account(store)
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"".join(push(i) + b"\n" for i in range(1, 501)) + b"oops\n")
    # as `cat file | msgcube import -`: a pipe, parsed by a parser process under auto
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        report = import_stream(store, account, cat.stdout, NOW, parser="auto", batch=64)
    assert (report.lines, report.written.messages_new) == (501, 500)
    assert [(b.source, b.line, b.reason[:12]) for b in report.bad] == [("-", 501, "invalid JSON")]
    store.dispose()


def test_ctrl_c_stops_the_cli_import_in_one_line_with_whole_batches(tmp_path: Path) -> None:
    """SIGINT to the import's process group (as a terminal's Ctrl-C): one line, exit 1, the
    parser process gone, every committed batch whole; importing again stores the rest."""
    db = tmp_path / "int.db"
    env = os.environ | {
        "MSGCUBE_DB": str(db),
        "MSGCUBE_NOW": "2026-03-10T12:00:00+08:00",
        "MSGCUBE_CONFIG": os.devnull,
        "MSGCUBE_IMPORT_PARSER": "process",
    }
    cli = [sys.executable, "-m", "msgcube.cli"]
    subprocess.run(
        [*cli, "account", "add", "--appid", "wxint", "--secret", "s"],
        env=env,
        check=True,
        capture_output=True,
    )
    n = 300_000
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(push(i, f"u{i % 1000}") + b"\n" for i in range(1, n + 1)))
    args = [*cli, "import", "--appid", "wxint", "--quiet", str(path)]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    parsers: set[int] = set()
    stored = 0
    while not stored and proc.poll() is None:  # until the first batch is committed
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                parsers.update(int(p) for p in (task / "children").read_text().split())
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert err.decode().strip() == "Aborted!" and b"Traceback" not in err
    assert parsers and not any(Path(f"/proc/{p}").exists() for p in parsers)
    with sqlite3.connect(db) as conn:
        in_db, counted = conn.execute(
            "SELECT COUNT(*), (SELECT SUM(total) FROM user_day) FROM messages"
        ).fetchone()
    assert in_db == counted and in_db < n and (in_db - 10_000) % 100_000 == 0
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    assert f"{n} lines: {n - in_db} new messages, {in_db} duplicates" in done.stdout
