"""Access tokens and daily call counters.

Tokens are stored as SHA-256 hashes; a lookup hashes the presented token and finds it
by primary key, so no comparison ever touches a stored secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, func, select, update

from msgcube.storage.accounts import Account, account_from_row
from msgcube.storage.db import driver_cursor, fetch_one
from msgcube.storage.schema import access_tokens


class TokenKind(StrEnum):
    """What issued a token, and so what it may do (``auth/policy``)."""

    TOKEN = "token"  # noqa: S105 - /cgi-bin/token, a kind of token, not a password
    STABLE = "stable"  # /cgi-bin/stable_token
    AUTHORIZER = "authorizer"  # a third-party platform, for an authorized account
    COMPONENT = "component"  # a third-party platform, for itself


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_hash: str
    account_id: int
    kind: TokenKind
    platform_id: int | None
    issued_at: int
    expires_at: int
    valid_until: int | None
    forced: bool
    nonce: str | None


def _row(r: object) -> TokenRow:
    return _token_row(r._mapping)  # type: ignore[attr-defined]


def _token_row(m: Mapping[str, Any]) -> TokenRow:
    return TokenRow(
        token_hash=m["token_hash"],
        account_id=m["account_id"],
        kind=TokenKind(m["kind"]),
        platform_id=m["platform_id"],
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
        valid_until=m["valid_until"],
        forced=bool(m["forced"]),
        nonce=m["nonce"],
    )


def find_token(conn: Connection, token: str) -> TokenRow | None:
    r = conn.execute(
        select(access_tokens).where(access_tokens.c.token_hash == hash_token(token))
    ).first()
    return _row(r) if r else None


_AUTH_SQL = (
    "SELECT t.token_hash, t.account_id, t.kind, t.platform_id, t.issued_at, t.expires_at,"
    " t.valid_until, t.forced, t.nonce, q.daily_limit AS quota_limit, a.*"
    " FROM access_tokens t LEFT JOIN accounts a ON a.id = t.account_id"
    " LEFT JOIN account_quotas q ON q.account_id = t.account_id"
    " WHERE t.token_hash = {param}"
)
_GEN_QMARK = "SELECT auth_gen FROM accounts WHERE id = ?"
_GEN_FORMAT = "SELECT auth_gen FROM accounts WHERE id = %s"


@dataclass(frozen=True, slots=True)
class TokenChecks:
    """What the API's checks read about a token, in one statement (``find_token_checks``).

    ``auth_gen`` is the account's generation at that read: database triggers move it on
    any change to the account, its tokens, grants or quota override (migration 0010), so
    these values stay exact for as long as it does not move. ``quota_limit`` is the
    account's own daily limit per datacube API (None: the setting applies).
    """

    token: TokenRow
    account: Account | None
    auth_gen: int | None
    quota_limit: int | None


def _param(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def find_token_checks(conn: Connection, token_hash: str) -> TokenChecks | None:
    """The token, its account and quota override in one statement: the API's hot path.

    Every API call with a token starts here unless its checks are cached. A fixed
    statement with the driver's own placeholder on the driver's cursor costs a fraction
    of a compiled SQLAlchemy statement (measured: 8 µs against 46 µs on SQLite for this
    row), and one join saves round trips. ``conn`` must be outside a transaction
    (``Store.hot_reader``).
    """
    with driver_cursor(conn) as cursor:
        cursor.execute(_AUTH_SQL.format(param=_param(conn)), (token_hash,))
        values = cursor.fetchone()
        names = [d[0] for d in cursor.description] if values is not None else []
    if values is None:
        return None
    m = dict(zip(names, values, strict=True))
    has_account = m["appid"] is not None
    account = account_from_row(SimpleNamespace(**m)) if has_account else None
    return TokenChecks(
        token=_token_row(m),
        account=account,
        auth_gen=m["auth_gen"] if has_account else None,
        quota_limit=m["quota_limit"],
    )


def auth_generation(conn: Connection, account_id: int) -> int | None:
    """The account's ``auth_gen`` now (None: the account is gone); one primary-key read."""
    sql = _GEN_QMARK if conn.dialect.paramstyle == "qmark" else _GEN_FORMAT
    values = fetch_one(conn, sql, (account_id,))
    return None if values is None else int(values[0])


