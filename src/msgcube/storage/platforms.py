"""Rows of third-party platforms, their authorizations and refresh tokens.

Plain reads and writes; the rules (ticket slots, rotation, the 5-minute overlap) live in
``auth/platforms.py``; the quota books are in ``storage/usage.py``. Secrets and refresh
tokens are stored as SHA-256 hashes (``hash_token``), like access tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from msgcube.analytics.writes import forget_account
from msgcube.storage.db import analytics_of
from msgcube.storage.dialect import insert_ignore, upsert
from msgcube.storage.schema import (
    accounts,
    authorizations,
    metadata,
    platforms,
    quarantine,
    refresh_tokens,
)
from msgcube.storage.secret_hashes import NO_SECRET
from msgcube.storage.tokens import hash_token

# --- platforms ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Platform:
    id: int
    component_appid: str
    ticket_url: str
    created_at: int
    pushed_slot: int | None = None
    secret_hash: str = field(default="", repr=False)
    push_token: str = field(default="", repr=False)
    aes_key: str | None = field(default=None, repr=False)
    ticket_key: str = field(default="", repr=False)
    prev_aes_key: str | None = field(default=None, repr=False)
    upstream_url: str = ""
    account_limit: int = 10_000


_PLATFORM_FIELDS = tuple(f.name for f in fields(Platform))


def _platform(row: Any) -> Platform:
    """The row as a ``Platform``: its fields are named as the table's columns."""
    return Platform(**{name: getattr(row, name) for name in _PLATFORM_FIELDS})


def insert_platform(conn: Connection, **values: Any) -> Platform:
    conn.execute(platforms.insert().values(**values))
    platform = get_platform(conn, values["component_appid"])
    assert platform is not None
    return platform


def update_platform(conn: Connection, component_appid: str, **values: Any) -> Platform | None:
    conn.execute(
        update(platforms).where(platforms.c.component_appid == component_appid).values(**values)
    )
    return get_platform(conn, component_appid)


def get_platform(conn: Connection, component_appid: str) -> Platform | None:
    row = conn.execute(
        select(platforms).where(platforms.c.component_appid == component_appid)
    ).first()
    return _platform(row) if row else None


def get_platform_by_id(conn: Connection, platform_id: int) -> Platform | None:
    row = conn.execute(select(platforms).where(platforms.c.id == platform_id)).first()
    return _platform(row) if row else None


def lock_platform(conn: Connection, platform_id: int) -> None:
    """Serialise the issuers of one platform's component tokens (a row lock on
    PostgreSQL; SQLite write transactions are serial already)."""
    conn.execute(select(platforms.c.id).where(platforms.c.id == platform_id).with_for_update())


def list_platforms(conn: Connection) -> list[Platform]:
    return [_platform(r) for r in conn.execute(select(platforms).order_by(platforms.c.id))]


def claim_push(conn: Connection, platform_id: int, slot: int) -> bool:
    """Move ``pushed_slot`` forward to ``slot``; True for the one caller that moved it.

    A single conditional UPDATE is atomic on both backends, so when several workers
    run the ticket pusher exactly one of them pushes each slot's ticket.
    """
    p = platforms.c
    result = conn.execute(
        update(platforms)
        .where(p.id == platform_id)
        .where((p.pushed_slot.is_(None)) | (p.pushed_slot < slot))
        .values(pushed_slot=slot)
    )
    return result.rowcount == 1


# --- authorizations and refresh tokens ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorization:
    id: int
    platform_id: int
    account_id: int
    func_ids: tuple[int, ...]
    authorized_at: int
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _authorization(row: Any) -> Authorization:
    return Authorization(
        id=row.id,
        platform_id=row.platform_id,
        account_id=row.account_id,
        func_ids=tuple(int(f) for f in row.func_ids.split(",") if f),
        authorized_at=row.authorized_at,
        revoked_at=row.revoked_at,
    )


def get_authorization(conn: Connection, platform_id: int, account_id: int) -> Authorization | None:
    a = authorizations.c
    row = conn.execute(
        select(authorizations).where(a.platform_id == platform_id, a.account_id == account_id)
    ).first()
    return _authorization(row) if row else None


def save_authorization(
    conn: Connection, platform_id: int, account_id: int, func_ids: Iterable[int], now: int
) -> Authorization:
    """Create or renew the (platform, account) authorization with these permission sets."""
    text = ",".join(str(f) for f in func_ids)
    conn.execute(
        upsert(
            conn,
            authorizations,
            ["platform_id", "account_id"],
            {"func_ids": text, "authorized_at": now, "revoked_at": None},
        ).values(
            platform_id=platform_id,
            account_id=account_id,
            func_ids=text,
            authorized_at=now,
            revoked_at=None,
        )
    )
    found = get_authorization(conn, platform_id, account_id)
    assert found is not None
    return found


def mark_revoked(conn: Connection, authorization_id: int, now: int) -> None:
    conn.execute(
        update(authorizations).where(authorizations.c.id == authorization_id).values(revoked_at=now)
    )


