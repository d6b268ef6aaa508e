"""Storing messages, events and followers in ClickHouse, deduplicated on WeChat's keys.

ClickHouse has no unique constraint, so a batch first asks which of its keys are stored
already (``message_ids``, ``events``) and inserts only the rest: the new/duplicate
counts and the dirty marks come out as on SQL, sequentially exact. Two *concurrent*
copies of one push can both pass that check; both rows then exist until the engine
merges them (``ReplacingMergeTree`` on the same key), and the rollup reads messages with
``FINAL`` (equal keys collapse at read time) and events grouped by their key, so they
still count once.

A batch may hold several accounts: it costs one lookup per table and one insert per
table whatever their number — on a cluster a quorum insert is a ~50 ms round trip, so
per-account statements made a group commit of 16 accounts take seconds. Messages are
inserted before their ids: an id is only ever recorded for a stored message.
``store_records`` returns only once ClickHouse acknowledged every insert — with
``insert_quorum`` on a cluster. It touches no ``db``: the caller marks what it returns
(``Stored.result``) in its own transaction, after, so the long round trips are outside
the db write lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
MESSAGE_ID_COLUMNS = ("account_id", "msg_id", "create_time", "counted", "received_at")
EVENT_COLUMNS = ("account_id", "openid", "create_time", "event", "received_at")

_EventKey = tuple[int, str, int, str]  # account, openid, CreateTime, event


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """What ``message_ids`` says of a MsgId already stored."""

    create_time: int
    counted: bool


@dataclass(slots=True)
class Resent:
    """The days of the records a batch found stored already, by what they would mark.

    A copy found stored may be a retry of a batch whose ``db`` marks never committed:
    the caller marks again each period they touch that is not pending
    (``rollup_state.not_pending``) and moves ``stats_since`` back to ``days``.
    """

    days: set[date] = field(default_factory=set)
    counted_days: set[date] = field(default_factory=set)
    follow_days: set[date] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class AccountRecords:
    """One account's records of a batch."""

    account_id: int
    messages: Sequence[Message]
    events: Sequence[Event]


@dataclass(slots=True)
class Stored:
    """What one account's records did in ClickHouse, as times (days come from ``result``)."""

    messages_duplicate: int = 0
    events_duplicate: int = 0
    messages: list[tuple[int, bool]] = field(default_factory=list)  # new: time, counted
    events: list[tuple[int, bool]] = field(default_factory=list)  # new: time, follow
    resent: list[tuple[int, bool]] = field(default_factory=list)  # stored: time, counted
    resent_events: list[tuple[int, bool]] = field(default_factory=list)  # stored: time, follow

    def result(self, tz: str) -> tuple[WriteResult, Resent]:
        """What was new, by local day in TZ (read afresh in the caller's transaction), and
        the days of the duplicates' stored copies."""
        result = WriteResult(
            messages_new=len(self.messages),
            messages_duplicate=self.messages_duplicate,
            events_new=len(self.events),
            events_duplicate=self.events_duplicate,
        )
        days: dict[int, date] = {}

        def day_of(t: int) -> date:
            found = days.get(t)
            if found is None:
                found = days[t] = local_day_hour(t, tz)[0]
            return found

        def add(rows: list[tuple[int, bool]], every: set[date], flagged: set[date]) -> None:
            for t, flag in rows:
                day = day_of(t)
                every.add(day)
                if flag:
                    flagged.add(day)

        resent = Resent()
        add(self.messages, result.all_days, result.counted_days)
        add(self.events, result.all_days, result.follow_days)
        add(self.resent, resent.days, resent.counted_days)
        add(self.resent_events, resent.days, resent.follow_days)
        return result, resent


def _stored_msg_ids(
    an: Analytics, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], StoredCopy]:
    found: dict[tuple[int, int], StoredCopy] = {}
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        for account, mid, t, counted in an.rows(
            "SELECT account_id, msg_id, min(create_time), max(counted)"
            f" FROM {an.table('message_ids')}"
            f" WHERE account_id IN {in_list(sorted({a for a, _ in chunk}))}"
            f" AND (account_id, msg_id) IN {tuple_set(chunk)}"
            " GROUP BY account_id, msg_id"
        ):
            found[(int(account), int(mid))] = StoredCopy(int(t), bool(counted))
    return found


def _stored_events(an: Analytics, keys: Sequence[_EventKey]) -> set[_EventKey]:
    found: set[_EventKey] = set()
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        found.update(
            (int(a), str(o), int(t), str(ev))
            for a, o, t, ev in an.rows(
                "SELECT DISTINCT account_id, openid, create_time, event"
                f" FROM {an.table('events')}"
                f" WHERE account_id IN {in_list(sorted({k[0] for k in chunk}))}"
                f" AND (account_id, openid, create_time, event) IN {tuple_set(chunk)}"
            )
        )
    return found


def store_records(
    an: Analytics, batch: Sequence[AccountRecords], received_at: int
) -> dict[int, Stored]:
    """Store the batch's new messages and events, every account at once; what each
    account's records did, by account id."""
    out = {group.account_id: Stored() for group in batch}
    messages: dict[tuple[int, int], Message] = {}
    events: dict[_EventKey, Event] = {}
    for group in batch:
        for m in group.messages:
            messages.setdefault((group.account_id, m.msg_id), m)
        for e in group.events:
            events.setdefault((group.account_id, e.openid, e.create_time, e.event), e)
    stored_ids = _stored_msg_ids(an, list(messages)) if messages else {}
    stored_events = _stored_events(an, list(events)) if events else set()
    message_rows, id_rows, event_rows = [], [], []
    for (account, mid), m in messages.items():
        copy = stored_ids.get((account, mid))
        if copy is not None:
            out[account].resent.append((copy.create_time, copy.counted))
            continue
        counted = m.msg_type is not None
        message_rows.append(
            (account, m.create_time, mid, m.openid, m.msg_type or 0, m.msg_type_name, received_at)
        )
        id_rows.append((account, mid, m.create_time, int(counted), received_at))
        out[account].messages.append((m.create_time, counted))
    for key, e in events.items():
        follow = e.event in FOLLOW_EVENTS
        if key in stored_events:
            out[key[0]].resent_events.append((e.create_time, follow))
        else:
            event_rows.append((key[0], e.openid, e.create_time, e.event, received_at))
            out[key[0]].events.append((e.create_time, follow))
    for group in batch:
        stored = out[group.account_id]
        stored.messages_duplicate += len(group.messages)
        stored.events_duplicate += len(group.events)
    for stored in out.values():
        stored.messages_duplicate -= len(stored.messages)
        stored.events_duplicate -= len(stored.events)
    an.insert("messages", MESSAGE_COLUMNS, message_rows)
    an.insert("message_ids", MESSAGE_ID_COLUMNS, id_rows)
    an.insert("events", EVENT_COLUMNS, event_rows)
    return out


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
    (seconds), so ``db`` never hands the id to a new account (schema: AUTOINCREMENT).
    """
    wait = {"mutations_sync": 2} if an.url.kind == "chdb" else {}
    for name, columns, _, _ in TABLES:
        if name != "schema_version" and any(c == "account_id" for c, _ in columns):
            an.ddl(ch.delete_where(an.target, name, f"account_id = {literal(account_id)}"), wait)
