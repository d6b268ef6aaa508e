"""Rows of third-party platforms, their authorizations and refresh tokens.

Plain reads and writes; the rules (ticket slots, rotation, the 5-minute overlap) live in
``auth/platforms.py``; the quota books are in ``storage/usage.py``. Secrets and refresh
tokens are stored as SHA-256 hashes (``hash_token``), like access tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from msgcube.storage.dialect import upsert
from msgcube.storage.schema import (
    accounts,
    authorizations,
    platforms,
    refresh_tokens,
)
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


def _platform(row: Any) -> Platform:
    return Platform(
        id=row.id,
        component_appid=row.component_appid,
        ticket_url=row.ticket_url,
        created_at=row.created_at,
        pushed_slot=row.pushed_slot,
        secret_hash=row.secret_hash,
        push_token=row.push_token,
        aes_key=row.aes_key,
        ticket_key=row.ticket_key,
    )


def insert_platform(conn: Connection, **values: Any) -> Platform:
    conn.execute(platforms.insert().values(**values))
    platform = get_platform(conn, values["component_appid"])
    assert platform is not None
    return platform


def get_platform(conn: Connection, component_appid: str) -> Platform | None:
    row = conn.execute(
        select(platforms).where(platforms.c.component_appid == component_appid)
    ).first()
    return _platform(row) if row else None


def get_platform_by_id(conn: Connection, platform_id: int) -> Platform | None:
    row = conn.execute(select(platforms).where(platforms.c.id == platform_id)).first()
    return _platform(row) if row else None


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