def list_authorizations(conn: Connection, platform_id: int | None = None) -> list[dict[str, Any]]:
    """Authorizations with their platform's and account's appids, for listings."""
    a = authorizations.c
    stmt = (
        select(authorizations, platforms.c.component_appid, accounts.c.appid)
        .join(platforms, platforms.c.id == a.platform_id)
        .join(accounts, accounts.c.id == a.account_id)
        .order_by(a.id)
    )
    if platform_id is not None:
        stmt = stmt.where(a.platform_id == platform_id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


@dataclass(frozen=True, slots=True)
class RefreshRow:
    authorization_id: int
    issued_at: int
    valid_until: int | None


def insert_refresh_token(conn: Connection, token: str, authorization_id: int, now: int) -> None:
    conn.execute(
        refresh_tokens.insert().values(
            token_hash=hash_token(token), authorization_id=authorization_id, issued_at=now
        )
    )


def find_refresh_token(conn: Connection, token: str) -> RefreshRow | None:
    r = refresh_tokens.c
    row = conn.execute(
        select(r.authorization_id, r.issued_at, r.valid_until).where(
            r.token_hash == hash_token(token)
        )
    ).first()
    return RefreshRow(row.authorization_id, row.issued_at, row.valid_until) if row else None


def end_refresh_tokens(
    conn: Connection, authorization_id: int, valid_until: int, *, except_token: str | None = None
) -> int:
    """End every live refresh token of an authorization at ``valid_until`` (never extending)."""
    r = refresh_tokens.c
    stmt = (
        update(refresh_tokens)
        .where(r.authorization_id == authorization_id)
        .where((r.valid_until.is_(None)) | (r.valid_until > valid_until))
        .values(valid_until=valid_until)
    )
    if except_token is not None:
        stmt = stmt.where(r.token_hash != hash_token(except_token))
    return conn.execute(stmt).rowcount


# --- accounts created by a platform's message URL ----------------------------------------


def count_platform_accounts(conn: Connection, platform_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(accounts)
            .where(accounts.c.created_by_platform == platform_id)
        ).scalar_one()
    )


def insert_platform_account(
    conn: Connection, platform_id: int, appid: str, original_id: str, tz: str, now: int
) -> None:
    """Insert the account unless a concurrent push (another worker) just did.

    It has no AppSecret (``NO_SECRET`` matches none) until an operator gives it one:
    only the platform's authorizer tokens read its statistics. Nor has it a callback
    Token, so its own callback URL refuses everything.
    """
    values = {
        "appid": appid,
        "secret_hash": NO_SECRET,
        "original_id": original_id,
        "tz": tz,
        "verified": True,
        "created_at": now,
        "created_by_platform": platform_id,
    }
    conn.execute(insert_ignore(conn, accounts, ["appid"]).values(**values))


def creator_of(conn: Connection, account_id: int) -> int | None:
    """The id of the platform whose message URL created the account (``None``: the operator)."""
    value = conn.execute(
        select(accounts.c.created_by_platform).where(accounts.c.id == account_id)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def add_authorization(
    conn: Connection, platform_id: int, account_id: int, func_ids: Iterable[int], now: int
) -> None:
    """Record an authorization unless one (active or revoked) exists already."""
    conn.execute(
        insert_ignore(conn, authorizations, ["platform_id", "account_id"]).values(
            platform_id=platform_id,
            account_id=account_id,
            func_ids=",".join(str(f) for f in func_ids),
            authorized_at=now,
        )
    )


def platform_accounts(conn: Connection, platform_id: int) -> list[dict[str, Any]]:
    """The accounts linked to a platform (created by its URL or authorized by hand), with
    their authorization state, for ``msgcube platform accounts`` and the admin API."""
    a, z = accounts.c, authorizations.c
    stmt = (
        select(
            a.appid,
            a.original_id,
            a.verified,
            a.created_at,
            (a.created_by_platform == platform_id).label("created_by_platform"),
            z.func_ids,
            z.authorized_at,
            z.revoked_at,
        )
        .select_from(accounts)
        .outerjoin(authorizations, (z.account_id == a.id) & (z.platform_id == platform_id))
        .where((a.created_by_platform == platform_id) | (z.id.is_not(None)))
        .order_by(a.id)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def delete_account_rows(conn: Connection, account_id: int, appid: str) -> None:
    """Delete an account and everything stored for it, in every table that has an
    ``account_id`` (so tables added later are covered), its refresh tokens and its
    quarantined pushes — and its rows in ``analytics_db``."""
    analytics = analytics_of(conn)
    if analytics is not None:
        forget_account(analytics, account_id)
    auth_ids = select(authorizations.c.id).where(authorizations.c.account_id == account_id)
    conn.execute(delete(refresh_tokens).where(refresh_tokens.c.authorization_id.in_(auth_ids)))
    for table in metadata.sorted_tables:
        if "account_id" in table.c:
            conn.execute(delete(table).where(table.c.account_id == account_id))
    conn.execute(delete(quarantine).where(quarantine.c.appid == appid))
    conn.execute(delete(accounts).where(accounts.c.id == account_id))
