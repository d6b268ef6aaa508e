"""Storing validated records and marking what they change.

Every path that accepts data — the callback, the bulk import, the generator — ends
here, so deduplication and dirty-marking behave the same for all of them. A batch is
one transaction: its rows and the dirty marks they cause commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import Connection

from msgcube.analytics import writes as analytics_writes
from msgcube.domain.messages import Event, Message, Record
from msgcube.rollup.plan import keys_for_days, keys_from
from msgcube.storage.accounts import Account, extend_stats_since, set_follower_base
from msgcube.storage.db import analytics_of
from msgcube.storage.records import (
    SenderIds,
    WriteResult,
    replace_followers,
    write_events,
    write_messages,
)
from msgcube.storage.rollup_state import mark_dirty, unmarked_days


def write_batch(
    conn: Connection,
    account: Account,
    records: Sequence[Record],
    today: date,
    sender_ids: SenderIds | None = None,
    *,
    received_at: int,
) -> WriteResult:
    """Store one batch inside the caller's write transaction; returns what was new.

    ``today`` is the account's local date and ``received_at`` the Unix time to stamp the
    rows with, both read by the caller from the one clock (``Settings.clock``).
    """
    sender_ids = sender_ids or SenderIds(account.id)
    msgs = [r for r in records if isinstance(r, Message)]
    evts = [r for r in records if isinstance(r, Event)]
    analytics = analytics_of(conn)
    if analytics is not None:
        # Rows go to ClickHouse (acknowledged before this returns); the marks below
        # commit with the caller's transaction in ``db``.
        result, resent = analytics_writes.write_messages(
            analytics, account.id, account.tz, msgs, received_at
        )
        result.counted_days |= unmarked_days(conn, account.id, resent)
        result.add(
            analytics_writes.write_events(analytics, account.id, account.tz, evts, received_at)
        )
    else:
        result = write_messages(conn, account.id, account.tz, msgs, sender_ids, received_at)
        result.add(write_events(conn, account.id, account.tz, evts, received_at))
    keys = keys_for_days(result.counted_days)
    if account.follower_base and result.follow_days:
        keys |= keys_from(min(result.follow_days), today)
    mark_dirty(conn, account.id, keys, today)
    if result.all_days:
        extend_stats_since(conn, account.id, min(result.all_days))
    return result


def import_followers(
    conn: Connection, account: Account, openids: Iterable[str], today: date
) -> int:
    """Replace the follower base; every period's count_interval 0 may change, so all are dirty."""
    analytics = analytics_of(conn)
    if analytics is not None:
        count = analytics_writes.replace_followers(analytics, account.id, openids)
        set_follower_base(conn, account.id)
    else:
        count = replace_followers(conn, account.id, openids)
    if account.stats_since is None:
        # No data yet: count_interval 0 starts with the day the follower base became known.
        extend_stats_since(conn, account.id, today)
    else:
        mark_dirty(conn, account.id, keys_from(account.stats_since, today), today)
    return count
