"""``msgcube import`` beside other writers, as real processes: another import of an
overlapping file, and ``account set --tz`` while the import runs.

Each test runs the CLI in subprocesses on SQLite and on PostgreSQL and compares what
was stored, and every endpoint, with the brute-force oracle over the files' records.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import get_account
from msgcube.storage.db import open_store
from msgcube.storage.schema import messages, user_day
from support.server import MSGCUBE, msgcube_env, run_msgcube

from conftest import PG_URL, fresh_appid
from oracle import OracleAccount, local_datetime

NOW = "2026-03-10T09:00:00+08:00"
NOW_DT = datetime.fromisoformat(NOW)
FIRST, LAST = date(2026, 2, 16), date(2026, 3, 7)
KINDS = ["text", "image", "voice", "video", "link", "location", "event"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'msgcube.db'}"
    request.getfixturevalue("pg_store")  # skipped (or failed in CI) when unreachable
    return PG_URL


def record(msg_id: int, rng: random.Random) -> dict[str, Any]:
    """The record of one MsgId, the same in every file (a retry is the same push)."""
    start = int(datetime(2026, 2, 16, tzinfo=NOW_DT.tzinfo).timestamp())
    ct = start + rng.randrange((LAST - FIRST).days * 86400)
    user = f"o{rng.randrange(300)}"
    kind = rng.choice(KINDS)
    if kind == "event":
        return {"FromUserName": user, "CreateTime": ct, "MsgType": "event", "Event": "CLICK"}
    return {"FromUserName": user, "CreateTime": ct, "MsgType": kind, "MsgId": msg_id}


def records(n: int, seed: int) -> dict[int, dict[str, Any]]:
    rng = random.Random(seed)
    return {i: record(i, rng) for i in range(1, n + 1)}


def write_file(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return path


def account_in(db_url: str, tz: str = "Asia/Shanghai") -> tuple[str, dict[str, str]]:
    env = msgcube_env(db_url, NOW)
    appid = fresh_appid("wxconc")
    run_msgcube("account", "add", "--appid", appid, "--secret", "s", "--tz", tz, env=env)
    return appid, env


def import_proc(
    env: dict[str, str], appid: str, path: Path | None, parser: str
) -> subprocess.Popen[str]:
    """``msgcube import`` of ``path``, or of its standard input (a pipe the test writes)."""
    return subprocess.Popen(
        [MSGCUBE, "import", "--appid", appid, "--quiet", "-" if path is None else str(path)],
        env=env | {"MSGCUBE_IMPORT_PARSER": parser},
        stdin=subprocess.PIPE if path is None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_matches_oracle(db_url: str, appid: str, oracle: OracleAccount) -> None:
    """Rows stored once each, user layers equal to them, every endpoint the oracle's."""
    store = open_store(db_url)
    try:
        with store.read() as conn:
            account = get_account(conn, appid)
            assert account is not None and account.tz == oracle.tz
            rows = conn.execute(
                select(messages.c.msg_id, messages.c.create_time, messages.c.day, messages.c.hour)
                .where(messages.c.account_id == account.id)
                .order_by(messages.c.msg_id)
            ).all()
            counted = conn.execute(
                select(func.coalesce(func.sum(user_day.c.total), 0)).where(
                    user_day.c.account_id == account.id
                )
            ).scalar_one()
        assert [r.msg_id for r in rows] == sorted(oracle.messages)
        local = {r.msg_id: local_datetime(r.create_time, oracle.tz) for r in rows}
        wrong = [
            r.msg_id
            for r in rows
            if (r.day, r.hour) != (local[r.msg_id].date(), local[r.msg_id].hour)
        ]
        assert wrong == []
        assert counted == sum(1 for m in oracle.messages.values() if m.msg_type is not None)
        for ep in ENDPOINTS:
            if ep.name.startswith("getinterface"):
                continue
            span = 1 if ep.name == "getupstreammsghour" else 7
            d = FIRST - timedelta(days=1)
            while d <= LAST:
                end = d + timedelta(days=span - 1)
                got = served_list(store, account, ep, d.isoformat(), end.isoformat(), NOW_DT)
                want = oracle.served(ep.name, d.isoformat(), end.isoformat(), NOW_DT)
                assert got == want, (ep.name, d)
                d = end + timedelta(days=1)
    finally:
        store.dispose()


@pytest.mark.slow
def test_two_imports_of_overlapping_files_at_once(db_url: str, tmp_path: Path) -> None:
    """The same MsgIds in opposite orders, imported at once: both finish (on PostgreSQL
    each waited on the other's uncommitted rows in opposite orders: "deadlock detected"),
    and every record is stored once."""
    appid, env = account_in(db_url)
    pool = records(24_000, seed=7)
    ids = sorted(pool)
    a = write_file(tmp_path / "a.jsonl", [pool[i] for i in ids[:20_000]])
    b = write_file(tmp_path / "b.jsonl", [pool[i] for i in reversed(ids[4_000:])])
    procs = [import_proc(env, appid, a, "inline"), import_proc(env, appid, b, "process")]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    oracle = OracleAccount("Asia/Shanghai")
    oracle.store(pool.values())
    assert_matches_oracle(db_url, appid, oracle)


@pytest.mark.slow
def test_a_time_zone_change_during_an_import_applies_to_the_rest(
    db_url: str, tmp_path: Path
) -> None:
    """``account set --tz`` while an import runs: the batches after it are stored in the
    new zone (they were parsed in the old one), not left a zone behind for good.

    The import reads a pipe, so it cannot end before the zone changed: the rest of its
    lines are written only then (a file was raced by a fast import).
    """
    appid, env = account_in(db_url)
    pool = records(150_000, seed=11)
    lines = [orjson.dumps(r).decode() + "\n" for r in pool.values()]
    proc = import_proc(env, appid, None, "process")
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(lines[:20_000]))  # the first batch (10k) and part of the next
        proc.stdin.flush()
        store = open_store(db_url)
        try:
            stored = 0
            while not stored and proc.poll() is None:  # the first batch is in
                with store.read() as conn:
                    account = get_account(conn, appid)
                    assert account is not None
                    stored = conn.execute(
                        select(func.count()).where(messages.c.account_id == account.id)
                    ).scalar_one()
                time.sleep(0.02)
        finally:
            store.dispose()
        run_msgcube("account", "set", "--appid", appid, "--account-tz", "America/New_York", env=env)
        assert proc.poll() is None, "the import ended before the zone changed"
        out, err = proc.communicate("".join(lines[20_000:]), timeout=300)
        assert proc.returncode == 0, (out, err)
    finally:  # a failure above must not leave the import, or its pipes, to the next test
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(BrokenPipeError):
            proc.communicate(timeout=30)
    oracle = OracleAccount("America/New_York")
    oracle.store(pool.values())
    assert_matches_oracle(db_url, appid, oracle)
