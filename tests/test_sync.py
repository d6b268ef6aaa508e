"""msgcube.client.sync: the seven datasets into the user's SQLite / PostgreSQL database.

Against the fake WeChat of ``test_client_fake_wechat``; real databases (PostgreSQL runs
are skipped locally when the server is unreachable and fail in CI, like conftest's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time as _time
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, inspect, select, text

from msgcube.cli.main import cli
from msgcube.client import (
    Client,
    InvalidAppSecret,
    MemoryTokenCache,
    QuotaExceeded,
    SystemBusy,
)
from msgcube.client.call_plan import key_fields
from msgcube.client.schema import TABLES, open_database, sync_state
from msgcube.client.sync import SyncAborted, SyncProgress, next_run, run_daily, sync
from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, Endpoint, Period
from test_client_fake_wechat import (
    APPID,
    SECRET,
    SHANGHAI,
    TODAY,
    FakeWeChat,
    now_shanghai,
    serve_http,
)

from conftest import PG_URL, fresh_appid

SINCE, UNTIL = date(2025, 1, 1), date(2025, 12, 31)
# 2025-01-01 is a Wednesday: the week datasets start with the week of Monday 2024-12-30.
YEAR_CALLS = {
    "getupstreammsg": 53,
    "getupstreammsghour": 365,
    "getupstreammsgweek": 11,  # 53 Mondays (2024-12-30 … 2025-12-29), five per window
    "getupstreammsgmonth": 11,
    "getupstreammsgdist": 25,
    "getupstreammsgdistweek": 11,
    "getupstreammsgdistmonth": 11,
    "getinterfacesummary": 13,
    "getinterfacesummaryhour": 365,
}
YEAR_TOTAL = sum(YEAR_CALLS.values())


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The user's database: a fresh SQLite file, or the shared PostgreSQL test database."""
    if request.param == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path / 'stats.db'}")
    else:
        engine = create_engine(PG_URL)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            engine.dispose()
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}")
            pytest.skip(f"PostgreSQL unreachable ({exc.__class__.__name__})")
    yield engine
    engine.dispose()


def setup(appid: str, **fake_kwargs: Any) -> tuple[FakeWeChat, Client]:
    fake = FakeWeChat(appid=appid, **fake_kwargs)
    client = Client(
        appid,
        SECRET,
        transport=fake.transport(),
        token_cache=MemoryTokenCache(),
        clock=now_shanghai,
        sleep=Sleeps(),
    )
    return fake, client


def stored(engine: Engine, ep: Endpoint, appid: str) -> list[dict[str, Any]]:
    """The table's rows for ``appid`` in WeChat's wire format and order."""
    table = TABLES[ep.name]
    columns = [table.c[f] for f in ep.fields]
    query = (
        select(*columns)
        .where(table.c.appid == appid)
        .order_by(*(table.c[k] for k in key_fields(ep)))
    )
    with engine.connect() as conn:
        return [
            {
                f: (v.isoformat() if f == "ref_date" else v)
                for f, v in zip(ep.fields, row, strict=True)
            }
            for row in conn.execute(query)
        ]


def state_of(engine: Engine, appid: str) -> dict[str, tuple[date, date]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                sync_state.c.dataset, sync_state.c.first_day, sync_state.c.last_complete_day
            ).where(sync_state.c.appid == appid)
        )
        return {r.dataset: (r.first_day, r.last_complete_day) for r in rows}


def aligned(ep: Endpoint, day: date) -> date:
    if ep.label_period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    if ep.label_period is Period.MONTH:
        return day.replace(day=1)
    return day


def assert_mirror(engine: Engine, fake: FakeWeChat, appid: str, since: date, until: date) -> None:
    for ep in ENDPOINTS:
        assert stored(engine, ep, appid) == fake.expected(ep, aligned(ep, since), until), ep.name


# ----------------------------------------------------------------------------- tests


