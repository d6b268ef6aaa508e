"""Changing an account: the one function behind ``msgcube account set`` and the admin API.

Every value is checked here, by the same rules for both edges (an ``AccountError`` names
the field), so nothing that would break the account later can be stored:

* ``tz`` must be an IANA time zone (``check_tz``). Changing it re-derives the local day and
  hour of everything already stored (``storage/local_times``) and marks every touched day,
  week and month dirty, so statistics follow the new zone — the data is not refused;
* a new ``aes_key`` must be a valid EncodingAESKey; the replaced key stays as the previous
  one, so pushes sealed with it while WeChat switches keys still open;
* a ``secret`` must not be empty; a new one is hashed with the deployment's key and ends
  dashboard sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, func, select, update

from msgcube.analytics.reads import local_days
from msgcube.auth.policy import normalize_whitelist
from msgcube.domain.identifiers import (
    COUNT_MAX,
    appid_problem,
    original_id_problem,
    secret_problem,
    token_problem,
)
from msgcube.domain.periods import check_tz, local_today
from msgcube.errors import AccountError, AccountExists, NotFound
from msgcube.relay.upstream import upstream_or_none
from msgcube.rollup.plan import keys_for_days
from msgcube.storage.accounts import Account, add_account, get_account, set_account
from msgcube.storage.db import analytics_of
from msgcube.storage.local_times import LOCAL_TIME_TABLES, rederive
from msgcube.storage.rollup_state import mark_dirty
from msgcube.storage.schema import accounts
from msgcube.storage.usage import set_daily_limit_override
from msgcube.wechat import AESKey


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """What to change; ``None`` leaves a field as it is."""

    secret: str | None = None
    original_id: str | None = None
    callback_token: str | None = None
    aes_key: str | None = None
    prev_aes_key: str | None = None
    verified: bool | None = None
    tz: str | None = None
    ip_whitelist: str | list[str] | None = None
    daily_quota: int | Literal["default"] | None = None  # "default": the setting applies
    upstream_url: str | None = None  # the account's own server to relay to; "" clears

    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


def _check(problem: str | None) -> None:
    """The shared identifier rules (``domain/identifiers``) as an ``AccountError``."""
    if problem:
        raise AccountError(problem)


def check_changes(changes: AccountChanges) -> dict[str, Any]:
    """The column values of ``changes``, each checked (``AccountError`` names a bad one)."""
    values: dict[str, Any] = {}
    if changes.secret is not None:
        _check(secret_problem(changes.secret))
        values["secret"] = changes.secret
    if changes.verified is not None:
        values["verified"] = changes.verified
    if changes.original_id is not None:
        _check(original_id_problem(changes.original_id))
        values["original_id"] = changes.original_id
    if changes.callback_token is not None:
        _check(token_problem(changes.callback_token, "token"))
        values["callback_token"] = changes.callback_token
    for name in ("aes_key", "prev_aes_key"):
        key = getattr(changes, name)
        if key:
            try:
                AESKey(key)
            except ValueError as exc:
                raise AccountError(f"{name}: {exc}") from None
        if key is not None:
            values[name] = key or None
    if changes.tz is not None:
        try:
            values["tz"] = check_tz(changes.tz)
        except ValueError as exc:
            raise AccountError(f"tz: {exc}") from None
    if changes.ip_whitelist is not None:
        try:
            values["ip_whitelist"] = normalize_whitelist(changes.ip_whitelist)
        except ValueError as exc:
            raise AccountError(f"ip_whitelist: {exc}") from None
    if changes.upstream_url is not None:
        try:
            values["upstream_url"] = upstream_or_none(changes.upstream_url)
        except ValueError as exc:
            raise AccountError(f"upstream: {exc}") from None
    quota = changes.daily_quota
    if (
        quota is not None
        and quota != "default"
        and (isinstance(quota, bool) or not 0 <= quota <= COUNT_MAX)
    ):
        raise AccountError(f"daily_quota: must be 0 to {COUNT_MAX}, or 'default'")
    return values


def create_account(
    conn: Connection, appid: str, secret: str, *, tz: str, changes: AccountChanges, now: datetime
) -> Account:
    """Register ``appid`` with ``secret`` in ``tz``, then apply ``changes`` (all checked first)."""
    _check(appid_problem(appid))
    _check(secret_problem(secret))
    check_changes(changes)
    try:
        check_tz(tz)
    except ValueError as exc:
        raise AccountError(f"tz: {exc}") from None
    if get_account(conn, appid) is not None:
        raise AccountExists(f"account {appid} already exists")
    add_account(conn, appid=appid, secret=secret, tz=tz, now=int(now.timestamp()))
    return update_account(conn, appid, changes, now=now)


def update_account(
    conn: Connection, appid: str, changes: AccountChanges, *, now: datetime
) -> Account:
    """Apply checked ``changes`` to the account ``appid`` (``NotFound`` if there is none)."""
    values = check_changes(changes)
    try:
        _check(appid_problem(appid))
    except AccountError:
        raise NotFound(f"unknown appid {appid!r}") from None  # none could have been stored
    account = get_account(conn, appid)
    if account is None:
        raise NotFound(f"unknown appid {appid}")
    new_key = values.get("aes_key")
    if new_key and "prev_aes_key" not in values and account.aes_key not in (None, new_key):
        values["prev_aes_key"] = account.aes_key
    moved = "tz" in values and values["tz"] != account.tz
    if moved:  # wait for push batches that read the old zone (see _follow_time_zone)
        conn.execute(select(accounts.c.id).where(accounts.c.id == account.id).with_for_update())
    if values:
        account = set_account(conn, appid, **values)
    if moved:
        _follow_time_zone(conn, account, now)
    if changes.daily_quota is not None:
        limit = None if changes.daily_quota == "default" else changes.daily_quota
        set_daily_limit_override(conn, account.id, limit)
    return account


def _follow_time_zone(conn: Connection, account: Account, now: datetime) -> None:
    """Re-derive local days/hours in the account's (new) zone; recompute what they touch.

    The account row is locked ``FOR UPDATE`` first: on PostgreSQL a push batch reads the
    zone ``FOR KEY SHARE`` (``storage/accounts.ingest_view``), so batches that read the
    old zone have committed before this reads the rows, and later ones see the new zone.
    """
    touched = rederive(conn, account.id, account.tz)
    analytics = analytics_of(conn)
    kept: set[date] = set()
    if analytics is not None:
        # ClickHouse keeps Unix times only (rollups derive local days): nothing to
        # rewrite there, but every day its data touches in either zone is dirty — a
        # zone moves a time by less than a day either way.
        kept = local_days(analytics, account.id, account.tz)
        touched |= {d + timedelta(days=k) for d in kept for k in (-1, 0, 1)}
    if touched:
        mark_dirty(conn, account.id, keys_for_days(touched), local_today(now, account.tz))
    first: date | None = None
    for spec in LOCAL_TIME_TABLES:
        t = spec.table
        day = conn.execute(
            select(func.min(t.c[spec.day])).where(t.c.account_id == account.id)
        ).scalar_one()
        if day is not None and (first is None or day < first):
            first = day
    if kept:
        first = min(kept) if first is None else min(first, *kept)
    if first is not None:  # the first day of data, as ingest keeps it, in the new zone
        conn.execute(update(accounts).where(accounts.c.id == account.id).values(stats_since=first))
