"""End to end: ``msgcube.client`` and ``sync`` against a real ``msgcube serve`` (subprocess).

A year of generated traffic for a fresh account is rolled up and served; the client syncs
it into SQLite and PostgreSQL and the result must equal the server's stored rows, row for
row. Token sharing is checked on the server's own access log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from msgcube.client import Client, FileTokenCache, QuotaExceeded
from msgcube.client.schema import open_database
from msgcube.client.sync import SyncAborted, sync
from msgcube.domain.endpoints import ENDPOINTS, Endpoint
from msgcube.domain.periods import has_ended, period_start, periods_between
from support.relay_calls import seed_calls
from test_client_fake_wechat import SHANGHAI
from test_sync import SYNC_SCRIPT, YEAR_TOTAL, stored

from conftest import PG_URL, fresh_appid

pytestmark = pytest.mark.slow

NOW = datetime(2026, 1, 10, 9, 0, tzinfo=SHANGHAI)
SECRET = "e2e-secret-0123456789abcdef"
SINCE, UNTIL = date(2025, 1, 10), date(2026, 1, 9)  # a full year, ending yesterday


@dataclass
class Server:
    base_url: str
    db_url: str
    log: Path
    appid: str
    env: dict[str, str]

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log.read_text(encoding="utf-8", errors="replace")))


def _msgcube() -> str:
    exe = shutil.which("msgcube", path=str(Path(sys.executable).parent))
    assert exe is not None, f"no msgcube command next to {sys.executable} (pip install -e .)"
    return exe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def serve_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    work = tmp_path_factory.mktemp("serve")
    env = dict(os.environ)
    env.update(
        MSGCUBE_DB=f"sqlite:///{work / 'msgcube.db'}",
        MSGCUBE_NOW=NOW.isoformat(),
        MSGCUBE_CONFIG=os.devnull,  # no config file
        MSGCUBE_LOG_LEVEL="info",
        MSGCUBE_ACCESS_LOG="all",  # the tests count successful requests in the log
    )
    return env, work


def _run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [_msgcube(), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _start_server(
    env: dict[str, str], log: Path, *flags: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [_msgcube(), "serve", "--host", "127.0.0.1", "--port", str(port), *flags],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = _time.monotonic() + 60
    while _time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"msgcube serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return proc, base_url
        except httpx.TransportError:
            _time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    pytest.fail(f"msgcube serve did not come up: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


def _seed_relay_calls(db_url: str, appid: str) -> None:
    """The relay's timings of the same year, so the interface datasets have rows too."""
    from msgcube.storage.accounts import get_account
    from msgcube.storage.db import open_store

    store = open_store(db_url)
    try:
        with store.read() as conn:
            account = get_account(conn, appid)
        assert account is not None
        seed_calls(store, account, date(2024, 12, 26), date(2026, 1, 9), seed=7)
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def server(serve_env: tuple[dict[str, str], Path]) -> Iterator[Server]:
    env, work = serve_env
    appid = fresh_appid("wxe2e")
    _run(env, "account", "add", "--appid", appid, "--secret", SECRET)
    _run(
        env,
        "generate",
        "--appid",
        appid,
        "--days",
        "380",
        "--users",
        "300",
        "--per-day",
        "60",
        "--end",
        "2026-01-09",
        "--seed",
        "7",
    )
    _seed_relay_calls(env["MSGCUBE_DB"], appid)
    _run(env, "rollup")
    log = work / "serve.log"
    proc, base_url = _start_server(env, log)
    try:
        yield Server(base_url, env["MSGCUBE_DB"], log, appid, env)
    finally:
        _stop(proc)


def server_rows(
    server: Server, ep: Endpoint, since: date, until: date, *, whole_periods: bool = True
) -> list[dict[str, object]]:
    """The server's stored rows for the periods in range (msgcube's own read path).

    ``whole_periods``: sync's rule (the week/month containing ``since`` is included);
    otherwise WeChat's query rule (the label itself must lie in the range).
    """
    from msgcube.rollup.query import read_rows
    from msgcube.storage.accounts import get_account
    from msgcube.storage.db import open_store

    today = NOW.date()
    period = ep.label_period
    labels = [
        s
        for s in periods_between(
            period, period_start(period, since) if whole_periods else since, until
        )
        if has_ended(period, s, today)
    ]
    store = open_store(server.db_url, migrate_schema=False)
    try:
        with store.read() as conn:
            account = get_account(conn, server.appid)
            assert account is not None
            return read_rows(conn, account.id, ep, labels)
    finally:
        store.dispose()


def client_for(server: Server, cache: Path, appid: str | None = None) -> Client:
    return Client(
        appid or server.appid,
        SECRET,
        base_url=server.base_url,
        token_cache=FileTokenCache(cache),
        clock=lambda: NOW,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def user_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path / 'user.db'}")
    else:
        engine = open_database(PG_URL)
        try:
            engine.connect().close()
        except Exception as exc:
            engine.dispose()
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}")
            pytest.skip(f"PostgreSQL unreachable ({exc.__class__.__name__})")
    yield engine
    engine.dispose()


def _clear(engine: Engine, appid: str) -> None:
    """The server's appid is fixed for the module: start each database run from nothing."""
    from msgcube.client.schema import TABLES, create_schema, sync_state

    create_schema(engine)
    with engine.begin() as conn:
        for table in (*TABLES.values(), sync_state):
            conn.execute(table.delete().where(table.c.appid == appid))