def test_a_year_into_the_database_then_a_second_run_writes_nothing(db: Engine) -> None:
    appid = fresh_appid("wxsync")
    fake, client = setup(appid)
    with client:
        first = sync(client, db, appid, since=SINCE, until=UNTIL)
        assert {name: d.calls for name, d in first.datasets.items()} == YEAR_CALLS
        assert first.calls == YEAR_TOTAL == 865
        assert dict(fake.calls) == YEAR_CALLS
        assert first.complete
        assert_mirror(db, fake, appid, SINCE, UNTIL)
        expected_rows = sum(len(fake.expected(ep, aligned(ep, SINCE), UNTIL)) for ep in ENDPOINTS)
        assert first.rows_written == expected_rows
        assert sum(d.rows_inserted for d in first.datasets.values()) == expected_rows
        assert state_of(db, appid)["getupstreammsg"] == (SINCE, UNTIL)
        # Week rows are labelled with their Monday: the week of Monday 29 Dec is in range.
        assert state_of(db, appid)["getupstreammsgweek"] == (date(2024, 12, 30), date(2026, 1, 4))
        assert state_of(db, appid)["getupstreammsgmonth"] == (date(2025, 1, 1), date(2025, 12, 31))

        second = sync(client, db, appid, since=SINCE, until=UNTIL)
        assert second.calls == 0
        assert second.rows_written == 0
        assert {d.status for d in second.datasets.values()} == {"up to date"}

        # Re-fetching unchanged data writes nothing either (the upsert is a no-op).
        refetch = sync(client, db, appid, until=UNTIL, refresh_days=20)
        assert refetch.calls > 0
        assert refetch.rows_written == 0
    assert_mirror(db, fake, appid, SINCE, UNTIL)
    assert f"{YEAR_TOTAL} calls" in first.summary()


def test_natural_keys_are_the_primary_keys(db: Engine) -> None:
    appid = fresh_appid("wxkeys")
    _, client = setup(appid)
    with client:
        sync(client, db, appid, since="2025-12-01", until="2025-12-02", datasets=["getupstreammsg"])
    inspector = inspect(db)
    for ep in ENDPOINTS:
        pk = inspector.get_pk_constraint(f"wechat_{ep.name}")["constrained_columns"]
        assert pk == ["appid", *key_fields(ep)]
    assert inspector.get_pk_constraint("wechat_sync_state")["constrained_columns"] == [
        "appid",
        "dataset",
    ]
    assert sorted(c.name for c in TABLES["getupstreammsghour"].c) == sorted(
        ["appid", "ref_date", "ref_hour", "msg_type", "msg_user", "msg_count", "updated_at"]
    )


def test_a_recount_updates_and_deletes_rows(db: Engine) -> None:
    appid = fresh_appid("wxrecount")
    fake, client = setup(appid)
    with client:
        sync(client, db, appid, since="2025-11-01", until="2025-12-31")
        fake.version += 1  # WeChat recomputed everything (late pushes)
        report = sync(client, db, appid, since="2025-11-01", until="2025-12-31", refresh_days=80)
    assert sum(d.rows_updated for d in report.datasets.values()) > 0
    assert sum(d.rows_deleted for d in report.datasets.values()) > 0
    assert sum(d.rows_inserted for d in report.datasets.values()) > 0
    assert_mirror(db, fake, appid, date(2025, 11, 1), date(2025, 12, 31))


def test_accounts_sharing_the_tables_stay_apart(db: Engine) -> None:
    one, two = fresh_appid("wxone"), fresh_appid("wxtwo")
    fake_one, client_one = setup(one)
    fake_two, client_two = setup(two)
    fake_two.version = 7
    with client_one, client_two:
        sync(client_one, db, one, since="2025-12-01", until="2025-12-10")
        sync(client_two, db, two, since="2025-12-01", until="2025-12-10")
    assert_mirror(db, fake_one, one, date(2025, 12, 1), date(2025, 12, 10))
    assert_mirror(db, fake_two, two, date(2025, 12, 1), date(2025, 12, 10))


def test_resume_after_a_run_stopped_by_the_daily_quota(db: Engine) -> None:
    appid = fresh_appid("wxresume")
    fake, client = setup(appid)
    fake.quota["getupstreammsghour"] = 100
    with client:
        with pytest.raises(SyncAborted) as info:
            # One window at a time, so that exactly the first 100 days are done (with
            # several in flight, which window meets the quota first is up to the scheduler).
            sync(client, db, appid, since=SINCE, until=UNTIL, concurrency=1)
        aborted = info.value
        assert isinstance(aborted.error, QuotaExceeded)
        assert "/datacube/getupstreammsghour" in str(aborted)
        assert "the next run resumes" in str(aborted)
        assert aborted.report.datasets["getupstreammsg"].status == "complete"
        assert aborted.report.datasets["getupstreammsghour"].status == "aborted"
        assert aborted.report.datasets["getupstreammsgweek"].status == "pending"
        assert aborted.report.datasets["getupstreammsghour"].calls == 101
        assert state_of(db, appid)["getupstreammsghour"] == (SINCE, date(2025, 4, 10))  # 100 days
        assert "getupstreammsgweek" not in state_of(db, appid)  # never reached
        hour = BY_NAME["getupstreammsghour"]
        assert stored(db, hour, appid) == fake.expected(hour, SINCE, date(2025, 4, 10))

        fake.quota.clear()
        before = dict(fake.calls)
        second = sync(client, db, appid, since=SINCE, until=UNTIL)
    assert second.complete
    assert fake.calls["getupstreammsghour"] - before["getupstreammsghour"] == 365 - 100
    assert fake.calls["getupstreammsg"] == YEAR_CALLS["getupstreammsg"]  # not fetched twice
    assert_mirror(db, fake, appid, SINCE, UNTIL)