def latest_token(
    conn: Connection, account_id: int, kind: str, platform_id: int | None = None
) -> TokenRow | None:
    t = access_tokens
    # Ties happen: a token force-refreshed in the second it was issued (or any two under a
    # pinned clock). The one not superseded is the current one; without this tie-break
    # the database could pick the superseded one, and a call would issue a third token.
    stmt = (
        select(t)
        .where(t.c.account_id == account_id, t.c.kind == kind)
        .order_by(t.c.issued_at.desc(), t.c.expires_at.desc(), t.c.valid_until.is_(None).desc())
        .limit(1)
    )
    if platform_id is not None:
        stmt = stmt.where(access_tokens.c.platform_id == platform_id)
    r = conn.execute(stmt).first()
    return _row(r) if r else None


def insert_token(
    conn: Connection,
    token: str,
    *,
    account_id: int,
    kind: str,
    issued_at: int,
    expires_at: int,
    platform_id: int | None = None,
    forced: bool = False,
    nonce: str | None = None,
) -> None:
    conn.execute(
        access_tokens.insert().values(
            token_hash=hash_token(token),
            account_id=account_id,
            kind=kind,
            platform_id=platform_id,
            issued_at=issued_at,
            expires_at=expires_at,
            forced=forced,
            nonce=nonce,
        )
    )


def supersede(
    conn: Connection,
    account_id: int,
    kind: str,
    valid_until: int,
    platform_id: int | None = None,
    *,
    except_hash: str | None = None,
) -> int:
    """End every live token of this kind at ``valid_until`` (never extending one)."""
    t = access_tokens
    stmt = (
        update(t)
        .where(t.c.account_id == account_id, t.c.kind == kind, t.c.expires_at > valid_until)
        .where((t.c.valid_until.is_(None)) | (t.c.valid_until > valid_until))
        .values(valid_until=valid_until)
    )
    if platform_id is not None:
        stmt = stmt.where(t.c.platform_id == platform_id)
    if except_hash is not None:
        stmt = stmt.where(t.c.token_hash != except_hash)
    return conn.execute(stmt).rowcount


def rotate(
    conn: Connection,
    account_id: int,
    kind: str,
    now: int,
    overlap: int,
    platform_id: int | None = None,
) -> None:
    """A new token is being issued: the current one works ``overlap`` more seconds, and
    those it had superseded end now, so only the newest two ever work (WeChat's rule).

    Callers hold the account's (or platform's) row lock, so two issues never interleave.
    """
    t = access_tokens
    ended = (
        update(t)
        .where(t.c.account_id == account_id, t.c.kind == kind)
        .where(t.c.valid_until.is_not(None), t.c.valid_until > now)
        .values(valid_until=now)
    )
    if platform_id is not None:
        ended = ended.where(t.c.platform_id == platform_id)
    conn.execute(ended)
    supersede(conn, account_id, kind, now + overlap, platform_id)


def count_forced_since(conn: Connection, account_id: int, since: int) -> int:
    t = access_tokens
    return int(
        conn.execute(
            select(func.count())
            .select_from(t)
            .where(t.c.account_id == account_id, t.c.kind == TokenKind.STABLE, t.c.forced)
            .where(t.c.issued_at >= since)
        ).scalar_one()
    )


def last_forced_at(conn: Connection, account_id: int) -> int | None:
    t = access_tokens
    value = conn.execute(
        select(func.max(t.c.issued_at)).where(
            t.c.account_id == account_id, t.c.kind == TokenKind.STABLE, t.c.forced
        )
    ).scalar_one()
    return int(value) if value is not None else None
