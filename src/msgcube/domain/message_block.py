"""A batch of messages in columns, grouped and counted the way SQLite stores them.

The bulk import parses in one process and writes in another (``ingest.parser_process``):
the parser turns each batch into a ``MessageBlock`` so that the writer, the single
SQLite writer and the import's bottleneck, only feeds ready columns to ``executemany``.
Everything per message that needs no database happens here: the batch's own duplicates
dropped (the first of a MsgId stays), the local day and hour, one group per (local day,
``MsgType``), the per-sender counts of each day, week and month. Senders are numbered
per import (``Senders``); the writer maps those numbers to the database's ids.

Arrays and bytes, not lists of tuples: a block crosses a pipe, and a column pickles as
one buffer where 100k tuples pickle (and unpickle) one by one.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from msgcube.domain.messages import COUNTED_TYPES, MSG_TYPE_CODES, Message
from msgcube.domain.periods import (
    QUARTER,
    local_day_hour,
    month_start,
    quarter_day_hour,
    week_start,
)

_SIGNED = 2**63
_COLUMN = {t: i for i, t in enumerate(COUNTED_TYPES)}
_WIDTH = len(COUNTED_TYPES) + 1  # a count per counted type, then the total


def stored_msg_id(msg_id: int) -> int:
    """The ``messages.msg_id`` of a MsgId: WeChat's unsigned 64 bits in a signed BIGINT.

    MsgIds from 2**63 up are stored as their two's complement (negative). The mapping is
    one-to-one, so deduplication on the column is deduplication on the MsgId.
    """
    return msg_id - 2**64 if msg_id >= _SIGNED else msg_id


def msg_id_of(stored: int) -> int:
    """The MsgId of a ``messages.msg_id`` (inverse of ``stored_msg_id``)."""
    return stored + 2**64 if stored < 0 else stored


@dataclass(slots=True)
class Senders:
    """openid → a number per import (0, 1, 2 … in order of first appearance)."""

    numbers: dict[str, int] = field(default_factory=dict)

    def number(self, openid: str, new: list[str]) -> int:
        found = self.numbers.get(openid)
        if found is None:
            found = self.numbers[openid] = len(self.numbers)
            new.append(openid)
        return found


@dataclass(frozen=True, slots=True)
class Group:
    """The messages of one local day and one ``MsgType`` (``code`` None: not counted)."""

    day: date
    name: str
    code: int | None
    msg_ids: array[int]  # stored form (signed)
    senders: array[int]  # import-local sender numbers
    create_times: array[int]
    hours: bytes


@dataclass(frozen=True, slots=True)
class UserCounts:
    """Per-sender counts of one day, week or month: ``counts[i][k]`` is column i of
    sender k, in the order of ``COUNTED_TYPES`` and then the total."""

    period: str  # day | week | month
    start: date
    senders: array[int]
    counts: tuple[array[int], ...]


@dataclass(frozen=True, slots=True)
class MessageBlock:
    messages: int
    """Messages of the batch, its own duplicates included."""
    new_senders: list[str]
    """openids numbered first in this block, in number order."""
    groups: list[Group]
    counts: list[UserCounts]
    """Every counted message of ``groups`` added up per sender: exact for user_day and
    user_period when all of them turn out new (else the writer adds up what was stored)."""

    def records(self, openids: Sequence[str]) -> Iterator[Message]:
        """The block's messages as records again (``openids[n]`` is sender number n)."""
        for g in self.groups:
            for msg_id, sender, create_time in zip(
                g.msg_ids, g.senders, g.create_times, strict=True
            ):
                yield Message(msg_id_of(msg_id), openids[sender], create_time, g.name)


def build_block(batch: Iterable[Message], tz: str, senders: Senders) -> MessageBlock:
    """Group and count one batch of messages (see the module docstring)."""
    builder = BlockBuilder(tz, senders)
    add = builder.add
    for m in batch:
        add(*m)
    return builder.finish()


