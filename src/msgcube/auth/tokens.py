"""Issuing and checking access tokens the way WeChat does.

* ``/cgi-bin/token``: every call issues a new token and supersedes the previous one,
  which keeps working for 5 minutes (WeChat's documented overlap), then answers 40001;
  any older one ends at once, so only the newest two tokens ever work.
* ``/cgi-bin/stable_token``: the same token while it has more than 5 minutes left; in
  its last 5 minutes a new one is issued and both work until the old one expires, so
  ``expires_in`` is never below 300. ``force_refresh`` ends the current one at once, at
  most 20 times a day and 30 s apart (otherwise the normal answer is given).
  Returning "the same token" again without storing it is done by deriving stable tokens
  from a per-deployment key (HMAC): the database holds only a nonce and the token hash.

The two kinds are independent: neither call ever invalidates the other's tokens. Every
issue first takes the account's row lock (``lock_account``): on PostgreSQL two
concurrent calls would otherwise each read "no current token" or "may force" and both
issue one (two different stable tokens, or two forced refreshes in the same second).
Every function takes ``now`` (Unix seconds) so tests pin the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection

from msgcube.auth.caller_cache import CallerCache
from msgcube.domain.periods import zone
from msgcube.errors import ApiError
from msgcube.storage.accounts import Account
from msgcube.storage.server_secrets import server_secret
from msgcube.storage.tokens import (
    TokenChecks,
    TokenKind,
    TokenRow,
    count_forced_since,
    find_token,
    insert_token,
    last_forced_at,
    latest_token,
    rotate,
    supersede,
)
from msgcube.storage.usage import add_usage, lock_account

TOKEN_TTL = 7200
OVERLAP = 300
FORCE_PER_DAY = 20
FORCE_INTERVAL = 30
MAX_TOKEN_LENGTH = 512
TOKEN_API = "/cgi-bin/token"  # noqa: S105 - an API path, not a password


@dataclass(frozen=True, slots=True)
class Grant:
    access_token: str
    expires_in: int

    def body(self) -> dict[str, object]:
        return {"access_token": self.access_token, "expires_in": self.expires_in}


def new_token() -> str:
    """An opaque token: 128 URL-safe characters, 768 bits of randomness."""
    return secrets.token_urlsafe(96)


def issue_access_token(
    conn: Connection, account: Account, now: int, today: date, daily_limit: int
) -> Grant:
    """``/cgi-bin/token``: a new token; the previous one lives 5 more minutes."""
    lock_account(conn, account.id)
    used = add_usage(conn, account.id, TOKEN_API, today)
    if used > daily_limit:
        raise ApiError(45009, f"{TOKEN_API}: {daily_limit} calls a day")
    rotate(conn, account.id, TokenKind.TOKEN, now, OVERLAP)
    token = new_token()
    insert_token(
        conn,
        token,
        account_id=account.id,
        kind=TokenKind.TOKEN,
        issued_at=now,
        expires_at=now + TOKEN_TTL,
    )
    return Grant(token, TOKEN_TTL)


def _stable_token(key: str, account: Account, nonce: str) -> str:
    digest = hmac.new(key.encode(), f"{account.appid}|{nonce}".encode(), hashlib.sha512).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _live(row: TokenRow | None, now: int) -> bool:
    return (
        row is not None
        and row.expires_at > now
        and (row.valid_until is None or row.valid_until > now)
    )


def stable_access_token(
    conn: Connection, account: Account, now: int, *, force_refresh: bool, key: str | None = None
) -> Grant:
    """``/cgi-bin/stable_token`` (see the module docstring for the rules)."""
    secret = key or server_secret(conn, "stable_token_key")
    lock_account(conn, account.id)
    current = latest_token(conn, account.id, TokenKind.STABLE)
    if force_refresh and _may_force(conn, account, now):
        supersede(conn, account.id, TokenKind.STABLE, now)
        return _issue_stable(conn, account, now, secret, forced=True)
    if current is not None and _live(current, now) and now < current.expires_at - OVERLAP:
        assert current.nonce is not None
        return Grant(_stable_token(secret, account, current.nonce), current.expires_at - now)
    return _issue_stable(conn, account, now, secret, forced=False)


def _may_force(conn: Connection, account: Account, now: int) -> bool:
    local = datetime.fromtimestamp(now, zone(account.tz))
    midnight = int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    if count_forced_since(conn, account.id, midnight) >= FORCE_PER_DAY:
        return False
    last = last_forced_at(conn, account.id)
    return last is None or now - last >= FORCE_INTERVAL


def _issue_stable(conn: Connection, account: Account, now: int, key: str, *, forced: bool) -> Grant:
    nonce = secrets.token_hex(16)
    token = _stable_token(key, account, nonce)
    insert_token(
        conn,
        token,
        account_id=account.id,
        kind=TokenKind.STABLE,
        issued_at=now,
        expires_at=now + TOKEN_TTL,
        forced=forced,
        nonce=nonce,
    )
    return Grant(token, TOKEN_TTL)


def check_token(conn: Connection, token: str, now: int) -> TokenRow:
    """The token's row if it may be used now: 40001 unknown/superseded, 42001 expired."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(40001, "malformed access_token")
    return _usable(find_token(conn, token), now)


def check_token_checks(cache: CallerCache, conn: Connection, token: str, now: int) -> TokenChecks:
    """``check_token`` plus the token's account and quota override (the API's hot path,
    through the generation-checked ``CallerCache``)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(40001, "malformed access_token")
    found = cache.checks(conn, token)
    _usable(found.token if found else None, now)
    assert found is not None  # _usable refused a missing token
    return found


def _usable(row: TokenRow | None, now: int) -> TokenRow:
    if row is None:
        raise ApiError(40001, "unknown access_token")
    if row.valid_until is not None and now >= row.valid_until:
        raise ApiError(40001, "access_token superseded or revoked")
    if now >= row.expires_at:
        raise ApiError(42001)
    return row
