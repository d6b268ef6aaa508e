"""Writing messages, events and followers, deduplicated on WeChat's keys.

Messages are unique on (account, MsgId) and events on (account, FromUserName,
CreateTime, Event) — the keys WeChat tells developers to deduplicate retried pushes by.
Each writer returns how many rows were new, and the local days that gained a counted
message, so the caller can mark exactly those periods dirty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import chain, repeat
from typing import Any

import orjson
from sqlalchemy import Connection, case, delete, func, insert, literal, select, update

from msgcube.domain.message_block import MessageBlock, Senders, build_block, stored_msg_id
from msgcube.domain.messages import COUNTED_TYPES, FOLLOW_EVENTS, Event, Message
from msgcube.domain.periods import local_day_hour, month_start, week_start
from msgcube.storage.dialect import insert_ignore, upsert
from msgcube.storage.schema import (
    accounts,
    events,
    followers,
    messages,
    senders,
    user_day,
    user_period,
)

_CHUNK = 500  # bound on bound parameters per IN (...) list


_SQLITE_SENDER_INSERT = "INSERT OR IGNORE INTO senders (account_id, openid) VALUES (?, ?)"
_SQLITE_SENDER_IDS = (
    "SELECT s.openid, s.id FROM json_each(?2) j CROSS JOIN senders s ON s.openid = j.value"
    " WHERE s.account_id = ?1"
)


class SenderIds:
    """openid → interned sender id for one account, remembered across batches.

    A bulk import sees the same few thousand senders millions of times; asking the
    database once per new openid keeps interning off the hot path.
    """

    def __init__(self, account_id: int) -> None:
        self.account_id = account_id
        self._ids: dict[str, int] = {}

    def resolve(self, conn: Connection, openids: Iterable[str]) -> dict[str, int]:
        missing = sorted({o for o in openids if o not in self._ids})
        if missing and conn.dialect.name == "sqlite":
            # Straight to the driver, two statements whatever the count: a first import
            # meets tens of thousands of new senders.
            a = self.account_id
            conn.exec_driver_sql(_SQLITE_SENDER_INSERT, [(a, o) for o in missing])
            found = conn.exec_driver_sql(_SQLITE_SENDER_IDS, (a, orjson.dumps(missing).decode()))
            self._ids.update((openid, sender_id) for openid, sender_id in found)
            return self._ids
        for i in range(0, len(missing), _CHUNK):
            chunk = missing[i : i + _CHUNK]
            conn.execute(
                insert_ignore(conn, senders, ["account_id", "openid"]),
                [{"account_id": self.account_id, "openid": o} for o in chunk],
            )
            rows = conn.execute(
                select(senders.c.openid, senders.c.id).where(
                    senders.c.account_id == self.account_id, senders.c.openid.in_(chunk)
                )
            )
            self._ids.update({r.openid: r.id for r in rows})
        return self._ids


@dataclass(slots=True)
class WriteResult:
    """What one batch changed."""

    messages_new: int = 0
    messages_duplicate: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    counted_days: set[date] = field(default_factory=set)
    """Local days that gained a counted message (their day, week and month are dirty)."""
    follow_days: set[date] = field(default_factory=set)
    """Local days of new subscribe/unsubscribe events (follower counts change from then on)."""
    all_days: set[date] = field(default_factory=set)

    def add(self, other: WriteResult) -> None:
        self.messages_new += other.messages_new
        self.messages_duplicate += other.messages_duplicate
        self.events_new += other.events_new
        self.events_duplicate += other.events_duplicate
        self.counted_days |= other.counted_days
        self.follow_days |= other.follow_days
        self.all_days |= other.all_days


def write_messages(
    conn: Connection,
    account_id: int,
    tz: str,
    batch: Sequence[Message],
    sender_ids: SenderIds,
    received_at: int,
) -> WriteResult:
    if not batch:
        return WriteResult()
    if conn.dialect.name == "sqlite":
        # The import's writer, for a batch built here (pushes, generated traffic).
        block = build_block(batch, tz, Senders())
        known = sender_ids.resolve(conn, block.new_senders)
        numbers = [known[o] for o in block.new_senders]
        return write_block_sqlite(conn, account_id, block, numbers, received_at)
    # No existence query first: the insert's RETURNING names exactly the rows this call
    # stored, the MsgIds stored before (or by a concurrent writer) included — one round
    # trip less per push batch. A duplicate's sender is interned already.
    result = WriteResult()
    unique: dict[int, Message] = {}
    for m in batch:
        unique.setdefault(stored_msg_id(m.msg_id), m)
    # Rows in key order, in this statement and in the user layers' below: two writers
    # storing overlapping MsgIds at once (two imports, an import and the pushes) then
    # take their row locks in one order and queue; in opposite orders each would wait on
    # the other's uncommitted row until PostgreSQL aborts one ("deadlock detected").
    fresh = [unique[k] for k in sorted(unique)]
    result.messages_duplicate = len(batch) - len(fresh)
    ids = sender_ids.resolve(conn, (m.openid for m in fresh))
    rows: list[dict[str, Any]] = []
    days: dict[int, tuple[date, bool]] = {}
    for m in fresh:
        day, hour = local_day_hour(m.create_time, tz)
        code = m.msg_type
        rows.append(
            {
                "account_id": account_id,
                "msg_id": stored_msg_id(m.msg_id),
                "user_id": ids[m.openid],
                "create_time": m.create_time,
                "msg_type_name": m.msg_type_name,
                "msg_type": code,
                "day": day,
                "hour": hour,
                "received_at": received_at,
            }
        )
        days[stored_msg_id(m.msg_id)] = (day, code is not None)
    stmt = _INSERT_MESSAGES.get(conn.dialect.name)
    if stmt is None:  # built once per dialect, as the user-layer upserts
        stmt = _INSERT_MESSAGES[conn.dialect.name] = insert_ignore(
            conn, messages, ["account_id", "msg_id"]
        ).returning(messages.c.msg_id)
    inserted = list(conn.execute(stmt, rows).scalars())
    for msg_id in inserted:
        day, counted = days[msg_id]
        result.all_days.add(day)
        if counted:
            result.counted_days.add(day)
    stored = set(inserted)
    add_user_days(conn, account_id, (r for r in rows if r["msg_id"] in stored))
    result.messages_new = len(inserted)
    result.messages_duplicate += len(rows) - len(inserted)
    return result


_COUNT_COLUMNS = ("c1", "c2", "c3", "c4", "c6", "total")
_INSERT_MESSAGES: dict[str, Any] = {}


def add_user_days(conn: Connection, account_id: int, rows: Iterable[dict[str, Any]]) -> None:
    """Add newly stored messages (``messages`` rows) to their senders' user-day and
    user-period rows (the portable path; SQLite's bulk path is ``_SQLITE_USER_LAYERS``)."""
    slot = {t: i for i, t in enumerate(COUNTED_TYPES)}
    days: dict[tuple[date, int], list[int]] = {}
    for r in rows:
        if r["msg_type"] is None:
            continue
        per_user = days.setdefault((r["day"], r["user_id"]), [0] * len(_COUNT_COLUMNS))
        per_user[slot[r["msg_type"]]] += 1
        per_user[-1] += 1
    if not days:
        return
    periods: dict[tuple[str, date, int], list[int]] = {}
    for (day, user_id), values in days.items():
        for period, start in (("week", week_start(day)), ("month", month_start(day))):
            total = periods.setdefault((period, start, user_id), [0] * len(_COUNT_COLUMNS))
            for i, v in enumerate(values):
                total[i] += v
    add_day, add_period = _user_layer_upserts(conn)
    days = dict(sorted(days.items()))  # key order: see write_messages
    periods = dict(sorted(periods.items()))
    conn.execute(
        add_day,
        [
            {
                "account_id": account_id,
                "day": day,
                "user_id": user_id,
                "week": week_start(day),
                "month": month_start(day),
                **dict(zip(_COUNT_COLUMNS, values, strict=True)),
            }
            for (day, user_id), values in days.items()
        ],
    )
    conn.execute(
        add_period,
        [
            {
                "account_id": account_id,
                "period": period,
                "start": start,
                "user_id": user_id,
                **dict(zip(_COUNT_COLUMNS, values, strict=True)),
            }
            for (period, start, user_id), values in periods.items()
        ],
    )


# Built once per dialect: building the two upserts anew for every push batch cost more
# CPU than running them (PostgreSQL, one-push batches: ≈ 1 ms of ≈ 2.5 ms per commit).
_USER_LAYER_UPSERTS: dict[str, tuple[Any, Any]] = {}


def _user_layer_upserts(conn: Connection) -> tuple[Any, Any]:
    """The user_day and user_period upserts that add a batch's counts (per dialect)."""
    found = _USER_LAYER_UPSERTS.get(conn.dialect.name)
    if found is None:
        add_day = {c: (lambda ex, c=c: user_day.c[c] + ex[c]) for c in _COUNT_COLUMNS}
        add_period = {c: (lambda ex, c=c: user_period.c[c] + ex[c]) for c in _COUNT_COLUMNS}
        found = _USER_LAYER_UPSERTS[conn.dialect.name] = (
            upsert(conn, user_day, ["account_id", "day", "user_id"], add_day),
            upsert(conn, user_period, ["account_id", "period", "start", "user_id"], add_period),
        )
    return found


def rebuild_user_layers(conn: Connection, account_id: int) -> None:
    """Build the account's user-day and user-period rows again from its messages.

    Ingest keeps them current; only a change of every stored day (a new time zone) needs
    this.
    """
    for table in (user_day, user_period):
        conn.execute(delete(table).where(table.c.account_id == account_id))
    counted = (messages.c.account_id == account_id, messages.c.msg_type.is_not(None))
    days = conn.execute(select(messages.c.day).where(*counted).distinct()).scalars().all()
    per_type = [func.sum(case((messages.c.msg_type == t, 1), else_=0)) for t in COUNTED_TYPES]
    for d in days:
        src = (
            select(
                literal(account_id),
                literal(d),
                messages.c.user_id,
                literal(week_start(d)),
                literal(month_start(d)),
                *per_type,
                func.count(),
            )
            .where(*counted, messages.c.day == d)
            .group_by(messages.c.user_id)
        )
        names = ["account_id", "day", "user_id", "week", "month", *_COUNT_COLUMNS]
        conn.execute(insert(user_day).from_select(names, src))
    for period in ("week", "month"):
        label = user_day.c[period]
        src = (
            select(
                user_day.c.account_id,
                literal(period),
                label,
                user_day.c.user_id,
                *[func.sum(user_day.c[c]) for c in _COUNT_COLUMNS],
            )
            .where(user_day.c.account_id == account_id)
            .group_by(user_day.c.account_id, label, user_day.c.user_id)
        )
        names = ["account_id", "period", "start", "user_id", *_COUNT_COLUMNS]
        conn.execute(insert(user_period).from_select(names, src))


_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO messages (account_id, msg_id, user_id, create_time, msg_type_name,"
    " msg_type, day, hour, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_UPSERT_DAY = (
    "INSERT INTO user_day (account_id, day, user_id, week, month, c1, c2, c3, c4, c6, total)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (account_id, day, user_id) DO UPDATE SET"
)
_SQLITE_UPSERT_PERIOD = (
    "INSERT INTO user_period (account_id, period, start, user_id, c1, c2, c3, c4, c6, total)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (account_id, period, start, user_id) DO UPDATE SET"
)


# The batch's new counted messages added to their senders' user-day rows and user-period
# rows; a week starts on Monday and a month on its first (``week_start``/``month_start``).
_SQLITE_COUNTS = """
       SUM(msg_type = 1), SUM(msg_type = 2), SUM(msg_type = 3), SUM(msg_type = 4),
       SUM(msg_type = 6), COUNT(*)
FROM messages NOT INDEXED
WHERE id > ?2 AND account_id = ?1 AND msg_type IS NOT NULL
"""
# NOT INDEXED: by rowid, the new rows only (an index of the account would be every row).
_SQLITE_ADD = """
  c1 = c1 + excluded.c1, c2 = c2 + excluded.c2, c3 = c3 + excluded.c3,
  c4 = c4 + excluded.c4, c6 = c6 + excluded.c6, total = total + excluded.total
"""
_SQLITE_WEEK, _SQLITE_MONTH = "date(day, '-6 days', 'weekday 1')", "date(day, 'start of month')"
_SQLITE_USER_LAYERS = (
    "INSERT INTO user_day (account_id, day, user_id, week, month, c1, c2, c3, c4, c6, total)"
    f" SELECT account_id, day, user_id, {_SQLITE_WEEK}, {_SQLITE_MONTH}, {_SQLITE_COUNTS}"
    " GROUP BY account_id, day, user_id"
    f" ON CONFLICT (account_id, day, user_id) DO UPDATE SET {_SQLITE_ADD}",
    *(
        "INSERT INTO user_period (account_id, period, start, user_id, c1, c2, c3, c4, c6, total)"
        f" SELECT account_id, '{period}', {start} AS start, user_id, {_SQLITE_COUNTS}"
        " GROUP BY account_id, start, user_id"
        f" ON CONFLICT (account_id, period, start, user_id) DO UPDATE SET {_SQLITE_ADD}"
        for period, start in (("week", _SQLITE_WEEK), ("month", _SQLITE_MONTH))
    ),
)


def write_block_sqlite(
    conn: Connection,
    account_id: int,
    block: MessageBlock,
    sender_ids: list[int],
    received_at: int,
) -> WriteResult:
    """A parsed block (``domain.message_block``) into SQLite: the bulk import's writer.

    No existence check and no RETURNING; everything per message was done by the parser:
    one ``executemany`` per (local day, ``MsgType``) group whose rows are zipped
    from the block's columns in C (``sender_ids[n]`` is the database id of the import's
    sender number n), and the block's per-sender counts upserted as they are when every
    counted row was new; else SQL adds up the rows stored (their ids are above
    ``last_id``: the write lock is held from ``BEGIN IMMEDIATE``).

    A group's rowcount is how many of its rows were new: exactly what dirty-marking needs
    (a day is dirty when a counted group of it stored a row), and exact because the
    write transaction began with ``BEGIN IMMEDIATE``: no other writer runs in between.
    Straight to the driver: SQLAlchemy's per-row parameter processing costs more than
    SQLite's insert itself.
    """
    result = WriteResult()
    dbapi: Any = conn.connection.dbapi_connection
    last_id = dbapi.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
    ids = sender_ids.__getitem__
    all_new = True
    for g in block.groups:
        rows = zip(
            repeat(account_id),
            g.msg_ids,
            map(ids, g.senders),
            g.create_times,
            repeat(g.name),
            repeat(g.code),
            repeat(g.day.isoformat()),
            g.hours,
            repeat(received_at),
        )
        stored = dbapi.executemany(_SQLITE_INSERT, rows).rowcount
        if stored:
            result.messages_new += stored
            result.all_days.add(g.day)
        if g.code is not None:
            all_new = all_new and stored == len(g.msg_ids)
            if stored:
                result.counted_days.add(g.day)
    if all_new:
        days = [c for c in block.counts if c.period == "day"]
        dbapi.executemany(
            _SQLITE_UPSERT_DAY + _SQLITE_ADD,
            chain.from_iterable(
                zip(
                    repeat(account_id),
                    repeat(c.start.isoformat()),
                    map(ids, c.senders),
                    repeat(week_start(c.start).isoformat()),
                    repeat(month_start(c.start).isoformat()),
                    *c.counts,
                )
                for c in days
            ),
        )
        dbapi.executemany(
            _SQLITE_UPSERT_PERIOD + _SQLITE_ADD,
            chain.from_iterable(
                zip(
                    repeat(account_id),
                    repeat(c.period),
                    repeat(c.start.isoformat()),
                    map(ids, c.senders),
                    *c.counts,
                )
                for c in block.counts
                if c.period != "day"
            ),
        )
    elif result.counted_days:
        for statement in _SQLITE_USER_LAYERS:
            dbapi.execute(statement, (account_id, last_id))
    result.messages_duplicate = block.messages - result.messages_new
    return result


def write_events(
    conn: Connection, account_id: int, tz: str, batch: Sequence[Event], received_at: int
) -> WriteResult:
    if not batch:
        return WriteResult()
    if conn.dialect.name == "sqlite":
        return _write_events_sqlite(conn, account_id, tz, batch, received_at)
    result = WriteResult()
    found = {(e.openid, e.create_time, e.event): e for e in reversed(batch)}
    unique = {k: found[k] for k in sorted(found)}  # key order: see write_messages
    rows = [
        {
            "account_id": account_id,
            "openid": e.openid,
            "create_time": e.create_time,
            "event": e.event,
            "day": local_day_hour(e.create_time, tz)[0],
            "received_at": received_at,
        }
        for e in unique.values()
    ]
    stmt = _INSERT_EVENTS.get(conn.dialect.name)
    if stmt is None:
        keys = ["account_id", "openid", "create_time", "event"]
        stmt = _INSERT_EVENTS[conn.dialect.name] = insert_ignore(conn, events, keys).returning(
            events.c.day, events.c.event
        )
    # One statement for the batch; RETURNING names the events that were new (rowcount is
    # not reliable for INSERT … ON CONFLICT across drivers).
    inserted = conn.execute(stmt, rows).all()
    for day, event in inserted:
        result.all_days.add(day)
        if event in FOLLOW_EVENTS:
            result.follow_days.add(day)
    result.events_new = len(inserted)
    result.events_duplicate = len(batch) - len(inserted)
    return result


_INSERT_EVENTS: dict[str, Any] = {}


_SQLITE_EVENT_INSERT = (
    "INSERT OR IGNORE INTO events (account_id, openid, create_time, event, day, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def _write_events_sqlite(
    conn: Connection, account_id: int, tz: str, batch: Sequence[Event], received_at: int
) -> WriteResult:
    """Events on SQLite: one ``INSERT OR IGNORE`` per (day, follow or not), as messages."""
    result = WriteResult()
    unique = {(e.openid, e.create_time, e.event): e for e in reversed(batch)}
    groups: dict[tuple[date, bool], list[tuple[object, ...]]] = {}
    for e in unique.values():
        day, _ = local_day_hour(e.create_time, tz)
        row = (account_id, e.openid, e.create_time, e.event, day.isoformat(), received_at)
        groups.setdefault((day, e.event in FOLLOW_EVENTS), []).append(row)
    for (day, follow), rows in groups.items():
        stored = conn.exec_driver_sql(_SQLITE_EVENT_INSERT, rows).rowcount
        if stored:
            result.events_new += stored
            result.all_days.add(day)
            if follow:
                result.follow_days.add(day)
    result.events_duplicate = len(batch) - result.events_new
    return result


def replace_followers(conn: Connection, account_id: int, openids: Iterable[str]) -> int:
    """Make ``openids`` the account's imported follower list; returns its size."""
    conn.execute(delete(followers).where(followers.c.account_id == account_id))
    unique = sorted(set(openids))
    for i in range(0, len(unique), 5000):
        conn.execute(
            followers.insert(),
            [{"account_id": account_id, "openid": o} for o in unique[i : i + 5000]],
        )
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(follower_base=True))
    return len(unique)
