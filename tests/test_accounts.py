"""Accounts: keyed AppSecret hashes, sessions that end at sign-out, one checked update.

Each test runs on SQLite and PostgreSQL; sessions are tried against ``msgcube serve``
(two workers), as a browser and a thief holding a copied cookie would.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from msgcube.auth.accounts import AccountChanges, update_account
from msgcube.domain.endpoints import BY_NAME
from msgcube.domain.messages import Event, Message
from msgcube.errors import AccountError
from msgcube.ingest.batch import write_batch
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import add_account, get_account, ingest_view
from msgcube.storage.db import Store, _alembic_config, migrate, open_store
from msgcube.storage.platforms import get_platform
from msgcube.storage.schema import accounts, events, messages, server_secrets
from msgcube.storage.secret_hashes import Check, check_secret
from support.app_secrets import secret_ok
from support.server import MSGCUBE, ServerProcess, msgcube_env

from conftest import PG_URL, STAMP, fresh_appid

SECRET = "acct-secret-0123456789abcdef0123"
ADMIN = "admin-token-for-accounts-0123456"
NOW = datetime(2026, 3, 11, 2, 0, tzinfo=UTC)
TODAY = date(2026, 3, 11)


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


# --------------------------------------------------------------------------- AppSecret hashes


def test_the_stored_hash_is_slow_salted_and_keyed_by_the_deployment(store: Store) -> None:
    appid, twin = fresh_appid("wxkey"), fresh_appid("wxkey")
    with store.write() as conn:
        for each in (appid, twin):
            add_account(conn, appid=each, secret=SECRET, tz="UTC", now=int(NOW.timestamp()))
    with store.read() as conn:
        stored, twin_stored = (
            conn.execute(
                select(accounts.c.secret_hash).where(accounts.c.appid == each)
            ).scalar_one()
            for each in (appid, twin)
        )
        key = conn.execute(
            select(server_secrets.c.value).where(server_secrets.c.name == "app_secret_key")
        ).scalar_one()
        assert secret_ok(conn, stored, SECRET)
        assert not secret_ok(conn, stored, SECRET + "x")
        assert not secret_ok(conn, None, SECRET)
    bare = hashlib.sha256(SECRET.encode()).hexdigest()
    keyed = hmac.new(key.encode(), bare.encode(), hashlib.sha256).hexdigest()
    assert stored.startswith("s1$") and len(stored) <= 64  # the column holds 64
    assert stored not in (bare, keyed)  # neither a table of SHA-256s nor the key finds it fast
    assert twin_stored != stored  # salted: the same secret is stored differently
    # scrypt of the keyed hash: without the deployment's key a guess cannot be checked.
    assert not check_secret(stored, "another deployment's key", SECRET).matches
    assert check_secret(stored, key, SECRET) == Check(True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (a migration test must start before revision 0004)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    request.getfixturevalue("pg_store")  # skips (or fails in CI) when PostgreSQL is away
    name = f"msgcube_mig_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def test_migration_0004_keeps_existing_secrets_working(empty_db: str, tmp_path: Path) -> None:
    """A database from before 0004 holds bare SHA-256s; after it, the old secrets still work,
    and the first token they get stores them slowly hashed."""
    store = open_store(empty_db, migrate_schema=False)
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
        conn.execute(
            text(
                "INSERT INTO accounts (appid, secret_hash, tz, created_at)"
                " VALUES ('wxold', :h, 'Asia/Shanghai', 0)"
            ),
            {"h": hashlib.sha256(SECRET.encode()).hexdigest()},
        )
    migrate(store)
    with store.read() as conn:
        account = get_account(conn, "wxold")
        assert account is not None
        assert account.secret_hash != hashlib.sha256(SECRET.encode()).hexdigest()
        assert secret_ok(conn, account.secret_hash, SECRET)
        assert not secret_ok(conn, account.secret_hash, "wrong")
    store.dispose()
    # And through the real API: the old AppSecret still gets a token.
    with ServerProcess(empty_db, tmp_path, now=NOW.isoformat()) as server:
        answer = httpx.get(
            server.base_url + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": "wxold", "secret": SECRET},
        ).json()
        assert "access_token" in answer, answer
        wrong = httpx.get(
            server.base_url + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": "wxold", "secret": "wrong"},
        ).json()
        assert wrong["errcode"] == 40125
    # The sign-in that matched rewrote the row in the slow form; the secret still works.
    store = open_store(empty_db)
    with store.read() as conn:
        account = get_account(conn, "wxold")
        assert account is not None and account.secret_hash.startswith("s1$")
        assert secret_ok(conn, account.secret_hash, SECRET)
    store.dispose()


def test_migration_0011_keeps_existing_platform_secrets_working(empty_db: str) -> None:
    """Platforms registered before 0011 hold bare SHA-256s; after it, keyed ones that the
    old component_appsecret still matches."""
    store = open_store(empty_db, migrate_schema=False)
    bare = hashlib.sha256(SECRET.encode()).hexdigest()
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0010")
        conn.execute(
            text(
                "INSERT INTO platforms (component_appid, secret_hash, ticket_url, push_token,"
                " aes_key, ticket_key, created_at)"
                " VALUES ('wxplatold', :h, '', 't', :k, 'tk', 0)"
            ),
            {"h": bare, "k": "a" * 43},
        )
    migrate(store)
    with store.read() as conn:
        platform = get_platform(conn, "wxplatold")
        assert platform is not None
        key = conn.execute(
            select(server_secrets.c.value).where(server_secrets.c.name == "app_secret_key")
        ).scalar_one()
        assert platform.secret_hash == hmac.new(key.encode(), bare.encode(), "sha256").hexdigest()
        assert secret_ok(conn, platform.secret_hash, SECRET)
        assert not secret_ok(conn, platform.secret_hash, "wrong")
    store.dispose()


# --------------------------------------------------------------------------- sessions


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _sign_in(client: httpx.Client, form: dict[str, str]) -> None:
    page = client.get("/dashboard/login")
    answer = client.post("/dashboard/login", data={"csrf": _csrf(page.text), **form})
    assert answer.status_code == 303, answer.text
    assert client.get("/dashboard").status_code == 200


def _sign_out(client: httpx.Client) -> None:
    page = client.get("/dashboard")
    answer = client.post("/dashboard/logout", data={"csrf": _csrf(page.text)})
    assert answer.status_code == 303


def _thief(base_url: str, cookie: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url)
    client.cookies.set("msgcube_dashboard", cookie, path="/dashboard")
    return client


def test_sign_out_and_a_new_secret_end_copied_sessions(store: Store, tmp_path: Path) -> None:
    """A cookie copied before sign-out is refused after it, by every worker."""
    appid = fresh_appid("wxsess")
    with store.write() as conn:
        add_account(conn, appid=appid, secret=SECRET, tz="Asia/Shanghai", now=int(NOW.timestamp()))
    as_account = {"kind": "account", "appid": appid, "secret": SECRET}
    as_admin = {"kind": "admin", "token": ADMIN}
    with ServerProcess(
        _url(store), tmp_path, now=NOW.isoformat(), workers=2, admin_token=ADMIN
    ) as server:
        for form in (as_account, as_admin):
            with httpx.Client(base_url=server.base_url) as victim:
                _sign_in(victim, form)
                copied = victim.cookies["msgcube_dashboard"]
                with _thief(server.base_url, copied) as thief:
                    for _ in range(4):  # both workers accept the copy... until
                        assert thief.get("/dashboard").status_code == 200
                    _sign_out(victim)
                    for _ in range(4):
                        gone = thief.get("/dashboard")
                        assert gone.status_code == 303, form
                        assert gone.headers["location"] == "/dashboard/login"
                    data = thief.get(
                        "/dashboard/api/rows/getupstreammsg",
                        params={"begin": "2026-03-01", "end": "2026-03-02"},
                    )
                    assert data.status_code == 401
                _sign_in(victim, form)  # signing in again opens a new, working session
        with httpx.Client(base_url=server.base_url) as browser:
            _sign_in(browser, as_account)
            new_secret = "a-new-secret-0123456789abcdef0"
            out = _cli(store, "account", "set", "--appid", appid, "--secret", new_secret)
            assert out.returncode == 0, out.stderr
            assert browser.get("/dashboard").status_code == 303


# --------------------------------------------------------------------------- time zones


def _cli(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    env = msgcube_env(_url(store), NOW.isoformat())
    return subprocess.run(
        [MSGCUBE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_bad_account_values_are_refused_everywhere(store: Store, tmp_path: Path) -> None:
    appid = fresh_appid("wxtz")
    with store.write() as conn:
        add_account(conn, appid=appid, secret=SECRET, tz="Asia/Shanghai", now=int(NOW.timestamp()))
    out = _cli(store, "account", "set", "--appid", appid, "--account-tz", "Mars/Olympus")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "Error: tz: unknown time zone 'Mars/Olympus' (an IANA name such as Asia/Shanghai)"
    ]
    with store.write() as conn:
        for bad in ("Mars/Olympus", "", "../../etc/passwd", "UTC\x00"):
            with pytest.raises(AccountError, match="unknown time zone"):
                update_account(conn, appid, AccountChanges(tz=bad), now=NOW)
        with pytest.raises(ValueError, match="unknown time zone"):
            add_account(
                conn,
                appid=fresh_appid("wxtz"),
                secret=SECRET,
                tz="Mars/Olympus",
                now=int(NOW.timestamp()),
            )
    with ServerProcess(_url(store), tmp_path, now=NOW.isoformat(), admin_token=ADMIN) as server:
        auth = {"authorization": f"Bearer {ADMIN}"}
        answer = httpx.patch(
            f"{server.base_url}/admin/accounts/{appid}", json={"tz": "Mars/Olympus"}, headers=auth
        )
        assert answer.status_code == 400
        assert "unknown time zone 'Mars/Olympus'" in answer.json()["error"]
        created = httpx.post(
            f"{server.base_url}/admin/accounts",
            json={"appid": fresh_appid("wxtz"), "tz": "Nowhere/Land"},
            headers=auth,
        )
        assert created.status_code == 400
        # What PostgreSQL cannot store is refused first, the same way on both backends.
        for body, error in (
            ({"original_id": "g" * 65}, "original_id is longer than 64 characters"),
            ({"token": "to\x00ken"}, "token may only contain"),
            ({"aes_key": "short"}, "aes_key: "),
            ({"ip_whitelist": "nope"}, "ip_whitelist: not an IP address or network: 'nope'"),
        ):
            answer = httpx.patch(
                f"{server.base_url}/admin/accounts/{appid}", json=body, headers=auth
            )
            assert answer.status_code == 400, body
            assert answer.json()["error"].startswith(error), answer.text
        for appid_sent, error in (
            ("w" * 65, "appid is longer than 64"),
            ("wx\x00", "appid may only"),
        ):
            created = httpx.post(
                f"{server.base_url}/admin/accounts", json={"appid": appid_sent}, headers=auth
            )
            assert created.status_code == 400
            assert created.json()["error"].startswith(error)
        nul = httpx.patch(f"{server.base_url}/admin/accounts/wx%00", json={}, headers=auth)
        assert nul.status_code == 404
    out = _cli(store, "account", "add", "--appid", fresh_appid("wxtz"), "--aes-key", "short")
    assert out.returncode == 1 and out.stderr.startswith("Error: aes_key: "), out.stderr
    assert len(out.stderr.splitlines()) == 1
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None and account.tz == "Asia/Shanghai"
    assert (account.original_id, account.callback_token, account.aes_key) == ("", "", None)


def _message(msg_id: int, when: datetime, user: str = "oUser") -> Message:
    return Message(msg_id, user, int(when.timestamp()), "text")


def test_a_new_time_zone_moves_stored_days_and_hours(store: Store) -> None:
    """23:30 UTC is the next morning in Shanghai; after a move to UTC it is the same evening."""
    appid = fresh_appid("wxmove")
    evening = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)
    with store.write() as conn:
        account = add_account(
            conn, appid=appid, secret=SECRET, tz="Asia/Shanghai", now=int(NOW.timestamp())
        )
        write_batch(
            conn,
            account,
            [_message(1, evening), _message(2, evening, "oOther")],
            TODAY,
            received_at=STAMP,
        )
    ep = BY_NAME["getupstreammsg"]
    hours = BY_NAME["getupstreammsghour"]

    def served(name: str, day: str) -> list[dict[str, object]]:
        with store.read() as conn:
            fresh = get_account(conn, appid)
        assert fresh is not None
        refresh(store, fresh, TODAY)
        return served_list(store, fresh, BY_NAME[name], day, day, NOW)

    assert [r["msg_count"] for r in served(ep.name, "2026-03-06")] == [2]
    assert served(ep.name, "2026-03-05") == []
    out = _cli(store, "account", "set", "--appid", appid, "--account-tz", "UTC")
    assert out.returncode == 0, out.stderr
    with store.read() as conn:
        moved = conn.execute(
            select(messages.c.day, messages.c.hour).where(messages.c.account_id == account.id)
        ).all()
    assert {(d, h) for d, h in moved} == {(date(2026, 3, 5), 23)}
    assert [r["msg_count"] for r in served(ep.name, "2026-03-05")] == [2]
    assert served(ep.name, "2026-03-06") == []
    assert [(r["ref_hour"], r["msg_count"]) for r in served(hours.name, "2026-03-05")] == [
        (2300, 2)
    ]
    with store.read() as conn:
        fresh = get_account(conn, appid)
    assert fresh is not None and fresh.stats_since == date(2026, 3, 5)


def test_a_move_rederives_every_row_like_an_independent_oracle(store: Store) -> None:
    """12,000 messages and some events over DST: each row's day/hour is what zoneinfo says."""
    appid = fresh_appid("wxdst")
    rng = random.Random(11)
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    times = [start + rng.randrange(20 * 86400) for _ in range(12_000)]
    users = [f"oU{rng.randrange(300)}" for _ in times]
    with store.write() as conn:
        account = add_account(
            conn, appid=appid, secret=SECRET, tz="Asia/Shanghai", now=int(NOW.timestamp())
        )
        batch: list[Message | Event] = [
            Message(i + 1, user, when, "text")
            for i, (user, when) in enumerate(zip(users, times, strict=True))
        ]
        batch += [Event(f"oE{i}", times[i], "subscribe") for i in range(50)]
        write_batch(conn, account, batch, TODAY, received_at=STAMP)
    out = _cli(store, "account", "set", "--appid", appid, "--account-tz", "America/New_York")
    assert out.returncode == 0, out.stderr
    york = ZoneInfo("America/New_York")

    def local(ts: int) -> tuple[date, int]:
        moment = datetime.fromtimestamp(ts, york)
        return moment.date(), moment.hour

    with store.read() as conn:
        stored = conn.execute(
            select(messages.c.create_time, messages.c.day, messages.c.hour).where(
                messages.c.account_id == account.id
            )
        ).all()
        stored_events = conn.execute(
            select(events.c.create_time, events.c.day).where(events.c.account_id == account.id)
        ).all()
    assert len(stored) == len(times)
    assert all((d, h) == local(ts) for ts, d, h in stored)
    assert all(d == local(ts)[0] for ts, d in stored_events)
    # The served numbers follow: messages per local day, counted here from the timestamps.
    expected: dict[date, int] = {}
    for ts in times:
        expected[local(ts)[0]] = expected.get(local(ts)[0], 0) + 1
    with store.read() as conn:
        fresh = get_account(conn, appid)
    assert fresh is not None
    now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    refresh(store, fresh, date(2026, 4, 1))
    for day in sorted(expected)[::4]:
        rows = served_list(store, fresh, BY_NAME["getupstreammsg"], str(day), str(day), now)
        assert sum(r["msg_count"] for r in rows) == expected[day], day