def test_a_year_synced_equals_the_servers_rows_and_a_second_run_writes_nothing(
    server: Server, user_db: Engine, tmp_path: Path
) -> None:
    _clear(user_db, server.appid)
    with client_for(server, tmp_path / "tokens") as client:
        first = sync(client, user_db, server.appid, since=SINCE, until=UNTIL)
        assert first.complete
        # 365 days: 53 + 365 + 11 + 11 + 25 + 11 + 11 + 13 + 365 — the minimum the spans
        # allow.
        assert first.calls == YEAR_TOTAL == 865
        for ep in ENDPOINTS:
            expected = server_rows(server, ep, SINCE, UNTIL)
            assert len(expected) > 0
            assert stored(user_db, ep, server.appid) == expected, ep.name
        second = sync(client, user_db, server.appid, since=SINCE, until=UNTIL)
    assert (second.calls, second.rows_written) == (0, 0)


def test_fetch_over_http_equals_the_servers_rows(server: Server, tmp_path: Path) -> None:
    with client_for(server, tmp_path / "tokens") as client:
        for ep in ENDPOINTS:
            expected = server_rows(server, ep, SINCE, UNTIL, whole_periods=False)
            assert client.fetch(ep, SINCE, UNTIL) == expected


def test_two_sync_processes_share_one_token(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "tokens"
    before = server.log_count(r"POST /cgi-bin/stable_token 200")
    args = [sys.executable, "-c", SYNC_SCRIPT, server.base_url, str(cache)]
    procs = [
        subprocess.Popen(
            [*args, f"sqlite:///{tmp_path / f'p{i}.db'}", server.appid, SECRET],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert int(out.split()[0]) > 0
    _time.sleep(0.2)  # let the server flush its access log
    assert server.log_count(r"POST /cgi-bin/stable_token 200") - before == 1


def test_a_killed_sync_resumes_and_completes(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "tokens"
    db_url = f"sqlite:///{tmp_path / 'killed.db'}"
    seen = server.log_count(r"POST /datacube/")
    victim = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SYNC_SCRIPT,
            server.base_url,
            str(cache),
            db_url,
            server.appid,
            SECRET,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = _time.monotonic() + 120
    while server.log_count(r"POST /datacube/") - seen < 150 and _time.monotonic() < deadline:
        if victim.poll() is not None:
            break
        _time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL, "the sync finished before it could be killed"

    engine = open_database(db_url)
    try:
        with client_for(server, cache) as client:
            resumed = sync(client, engine, server.appid, since="2025-01-01", until="2025-12-31")
        assert resumed.complete
        # The killed run's committed windows are kept (how many depends on timing: windows
        # are fetched ahead by the pool but committed in order).
        assert resumed.calls < YEAR_TOTAL
        for ep in ENDPOINTS:
            assert stored(engine, ep, server.appid) == server_rows(
                server, ep, date(2025, 1, 1), date(2025, 12, 31)
            ), ep.name
    finally:
        engine.dispose()


def test_the_daily_quota_stops_the_sync_with_a_clear_message(
    serve_env: tuple[dict[str, str], Path], server: Server, tmp_path: Path
) -> None:
    env, work = serve_env
    appid = fresh_appid("wxquota")
    _run(env, "account", "add", "--appid", appid, "--secret", SECRET)
    proc, base_url = _start_server(env, work / "quota.log", "--quota-datacube", "20")
    try:
        with (
            Client(
                appid,
                SECRET,
                base_url=base_url,
                token_cache=FileTokenCache(tmp_path / "tokens"),
                clock=lambda: NOW,
            ) as client,
            pytest.raises(SyncAborted) as raised,
        ):
            sync(client, f"sqlite:///{tmp_path / 'q.db'}", appid, since=SINCE)
    finally:
        _stop(proc)
    aborted = raised.value
    error = aborted.error
    assert isinstance(error, QuotaExceeded)
    assert error.errcode == 45009
    assert error.rid is not None
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}", error.rid)
    assert error.api is not None and error.api.startswith("/datacube/getupstreammsg")
    assert f"the daily quota of {error.api} is used up" in str(aborted)
    assert error.rid in (work / "quota.log").read_text()  # the rid finds the server's log line


def test_the_sync_command_mirrors_and_then_writes_nothing(server: Server, tmp_path: Path) -> None:
    """``msgcube sync`` end to end: a summary, resumable, exit codes."""
    target = tmp_path / "mine.db"
    env = dict(server.env)
    env["MSGCUBE_SYNC_SECRET"] = SECRET
    args = [
        "sync",
        "--appid",
        server.appid,
        "--base-url",
        server.base_url,
        "--db",
        str(target),
        "--since",
        "2025-12-01",
        "--until",
        "2026-01-09",
        "--token-cache",
        str(tmp_path / "tokens"),
        "--quiet",
    ]
    first = _run(env, *args)
    assert "getupstreammsghour" in first and "[complete]" in first
    assert re.search(r"(\d+) calls, (\d+) rows written", first)
    second = _run(env, *args)
    assert "0 calls, 0 rows written" in second
    engine = open_database(f"sqlite:///{target}")
    try:
        for ep in ENDPOINTS:
            assert stored(engine, ep, server.appid) == server_rows(
                server, ep, date(2025, 12, 1), date(2026, 1, 9)
            ), ep.name
    finally:
        engine.dispose()
    env["MSGCUBE_SYNC_SECRET"] = "wrong"
    args[args.index(str(target))] = str(tmp_path / "other.db")  # something left to fetch
    args[args.index(str(tmp_path / "tokens"))] = str(tmp_path / "other-tokens")
    bad = subprocess.run(
        [_msgcube(), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 1
    assert "40125" in bad.stderr and "invalid appsecret" in bad.stderr