class _Columns:
    __slots__ = ("create_times", "hours", "msg_ids", "senders")

    def __init__(self) -> None:
        self.msg_ids: array[int] = array("q")
        self.senders: array[int] = array("q")
        self.create_times: array[int] = array("q")
        self.hours = bytearray()


class BlockBuilder:
    """``build_block`` one message at a time: the parser adds each line's message as it
    reads it, so a batch is held only in columns, never as 100k records."""

    def __init__(self, tz: str, senders: Senders) -> None:
        self.tz = tz
        self.senders = senders
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self._new: list[str] = []
        self._seen: set[int] = set()
        self._groups: dict[tuple[date, str], _Columns] = {}
        # Local day and hour per UTC quarter-hour (exact: see quarter_day_hour), looked up
        # without a call per message; a slot remembers its day's groups by name.
        self._slots: dict[int, tuple[date, int, dict[str, _Columns]]] = {}
        self._by_day: dict[date, dict[str, _Columns]] = {}

    def add(self, msg_id: int, openid: str, create_time: int, name: str) -> None:
        self.count += 1
        if msg_id >= _SIGNED:
            msg_id -= 2**64  # stored_msg_id, inlined on the hot path
        seen = self._seen
        if msg_id in seen:
            return  # the first of a MsgId in the batch is the one stored
        seen.add(msg_id)
        quarter = create_time // QUARTER
        slot = self._slots.get(quarter)
        if slot is None:
            shared = quarter_day_hour(quarter, self.tz)
            if shared is None:  # an offset change inside the quarter: per instant
                day, hour = local_day_hour(create_time, self.tz)
                names = self._by_day.setdefault(day, {})
            else:
                day, hour = shared
                names = self._by_day.setdefault(day, {})
                self._slots[quarter] = (day, hour, names)
        else:
            day, hour, names = slot
        group = names.get(name)
        if group is None:
            group = names[name] = self._groups[(day, name)] = _Columns()
        sender = self.senders.numbers.get(openid)
        if sender is None:
            sender = self.senders.number(openid, self._new)
        group.msg_ids.append(msg_id)
        group.senders.append(sender)
        group.create_times.append(create_time)
        group.hours.append(hour)

    def finish(self) -> MessageBlock:
        """The block of the messages added since the last ``finish``."""
        groups = [
            Group(
                day,
                name,
                MSG_TYPE_CODES.get(name),
                c.msg_ids,
                c.senders,
                c.create_times,
                bytes(c.hours),
            )
            for (day, name), c in self._groups.items()
        ]
        block = MessageBlock(self.count, self._new, groups, _user_counts(groups))
        self._reset()
        return block


def _user_counts(groups: list[Group]) -> list[UserCounts]:
    days: dict[date, dict[int, list[int]]] = {}
    for g in groups:
        if g.code is None:
            continue
        column = _COLUMN[g.code]
        per_user = days.setdefault(g.day, {})
        for sender, n in Counter(g.senders).items():  # counted in C
            values = per_user.get(sender)
            if values is None:
                values = per_user[sender] = [0] * _WIDTH
            values[column] += n
            values[-1] += n
    periods: dict[tuple[str, date], dict[int, list[int]]] = {}
    for day, per_user in days.items():
        for key in (("week", week_start(day)), ("month", month_start(day))):
            totals = periods.setdefault(key, {})
            for sender, values in per_user.items():
                total = totals.get(sender)
                if total is None:
                    totals[sender] = values.copy()
                else:
                    for i, v in enumerate(values):
                        total[i] += v
    labelled = [(("day", d), per_user) for d, per_user in days.items()]
    labelled += list(periods.items())
    return [
        UserCounts(
            period,
            start,
            array("q", per_user),
            tuple(array("q", column) for column in zip(*per_user.values(), strict=True)),
        )
        for (period, start), per_user in labelled
    ]
