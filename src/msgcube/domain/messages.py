"""What a user sent: messages and events as value types, msg_type codes, count buckets.

A *record* is one push in WeChat's field names (``FromUserName``, ``CreateTime``,
``MsgType``, ``MsgId``, ``Event`` …), whether it arrived as callback XML, a JSON line or a
CSV row. ``parse_record`` is the single gate every record passes through, so the
callback and the bulk import accept and reject exactly the same things.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from msgcube.domain.identifiers import (
    CREATE_TIME_MAX,
    CREATE_TIME_MIN,
    EVENT_MAX,
    MSG_ID_MAX,
    MSG_ID_MIN,
    MSG_TYPE_MAX,
    OPENID_MAX,
    integer_field,
    text_field,
)
from msgcube.errors import IngestError

MSG_TYPE_CODES: dict[str, int] = {
    "text": 1,
    "image": 2,
    "voice": 3,
    "video": 4,
    "shortvideo": 4,
    "link": 6,
}
"""Push ``MsgType`` → the statistics' ``msg_type``. Anything else is stored, not counted."""

COUNTED_TYPES: tuple[int, ...] = (1, 2, 3, 4, 6)
"""The msg_type codes in the order rows are reported (there is no code 5)."""

MSG_TYPE_NAMES_ZH: dict[int, str] = {1: "文字", 2: "图片", 3: "语音", 4: "视频", 6: "链接"}
MSG_TYPE_NAMES_EN: dict[int, str] = {1: "text", 2: "image", 3: "voice", 4: "video", 6: "link"}

COUNT_INTERVALS: tuple[int, ...] = (0, 1, 2, 3)
COUNT_INTERVAL_LABELS: dict[int, str] = {0: "0", 1: "1-5", 2: "6-10", 3: "10次以上"}

FOLLOW_EVENTS: frozenset[str] = frozenset({"subscribe", "unsubscribe"})


def count_interval(messages: int) -> int:
    """The bucket of a user's message count in a period: 0, 1–5, 6–10, more than 10."""
    if messages <= 0:
        return 0
    if messages <= 5:
        return 1
    if messages <= 10:
        return 2
    return 3


class Message(NamedTuple):
    """An ordinary message. ``msg_type`` is ``None`` for types that are not counted.

    A named tuple rather than a dataclass: the bulk import builds millions of them, and a
    tuple is built several times faster than a frozen dataclass (both are immutable).
    """

    msg_id: int
    openid: str
    create_time: int
    msg_type_name: str

    @property
    def msg_type(self) -> int | None:
        return MSG_TYPE_CODES.get(self.msg_type_name)


@dataclass(frozen=True, slots=True)
class Event:
    """An event push (``MsgType=event``). Only subscribe/unsubscribe change statistics."""

    openid: str
    create_time: int
    event: str


Record = Message | Event


def _stripped(value: object, *, lower: bool = False) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value.lower() if lower else value
    return value


def parse_record(fields: Mapping[str, Any]) -> Record:
    """Validate one push (WeChat field names) into a ``Message`` or ``Event``.

    Raises ``IngestError`` with a reason a person can act on.
    """
    openid = text_field(fields.get("FromUserName"), "FromUserName", OPENID_MAX)
    create_time = integer_field(
        fields.get("CreateTime"), "CreateTime", CREATE_TIME_MIN, CREATE_TIME_MAX
    )
    msg_type = text_field(_stripped(fields.get("MsgType"), lower=True), "MsgType", MSG_TYPE_MAX)
    if msg_type == "event":
        event = text_field(_stripped(fields.get("Event")), "Event", EVENT_MAX)
        # WeChat spells events in lower case except a few (SCAN, LOCATION, CLICK, VIEW);
        # follow events are compared in lower case so "Subscribe" is not silently ignored.
        if event.lower() in FOLLOW_EVENTS:
            event = event.lower()
        return Event(openid=openid, create_time=create_time, event=event)
    msg_id = integer_field(fields.get("MsgId"), "MsgId", MSG_ID_MIN, MSG_ID_MAX)
    return Message(msg_id=msg_id, openid=openid, create_time=create_time, msg_type_name=msg_type)


_NEW_MESSAGE = tuple.__new__


def fast_message(fields: Mapping[str, Any], valid_openids: set[str]) -> Message | None:
    """The common case of ``parse_record``, checked in a few type tests; else ``None``.

    A line of a bulk import is nearly always a counted message with exactly typed fields.
    Only such a line is accepted here — with the same result ``parse_record`` gives it —
    and anything unusual (an event, a string number, padding, a bad value) returns
    ``None`` so that ``parse_record`` decides and gives its reason. ``valid_openids``
    remembers openids already checked for control characters (the caller owns it).
    """
    msg_type = fields.get("MsgType")
    create_time = fields.get("CreateTime")
    msg_id = fields.get("MsgId")
    openid = fields.get("FromUserName")
    if (
        type(msg_type) is not str  # first: an unhashable value (a list) is no dict key
        or msg_type not in MSG_TYPE_CODES
        or type(create_time) is not int
        or type(msg_id) is not int
        or not CREATE_TIME_MIN <= create_time <= CREATE_TIME_MAX
        or not MSG_ID_MIN <= msg_id <= MSG_ID_MAX
    ):
        return None
    if type(openid) is not str:
        return None
    if openid not in valid_openids:
        if not openid:
            return None
        try:
            text_field(openid, "FromUserName", OPENID_MAX)
        except IngestError:
            return None
        if len(valid_openids) < 1_000_000:  # bounded: a file of unique senders stays flat
            valid_openids.add(openid)
    return _NEW_MESSAGE(Message, (msg_id, openid, create_time, msg_type))
