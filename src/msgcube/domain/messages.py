"""What a user sent: messages and events as value types, msg_type codes, count buckets.

A *record* is one push in WeChat's field names (``FromUserName``, ``CreateTime``,
``MsgType``, ``MsgId``, ``Event`` …), whether it arrived as callback XML, a JSON line or a
CSV row. ``parse_record`` is the single gate every record passes through, so the
callback and the bulk import accept and reject exactly the same things.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

_MAX_OPENID = 128
_MAX_MSGID = 2**63 - 1
_MAX_CREATE_TIME = 2**32  # year 2106; WeChat's CreateTime is a 32-bit-era Unix time


def count_interval(messages: int) -> int:
    """The bucket of a user's message count in a period: 0, 1–5, 6–10, more than 10."""
    if messages <= 0:
        return 0
    if messages <= 5:
        return 1
    if messages <= 10:
        return 2
    return 3


@dataclass(frozen=True, slots=True)
class Message:
    """An ordinary message. ``msg_type`` is ``None`` for types that are not counted."""

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


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if type(value) is str and value:
        return value
    if value is None or value == "":
        raise IngestError(f"{name} is missing")
    if not isinstance(value, str):
        raise IngestError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _integer(fields: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = fields.get(name)
    if type(value) is int and low <= value <= high:
        return value
    if value is None or value == "":
        raise IngestError(f"{name} is missing")
    if isinstance(value, bool):
        raise IngestError(f"{name} must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise IngestError(f"{name} must be an integer, got {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise IngestError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise IngestError(f"{name} {value} is out of range")
    return value


def parse_record(fields: Mapping[str, Any]) -> Record:
    """Validate one push (WeChat field names) into a ``Message`` or ``Event``.

    Raises ``IngestError`` with a reason a person can act on.
    """
    openid = _text(fields, "FromUserName")
    if len(openid) > _MAX_OPENID:
        raise IngestError(f"FromUserName is longer than {_MAX_OPENID} characters")
    create_time = _integer(fields, "CreateTime", 1, _MAX_CREATE_TIME)
    msg_type = _text(fields, "MsgType").strip().lower()
    if msg_type == "event":
        event = _text(fields, "Event").strip()
        # WeChat spells events in lower case except a few (SCAN, LOCATION, CLICK, VIEW);
        # follow events are compared in lower case so "Subscribe" is not silently ignored.
        if event.lower() in FOLLOW_EVENTS:
            event = event.lower()
        return Event(openid=openid, create_time=create_time, event=event[:64])
    msg_id = _integer(fields, "MsgId", 0, _MAX_MSGID)
    return Message(
        msg_id=msg_id, openid=openid, create_time=create_time, msg_type_name=msg_type[:32]
    )