def test_data_not_ready_stops_that_datasets_progress_there(db: Engine) -> None:
    appid = fresh_appid("wxnotready")
    fake, client = setup(appid)
    fake.not_ready_from = date(2025, 12, 29)
    events: list[SyncProgress] = []
    with client:
        # One worker: with several, a later window may already be in flight when an earlier
        # one answers 61503, and the exact call counts below would depend on timing.
        report = sync(
            client,
            db,
            appid,
            since="2025-12-01",
            until="2025-12-31",
            progress=events.append,
            concurrency=1,
        )
        assert not report.complete
        states = state_of(db, appid)
        for name in ("getupstreammsg", "getupstreammsghour", "getupstreammsgdist"):
            assert report.datasets[name].status == "not ready"
            assert report.datasets[name].not_ready == date(2025, 12, 29)
            assert states[name][1] == date(2025, 12, 28)
        assert states["getupstreammsgweek"][1] == date(2025, 12, 28)
        assert report.datasets["getupstreammsgweek"].not_ready == date(2025, 12, 29)
        assert "getupstreammsgmonth" not in states  # December is not ready at all
        assert report.datasets["getupstreammsgmonth"].not_ready == date(2025, 12, 1)
        # getupstreammsg: windows 1-7 … 22-28 fine, 29-31 fails, 29 alone fails: 6 calls.
        assert report.datasets["getupstreammsg"].calls == 6
        # dist: 1-15 fine; 16-30 fails, then 16 … 28 one by one, 29 fails; 31 never asked.
        assert report.datasets["getupstreammsgdist"].calls == 2 + 14
        final = {e.dataset: e for e in events if e.status != "running"}
        assert final["getupstreammsg"].status == "not ready"
        assert "not ready from 2025-12-29" in report.summary()

        fake.not_ready_from = None
        before = dict(fake.calls)
        again = sync(client, db, appid, since="2025-12-01", until="2025-12-31")
    assert again.complete
    assert fake.calls["getupstreammsg"] - before["getupstreammsg"] == 1  # 29-31 only
    assert fake.calls["getupstreammsghour"] - before["getupstreammsghour"] == 3
    assert_mirror(db, fake, appid, date(2025, 12, 1), date(2025, 12, 31))


def test_defaults_since_90_days_until_yesterday_and_then_incremental(tmp_path: Path) -> None:
    appid = fresh_appid("wxdefault")
    fake, client = setup(appid)
    url = f"sqlite:///{tmp_path / 'sub' / 'stats.db'}"
    with client:
        report = sync(client, url, appid, datasets=["getupstreammsg"])
        first = fake.datacube_requests()[0]
        assert first.url.path == "/datacube/getupstreammsg"
        assert report.until == TODAY - timedelta(days=1)
        assert report.datasets["getupstreammsg"].first_day == TODAY - timedelta(days=90)
        assert list(report.datasets) == ["getupstreammsg"]
    # A day later only the new day is fetched.
    fake.today = TODAY + timedelta(days=1)
    with Client(
        appid,
        SECRET,
        transport=fake.transport(),
        token_cache=MemoryTokenCache(),
        clock=lambda: now_shanghai(TODAY + timedelta(days=1)),
    ) as tomorrow:
        later = sync(tomorrow, url, appid)
    assert later.datasets["getupstreammsg"].calls == 1
    assert later.datasets["getupstreammsghour"].calls == 90  # never synced: the last 90 days


def test_an_earlier_since_backfills_only_the_missing_days(db: Engine) -> None:
    appid = fresh_appid("wxbackfill")
    fake, client = setup(appid)
    with client:
        sync(client, db, appid, since="2025-06-01", until=UNTIL, datasets=["getupstreammsgdist"])
        before = fake.calls["getupstreammsgdist"]
        report = sync(
            client, db, appid, since="2025-05-01", until=UNTIL, datasets=["getupstreammsgdist"]
        )
    assert fake.calls["getupstreammsgdist"] - before == 3  # May: 1-15, 16-30, 31
    assert report.datasets["getupstreammsgdist"].first_day == date(2025, 5, 1)
    ep = BY_NAME["getupstreammsgdist"]
    assert stored(db, ep, appid) == fake.expected(ep, date(2025, 5, 1), UNTIL)


