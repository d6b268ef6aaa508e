"""Storing messages, events and followers in ClickHouse, deduplicated on WeChat's keys.

ClickHouse has no unique constraint, so a batch first asks which of its keys are stored
already (``message_ids``, ``events``) and inserts only the rest: the new/duplicate
counts and the dirty marks come out as on SQL, sequentially exact. Two *concurrent*
copies of one push can both pass that check; both rows then exist until the engine
merges them (``ReplacingMergeTree`` on the same key), and the rollup deduplicates by
the key itself (``GROUP BY msg_id`` / the event key), so they still count once.

Messages are inserted before their ids: an id is only ever recorded for a stored
message. A batch is acknowledged (the function returns) only after ClickHouse
acknowledged both inserts — with ``insert_quorum`` on a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from msgcube.analytics.client import Analytics, in_list, literal, tuple_set
from msgcube.analytics.schema import TABLES
from msgcube.domain.messages import FOLLOW_EVENTS, Event, Message
from msgcube.domain.periods import local_day_hour
from msgcube.storage import clickhouse_dialect as ch
from msgcube.storage.records import WriteResult

_CHUNK = 5000  # keys per existence query

MESSAGE_COLUMNS = (
    "account_id",
    "create_time",
    "msg_id",
    "openid",
    "msg_type",
    "msg_type_name",
    "received_at",
)
EVENT_COLUMNS = ("account_id", "openid", "create_time", "event", "received_at")


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """What ``message_ids`` says of a MsgId already stored."""

    create_time: int
    counted: bool
    received_at: int


def _stored_msg_ids(
    an: Analytics, account_id: int, msg_ids: Sequence[int]
) -> dict[int, StoredCopy]:
    found: dict[int, StoredCopy] = {}
    for i in range(0, len(msg_ids), _CHUNK):
        chunk = msg_ids[i : i + _CHUNK]
        for mid, t, counted, received in an.rows(
            "SELECT msg_id, min(create_time), max(counted), max(received_at)"
            f" FROM {an.table('message_ids')}"
            f" WHERE account_id = {literal(account_id)} AND msg_id IN {in_list(chunk)}"
            " GROUP BY msg_id"
        ):
            found[int(mid)] = StoredCopy(int(t), bool(counted), int(received))
    return found


def write_messages(
    an: Analytics, account_id: int, tz: str, batch: Sequence[Message], received_at: int
) -> tuple[WriteResult, dict[date, int]]:
    """Store the batch's new messages; returns what was new, and for the counted
    duplicates the local day of their stored copy → when that copy was received (the
    caller checks that those days were marked dirty: ``batch.restore_lost_marks``)."""
    result = WriteResult()
    resent: dict[date, int] = {}
    if not batch:
        return result, resent
    unique: dict[int, Message] = {}
    for m in batch:
        unique.setdefault(m.msg_id, m)
    stored = _stored_msg_ids(an, account_id, list(unique))
    for copy in stored.values():
        if copy.counted:
            day, _ = local_day_hour(copy.create_time, tz)
            resent[day] = max(resent.get(day, copy.received_at), copy.received_at)
    fresh = [m for mid, m in unique.items() if mid not in stored]
    result.messages_duplicate = len(batch) - len(fresh)
    result.messages_new = len(fresh)
    if not fresh:
        return result, resent
    rows = []
    for m in fresh:
        day, _ = local_day_hour(m.create_time, tz)
        code = m.msg_type
        rows.append(
            (account_id, m.create_time, m.msg_id, m.openid, code or 0, m.msg_type_name, received_at)
        )
        result.all_days.add(day)
        if code is not None:
            result.counted_days.add(day)
    an.insert("messages", MESSAGE_COLUMNS, rows)
    an.insert(
        "message_ids",
        ("account_id", "msg_id", "create_time", "counted", "received_at"),
        [
            (account_id, m.msg_id, m.create_time, int(m.msg_type is not None), received_at)
            for m in fresh
        ],
    )
    return result, resent


def write_events(
    an: Analytics, account_id: int, tz: str, batch: Sequence[Event], received_at: int
) -> WriteResult:
    result = WriteResult()
    if not batch:
        return result
    unique: dict[tuple[str, int, str], Event] = {}
    for e in batch:
        unique.setdefault((e.openid, e.create_time, e.event), e)
    keys = list(unique)
    stored: set[tuple[str, int, str]] = set()
    for i in range(0, len(keys), _CHUNK):
        stored.update(
            (str(o), int(t), str(ev))
            for o, t, ev in an.rows(
                f"SELECT DISTINCT openid, create_time, event FROM {an.table('events')}"
                f" WHERE account_id = {literal(account_id)}"
                f" AND (openid, create_time, event) IN {tuple_set(keys[i : i + _CHUNK])}"
            )
        )
    fresh = [e for key, e in unique.items() if key not in stored]
    rows = []
    for e in fresh:
        day, _ = local_day_hour(e.create_time, tz)
        rows.append((account_id, e.openid, e.create_time, e.event, received_at))
        result.all_days.add(day)
        if e.event in FOLLOW_EVENTS:
            result.follow_days.add(day)
    an.insert("events", EVENT_COLUMNS, rows)
    result.events_new = len(fresh)
    result.events_duplicate = len(batch) - len(fresh)
    return result


def current_followers_version(an: Analytics, account_id: int) -> int:
    """The version of the account's current follower list (0: none imported)."""
    found = an.scalar(
        f"SELECT max(version) FROM {an.table('follower_lists')}"
        f" WHERE account_id = {literal(account_id)}"
    )
    return int(found or 0)


def replace_followers(an: Analytics, account_id: int, openids: Iterable[str]) -> int:
    """Make ``openids`` the account's follower list; returns its size.

    The list is written under a new version, then ``follower_lists`` names it current:
    readers see the old list or the whole new one, never a mix, and nothing is deleted.
    """
    unique = sorted(set(openids))
    version = current_followers_version(an, account_id) + 1
    for i in range(0, len(unique), 50_000):
        an.insert(
            "followers",
            ("account_id", "version", "openid"),
            [(account_id, version, o) for o in unique[i : i + 50_000]],
        )
    an.insert(
        "follower_lists", ("account_id", "version", "size"), [(account_id, version, len(unique))]
    )
    return len(unique)


def forget_account(an: Analytics, account_id: int) -> None:
    """Delete every row of the account (``platform forget``), in each table that has one.

    A mutation: chdb applies it before returning; a server applies it in the background
    (seconds), so ``db`` must not hand the id to a new account meanwhile — PostgreSQL
    never reuses one, SQLite only the highest.
    """
    wait = {"mutations_sync": 2} if an.url.kind == "chdb" else {}
    for name, columns, _, _ in TABLES:
        if name != "schema_version" and any(c == "account_id" for c, _ in columns):
            an.ddl(ch.delete_where(an.target, name, f"account_id = {literal(account_id)}"), wait)