@pytest.mark.postgres
def test_a_zone_change_waits_for_a_push_batch_that_read_the_old_zone(pg_store: Store) -> None:
    """A batch that read the old zone commits first; the change then re-derives its rows."""
    store = pg_store
    appid = fresh_appid("wxrace")
    evening = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)
    with store.write() as conn:
        account = add_account(
            conn, appid=appid, secret=SECRET, tz="Asia/Shanghai", now=int(NOW.timestamp())
        )
    errors: list[BaseException] = []

    def change() -> None:
        try:
            with store.write() as conn:
                update_account(conn, appid, AccountChanges(tz="UTC"), now=NOW)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with store.write() as batch:  # what the group committer does, one step at a time
        current = ingest_view(batch, account)
        assert current.tz == "Asia/Shanghai"
        mover = threading.Thread(target=change)
        mover.start()
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
            for _ in range(600):
                waiting = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'"
                    )
                ).scalar_one()
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting == 1, "the zone change did not wait for the batch"
        write_batch(batch, current, [_message(1, evening)], TODAY, received_at=int(NOW.timestamp()))
    mover.join(timeout=60)
    assert not errors, errors
    with store.read() as conn:
        stored = conn.execute(
            select(messages.c.day, messages.c.hour).where(messages.c.account_id == account.id)
        ).all()
    assert [tuple(r) for r in stored] == [(date(2026, 3, 5), 23)]
