"""Storing validated records and marking what they change.

Every path that accepts data — the callback, the bulk import, the generator — ends
here, so deduplication and dirty-marking behave the same for all of them. A batch is
one transaction: its rows and the dirty marks they cause commit together or not at all.
With ``analytics_db`` the rows go to ClickHouse first (``store_analytics``), then the
marks commit in ``db`` (``mark_stored``); should that commit fail, WeChat's retry finds
the rows stored and marks again every period they touch that is not pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import Connection

from msgcube.analytics import writes as analytics_writes
from msgcube.analytics.client import Analytics
from msgcube.analytics.writes import AccountRecords, Stored
from msgcube.domain.identifiers import OPENID_MAX, text_field
from msgcube.domain.message_block import MessageBlock
from msgcube.domain.messages import Event, Message, Record
from msgcube.domain.periods import PeriodKey
from msgcube.rollup.plan import keys_for_days, keys_from
from msgcube.storage.accounts import Account, extend_stats_since, ingest_view, set_follower_base
from msgcube.storage.db import analytics_of
from msgcube.storage.records import (
    SenderIds,
    WriteResult,
    replace_followers,
    write_block_sqlite,
    write_events,
    write_messages,
)
from msgcube.storage.rollup_state import mark_dirty, not_pending


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
    analytics = analytics_of(conn)
    if analytics is not None:
        stored = store_analytics(analytics, [(account, records)], received_at)
        return mark_stored(conn, account, stored[account.id], today)
    sender_ids = sender_ids or SenderIds(account.id)
    msgs = [r for r in records if isinstance(r, Message)]
    evts = [r for r in records if isinstance(r, Event)]
    result = write_messages(conn, account.id, account.tz, msgs, sender_ids, received_at)
    result.add(write_events(conn, account.id, account.tz, evts, received_at))
    _mark(conn, account, result, today)
    return result


def write_block(
    conn: Connection,
    account: Account,
    block: MessageBlock,
    events: Sequence[Event],
    today: date,
    senders: BlockSenders,
    *,
    received_at: int,
) -> WriteResult:
    """Store one parsed import batch inside the caller's write transaction, as
    ``write_batch`` stores records: SQLite takes the block's columns as they are, the
    other backends its records.

    ``account`` is the account as the import read it when it started: its zone is the
    one the block's local days and hours were derived in. The zone and follower base are
    read again here, in the transaction (``ingest_view``): should the zone have changed
    since (``account set --tz`` during the import), the block's days are stale and its
    records are stored through ``write_batch``, which derives them in the current zone.
    """
    openids = senders.openids
    openids.extend(block.new_senders)
    sqlite = analytics_of(conn) is None and conn.dialect.name == "sqlite"
    if sqlite:
        known = senders.ids.resolve(conn, block.new_senders)
        senders.numbers.extend(known[o] for o in block.new_senders)
    current = ingest_view(conn, account)
    if not sqlite or current.tz != account.tz:
        records = list(block.records(openids))
        result = write_batch(
            conn, current, [*records, *events], today, senders.ids, received_at=received_at
        )
        result.messages_duplicate += block.messages - len(records)  # the block's own
        return result
    account = current
    result = write_block_sqlite(conn, account.id, block, senders.numbers, received_at)
    result.add(write_events(conn, account.id, account.tz, events, received_at))
    _mark(conn, account, result, today)
    return result


class BlockSenders:
    """The import's sender numbers (``domain.message_block.Senders``) → database ids.

    ``numbers[n]`` is the database id of sender n and ``openids[n]`` its openid; both
    grow by each block's ``new_senders``, in order.
    """

    def __init__(self, ids: SenderIds) -> None:
        self.ids = ids
        self.openids: list[str] = []
        self.numbers: list[int] = []


def store_analytics(
    analytics: Analytics,
    batch: Sequence[tuple[Account, Sequence[Record]]],
    received_at: int,
) -> dict[int, Stored]:
    """Store the records of several accounts in ClickHouse, before any ``db`` transaction.

    One lookup and one insert per table for the whole batch; returns once ClickHouse
    acknowledged them. The caller then commits ``mark_stored`` for each account in
    ``db``; should that fail, the retry finds the rows stored and restores the marks.
    """
    groups = [
        AccountRecords(
            account.id,
            [r for r in records if isinstance(r, Message)],
            [r for r in records if isinstance(r, Event)],
        )
        for account, records in batch
    ]
    return analytics_writes.store_records(analytics, groups, received_at)


def mark_stored(conn: Connection, account: Account, stored: Stored, today: date) -> WriteResult:
    """Mark in ``db`` what ``store_analytics`` stored for ACCOUNT (read in this transaction,
    so its zone is the current one); returns what was new."""
    result, resent = stored.result(account.tz)
    again = _keys(account, resent.counted_days, resent.follow_days, today)
    _mark(conn, account, result, today, not_pending(conn, account.id, again))
    if resent.days:
        extend_stats_since(conn, account.id, min(resent.days))
    return result


def _keys(
    account: Account, counted_days: set[date], follow_days: set[date], today: date
) -> set[PeriodKey]:
    """The periods that records on these days change."""
    keys = keys_for_days(counted_days)
    if account.follower_base and follow_days:
        keys |= keys_from(min(follow_days), today)
    return keys


def _mark(
    conn: Connection,
    account: Account,
    result: WriteResult,
    today: date,
    again: set[PeriodKey] | None = None,
) -> None:
    keys = _keys(account, result.counted_days, result.follow_days, today)
    mark_dirty(conn, account.id, keys | (again or set()), today)
    if result.all_days:
        extend_stats_since(conn, account.id, min(result.all_days))


def import_followers(
    conn: Connection, account: Account, openids: Iterable[str], today: date
) -> int:
    """Replace the follower base; every period's count_interval 0 may change, so all are dirty.

    Each openid passes the rule every other edge applies to a sender
    (``domain.identifiers.text_field``; ``IngestError`` otherwise, nothing changed), so a
    value PostgreSQL cannot store is refused alike on SQLite, PostgreSQL and ClickHouse.
    """
    openids = [text_field(o, "openid", OPENID_MAX) for o in openids]
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