def test_bad_credentials_abort_with_a_clear_message(tmp_path: Path) -> None:
    fake = FakeWeChat()
    with (
        Client(
            APPID,
            "wrong",
            transport=fake.transport(),
            token_cache=MemoryTokenCache(),
            clock=now_shanghai,
        ) as client,
        pytest.raises(SyncAborted) as info,
    ):
        sync(client, f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(info.value.error, InvalidAppSecret)
    assert "40125 invalid appsecret" in str(info.value)
    assert "check the appid and secret" in str(info.value)
    assert fake.token_calls["/cgi-bin/stable_token"] == 1  # not once per window


def test_intermittent_system_busy_is_retried_during_sync(db: Engine) -> None:
    appid = fresh_appid("wxbusy")
    fake, client = setup(appid)
    for name in ("getupstreammsg", "getupstreammsghour", "getupstreammsgdistmonth"):
        fake.script[name] = [-1, -1]
    with client:
        report = sync(client, db, appid, since="2025-10-01", until="2025-12-31")
    assert report.complete
    assert_mirror(db, fake, appid, date(2025, 10, 1), date(2025, 12, 31))


def test_persistent_system_busy_aborts(tmp_path: Path) -> None:
    appid = fresh_appid("wxbusy")
    fake, client = setup(appid)
    fake.always["getupstreammsgweek"] = -1
    with client, pytest.raises(SyncAborted) as info:
        sync(client, f"sqlite:///{tmp_path / 's.db'}", appid, since="2025-10-01", until=UNTIL)
    assert isinstance(info.value.error, SystemBusy)


def test_unknown_dataset_and_missing_appid(tmp_path: Path) -> None:
    with Client(token="t", clock=now_shanghai) as client:
        with pytest.raises(ValueError, match="appid"):
            sync(client, f"sqlite:///{tmp_path / 's.db'}")
        with pytest.raises(KeyError, match="getupstreammsghour"):
            sync(client, f"sqlite:///{tmp_path / 's.db'}", "wx", datasets=["getupstreammsgday"])


def test_progress_events_count_windows(tmp_path: Path) -> None:
    appid = fresh_appid("wxprogress")
    fake, client = setup(appid)
    events: list[SyncProgress] = []
    with client:
        sync(
            client,
            f"sqlite:///{tmp_path / 's.db'}",
            appid,
            since="2025-12-01",
            until="2025-12-31",
            progress=events.append,
        )
    hour = [e for e in events if e.dataset == "getupstreammsghour"]
    assert hour[0] == SyncProgress("getupstreammsghour", 31, 0, 0, "running")
    assert [e.windows_done for e in hour[1:-1]] == list(range(1, 32))
    assert hour[-1].status == "complete"
    assert hour[-1].windows_done == hour[-1].windows_total == 31
    assert hour[-1].rows_written == len(
        fake.expected(BY_NAME["getupstreammsghour"], date(2025, 12, 1), date(2025, 12, 31))
    )


# ------------------------------------------------------------- several processes


SYNC_SCRIPT = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from zoneinfo import ZoneInfo
    from msgcube.client import Client, FileTokenCache
    from msgcube.client.sync import sync

    base_url, cache, db, appid, secret = sys.argv[1:6]
    clock = lambda: datetime(2026, 1, 10, 9, tzinfo=ZoneInfo("Asia/Shanghai"))
    with Client(appid, secret, base_url=base_url, token_cache=FileTokenCache(cache),
                clock=clock) as client:
        report = sync(client, db, appid, since="2025-01-01", until="2025-12-31",
                      concurrency=2)
    print(report.calls, report.rows_written)
    """
)


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SYNC_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_processes_share_one_token_and_a_killed_sync_resumes(tmp_path: Path) -> None:
    appid = fresh_appid("wxproc")
    fake = FakeWeChat(appid=appid)
    fake.token_delay = 0.3  # both processes ask for a token at the same time
    cache = str(tmp_path / "tokens")
    with serve_http(fake) as base_url:
        dbs = [f"sqlite:///{tmp_path / f'p{i}.db'}" for i in range(2)]
        procs = [_start([base_url, cache, db, appid, SECRET]) for db in dbs]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            assert out.split()[0] == str(YEAR_TOTAL)
        assert fake.token_calls["/cgi-bin/stable_token"] == 1

        # A third process, killed half-way, then resumed by a fourth.
        killed_db = f"sqlite:///{tmp_path / 'killed.db'}"
        fake.datacube_delay = 0.005
        before = sum(fake.calls.values())
        victim = _start([base_url, cache, killed_db, appid, SECRET])
        deadline = _time.monotonic() + 60
        while sum(fake.calls.values()) - before < 200 and _time.monotonic() < deadline:
            _time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        done_before_kill = sum(fake.calls.values()) - before
        assert 200 <= done_before_kill < YEAR_TOTAL

        fake.datacube_delay = 0.0
        resumed = _start([base_url, cache, killed_db, appid, SECRET])
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        calls_after_resume = int(out.split()[0])
        assert calls_after_resume < YEAR_TOTAL - 150  # most of the work was kept
    engine = create_engine(killed_db)
    try:
        assert_mirror(engine, fake, appid, SINCE, UNTIL)
    finally:
        engine.dispose()
    assert fake.token_calls["/cgi-bin/stable_token"] == 1


# ------------------------------------------------------------------------- run_daily


class Timeline:
    """A clock and a sleep that moves it: the scheduler runs instantly in tests."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def test_run_daily_runs_now_then_every_day_at_the_local_time() -> None:
    line = Timeline(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    ran_at: list[datetime] = []

    def job() -> int:
        ran_at.append(line.now.astimezone(SHANGHAI))
        return len(ran_at)

    results: list[int] = []
    runs = run_daily(
        time(8, 30),
        job,
        max_runs=3,
        on_result=results.append,
        clock=line.clock,
        sleep=line.sleep,
    )
    assert runs == 3
    assert results == [1, 2, 3]
    assert [t.replace(microsecond=0).isoformat() for t in ran_at] == [
        "2026-01-10T09:00:00+08:00",
        "2026-01-11T08:30:00+08:00",
        "2026-01-12T08:30:00+08:00",
    ]
    assert max(line.slept) <= 300


def test_run_daily_keeps_going_after_a_passing_error_and_stops_on_bad_credentials() -> None:
    line = Timeline(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    outcomes: list[BaseException | None] = [
        QuotaExceeded(45009, "reach max api daily quota limit"),
        None,
        InvalidAppSecret(40125, "invalid appsecret"),
    ]

    def job() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    with pytest.raises(InvalidAppSecret):
        run_daily(time(8, 0), job, clock=line.clock, sleep=line.sleep, run_now=False)
    assert outcomes == []
    assert line.now.astimezone(SHANGHAI).date() == date(2026, 1, 13)


def test_next_run_is_strictly_later() -> None:
    at = time(8, 0)
    assert next_run(at, datetime(2026, 1, 10, 0, 0, tzinfo=UTC)) == datetime(
        2026, 1, 11, 8, 0, tzinfo=SHANGHAI
    )  # it is 08:00 in Shanghai now: the next run is tomorrow
    assert next_run(at, datetime(2026, 1, 9, 23, 0, tzinfo=UTC)) == datetime(
        2026, 1, 10, 8, 0, tzinfo=SHANGHAI
    )


def test_the_sync_command_refetches_recounted_days_with_refresh_days(tmp_path: Path) -> None:
    """Late data recounted on the server after a day was mirrored: a plain rerun resumes
    after the mirrored days and keeps the stale rows; ``--refresh-days`` fetches them again
    (with the weeks and months that hold them) until the mirror equals the source."""
    appid = fresh_appid("wxlate")
    fake = FakeWeChat(appid=appid)
    target = tmp_path / "mine.db"
    env = {
        "MSGCUBE_NOW": now_shanghai().isoformat(),
        "MSGCUBE_CONFIG": os.devnull,
        "MSGCUBE_SYNC_SECRET": SECRET,
    }
    since, until = date(2025, 11, 1), date(2025, 12, 31)
    with serve_http(fake) as base_url:
        args = ["sync", "--appid", appid, "--base-url", base_url, "--db", str(target)]
        args += ["--since", since.isoformat(), "--until", until.isoformat(), "--quiet"]
        args += ["--token-cache", str(tmp_path / "tokens")]

        def run(*extra: str) -> str:
            result = CliRunner().invoke(cli, [*args, *extra], env=env, catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
            return result.stdout

        run()
        engine = open_database(f"sqlite:///{target}")
        try:
            assert_mirror(engine, fake, appid, since, until)
            fake.version += 1  # the server recounted past days (late pushes)
            assert "0 calls, 0 rows written" in run()
            stale = stored(engine, BY_NAME["getupstreammsg"], appid)
            assert stale != fake.expected(BY_NAME["getupstreammsg"], since, until)
            assert "[complete]" in run("--refresh-days", "70")
            assert_mirror(engine, fake, appid, since, until)
        finally:
            engine.dispose()
