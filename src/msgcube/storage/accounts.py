"""Accounts: registration, lookup and the secret check.

The AppSecret is stored only as a SHA-256 hash (secrets are long random strings, so a
fast hash is enough) and compared in constant time. The callback token and
EncodingAESKey are kept as they are: msgcube needs them to verify and decrypt pushes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, select, update

from msgcube.storage.schema import accounts


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


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
    upstream_url: str | None = None  # the account's own server, when msgcube relays to it

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))


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
) -> Account:
    """Register an account; ``ValueError`` if the appid exists."""
    if get_account(conn, appid) is not None:
        raise ValueError(f"account {appid} already exists")
    conn.execute(
        accounts.insert().values(
            appid=appid,
            secret_hash=hash_secret(secret),
            original_id=original_id,
            callback_token=callback_token,
            aes_key=aes_key,
            tz=tz,
            verified=verified,
            created_at=int(time.time()),
        )
    )
    account = get_account(conn, appid)
    assert account is not None
    return account


def set_account(conn: Connection, appid: str, **values: Any) -> Account:
    """Change columns of an account (``secret`` is hashed); ``KeyError`` if unknown."""
    if "secret" in values:
        values["secret_hash"] = hash_secret(values.pop("secret"))
    if "ip_whitelist" in values and not isinstance(values["ip_whitelist"], str):
        values["ip_whitelist"] = ",".join(values["ip_whitelist"])
    result = conn.execute(update(accounts).where(accounts.c.appid == appid).values(**values))
    if result.rowcount == 0:
        raise KeyError(f"unknown appid {appid}")
    account = get_account(conn, appid)
    assert account is not None
    return account


def extend_stats_since(conn: Connection, account_id: int, day: date) -> None:
    """Move the account's first day of data back to ``day`` if it is earlier."""
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .where((accounts.c.stats_since.is_(None)) | (accounts.c.stats_since > day))
        .values(stats_since=day)
    )
