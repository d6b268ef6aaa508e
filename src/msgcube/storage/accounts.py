"""Accounts: registration, lookup, the secret check and dashboard session generations.

The AppSecret is stored slowly hashed and keyed with the deployment's
``app_secret_key`` server secret (``storage/secret_hashes.py``): the accounts table
alone (a dump, a backup of it, a leaked row) reveals nothing, and even with the key every
guess costs scrypt's time and memory. The API and the dashboard check it through
``auth/secret_checks.py``, which keeps that work off the event loop and bounded.

The callback token and EncodingAESKey are kept as they are: msgcube needs them to verify
and decrypt pushes.

``session_gen`` ends dashboard sessions: a session carries the generation it was opened
at, and signing out or a new AppSecret moves it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from msgcube.domain.periods import check_tz
from msgcube.storage.schema import accounts
from msgcube.storage.secret_hashes import new_secret_hash
from msgcube.storage.server_secrets import server_secret

SECRET_KEY_NAME = "app_secret_key"  # noqa: S105 - the name of a server secret, not one


def secret_hash(conn: Connection, secret: str) -> str:
    """What is stored for ``secret`` (slow: scrypt)."""
    return new_secret_hash(server_secret(conn, SECRET_KEY_NAME), secret)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    appid: str
    original_id: str
    tz: str
    verified: bool
    follower_base: bool
    stats_since: date | None
    stats_gen: int = 0
    callback_token: str = field(default="", repr=False)
    aes_key: str | None = field(default=None, repr=False)
    prev_aes_key: str | None = field(default=None, repr=False)
    ip_whitelist: tuple[str, ...] = ()
    secret_hash: str = field(default="", repr=False)
    session_gen: int = 0
    upstream_url: str | None = None  # the account's own server, when msgcube relays to it


def account_from_row(row: Any) -> Account:
    since = row.stats_since
    if isinstance(since, str):  # a raw-driver row from SQLite (see storage/tokens.py)
        since = date.fromisoformat(since)
    return Account(
        id=row.id,
        appid=row.appid,
        original_id=row.original_id,
        tz=row.tz,
        verified=bool(row.verified),
        follower_base=bool(row.follower_base),
        stats_since=since,
        stats_gen=row.stats_gen,
        callback_token=row.callback_token,
        aes_key=row.aes_key,
        prev_aes_key=row.prev_aes_key,
        ip_whitelist=tuple(ip for ip in row.ip_whitelist.split(",") if ip),
        secret_hash=row.secret_hash,
        session_gen=row.session_gen,
        upstream_url=row.upstream_url,
    )


def get_account(conn: Connection, appid: str) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.appid == appid)).first()
    return account_from_row(row) if row else None


def get_account_by_id(conn: Connection, account_id: int) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return account_from_row(row) if row else None


def list_accounts(conn: Connection) -> list[Account]:
    return [account_from_row(r) for r in conn.execute(select(accounts).order_by(accounts.c.id))]


def add_account(
    conn: Connection,
    *,
    appid: str,
    secret: str,
    tz: str,
    original_id: str = "",
    callback_token: str = "",
    aes_key: str | None = None,
    verified: bool = True,
    now: int,
) -> Account:
    """Register an account at Unix time ``now``; ``ValueError`` if the appid exists or
    ``tz`` is no time zone."""
    check_tz(tz)
    if get_account(conn, appid) is not None:
        raise ValueError(f"account {appid} already exists")
    conn.execute(
        accounts.insert().values(
            appid=appid,
            secret_hash=secret_hash(conn, secret),
            original_id=original_id,
            callback_token=callback_token,
            aes_key=aes_key,
            tz=tz,
            verified=verified,
            created_at=now,
        )
    )
    account = get_account(conn, appid)
    assert account is not None
    return account


def set_account(conn: Connection, appid: str, **values: Any) -> Account:
    """Change columns of an account; ``KeyError`` if unknown.

    No checks: use ``auth.accounts.update_account`` for changes that come from people.
    A ``secret`` is hashed, and ends the account's dashboard sessions.
    """
    if "secret" in values:
        values["secret_hash"] = secret_hash(conn, values.pop("secret"))
        values["session_gen"] = accounts.c.session_gen + 1
    if "ip_whitelist" in values and not isinstance(values["ip_whitelist"], str):
        values["ip_whitelist"] = ",".join(values["ip_whitelist"])
    result = conn.execute(update(accounts).where(accounts.c.appid == appid).values(**values))
    if result.rowcount == 0:
        raise KeyError(f"unknown appid {appid}")
    account = get_account(conn, appid)
    assert account is not None
    return account


# FOR KEY SHARE (PostgreSQL; SQLite has one writer anyway): a time-zone change, which
# locks this row FOR UPDATE (auth/accounts.py), waits for batches that read the old zone,
# and later ones wait for it. Batches do not block each other (nor their own UPDATEs).
_INGEST_VIEW = (
    select(accounts.c.tz, accounts.c.follower_base)
    .where(accounts.c.id == bindparam("account_id"))
    .with_for_update(read=True, key_share=True)
)


def ingest_view(conn: Connection, cached: Account) -> Account:
    """``cached`` with the columns that decide what a push batch makes dirty read afresh.

    The group committer calls this inside its write transaction: a cached copy up to a
    second old could miss a follower import that committed just before, and leave later
    periods' count_interval 0 stale. Two columns, not the whole row: this runs once per
    batch on the hot path.
    """
    if conn.dialect.name == "sqlite":  # no row locks to take: straight to the driver
        dbapi: Any = conn.connection.dbapi_connection
        row = dbapi.execute(_SQLITE_INGEST_VIEW, (cached.id,)).fetchone()
    else:
        row = conn.execute(_INGEST_VIEW, {"account_id": cached.id}).first()
    if row is None:
        raise LookupError(f"account {cached.appid} no longer exists")
    tz, follower_base = row[0], bool(row[1])
    if tz == cached.tz and follower_base == cached.follower_base:
        return cached
    return replace(cached, tz=tz, follower_base=follower_base)


_SQLITE_INGEST_VIEW = "SELECT tz, follower_base FROM accounts WHERE id = ?"


def end_sessions(conn: Connection, account_id: int) -> None:
    """Void every dashboard session of the account (signing out ends them everywhere)."""
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(session_gen=accounts.c.session_gen + 1)
    )


_EXTEND_STATS_SINCE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .where((accounts.c.stats_since.is_(None)) | (accounts.c.stats_since > bindparam("day")))
    .values(stats_since=bindparam("day"))
)


def extend_stats_since(conn: Connection, account_id: int, day: date) -> None:
    """Move the account's first day of data back to ``day`` if it is earlier.

    One statement built once: every push batch runs it, and building the expression
    anew each time cost several times running it (bench/push.py)."""
    if conn.dialect.name == "sqlite":  # ~6 times cheaper on the driver
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.execute(_SQLITE_EXTEND_STATS_SINCE, (account_id, day.isoformat()))
        return
    conn.execute(_EXTEND_STATS_SINCE, {"account_id": account_id, "day": day})


_SQLITE_EXTEND_STATS_SINCE = (
    "UPDATE accounts SET stats_since = ?2"
    " WHERE id = ?1 AND (stats_since IS NULL OR stats_since > ?2)"
)


def set_follower_base(conn: Connection, account_id: int) -> None:
    """Record that the account's follower list is known (count_interval 0 is computed)."""
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(follower_base=True))
