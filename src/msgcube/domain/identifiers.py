"""What an identifier or a number from outside may look like: one rule set for every edge.

The callback, the token endpoints, the admin API and the bulk import all receive appids,
openids and numbers from strangers. Each is checked here, once, before it reaches the
database, so an input PostgreSQL cannot store (a NUL byte, a value longer than its
column) is refused with the same answer on SQLite and PostgreSQL instead of failing
inside a transaction on one of them. The lengths are the schema's column lengths; a test
holds them equal.

Numbers are ASCII digits only: ``str.isdigit`` also accepts ``"²"`` and Arabic-Indic
digits, and ``int()`` of 5,000 digits raises, so neither is used on raw input.
"""

from __future__ import annotations

import re

from msgcube.errors import IngestError

APPID_MAX = 64
"""``accounts.appid`` (also component appids); WeChat's own are 18 characters (``wx`` + 16 hex)."""
CALLBACK_TOKEN_MAX = 64
"""``accounts.callback_token``; WeChat asks for 3–32 letters and digits."""
ORIGINAL_ID_MAX = 64
"""``accounts.original_id``; WeChat's are ``gh_`` + 12 hex."""
OPENID_MAX = 128
"""``senders.openid``, ``events.openid``, ``followers.openid``; WeChat's are 28 characters."""
MSG_TYPE_MAX = 32
"""``messages.msg_type_name``."""
EVENT_MAX = 64
"""``events.event``."""

MSG_ID_MIN, MSG_ID_MAX = 0, 2**64 - 1
"""WeChat's MsgId is an unsigned 64-bit integer (storage maps it onto a signed BIGINT)."""

COUNT_MAX = 2**31 - 1
"""The largest daily quota an account or a setting may give, and of any count setting:
``account_quotas.daily_limit`` is PostgreSQL's INTEGER, so a larger value could be
stored on SQLite and not on PostgreSQL."""

CREATE_TIME_MIN = 946_684_800
"""2000-01-01T00:00:00Z: older than WeChat itself (2011), so no real push is refused,
while a mistyped or millisecond-free ``CreateTime`` such as ``1`` or ``2009`` is."""
CREATE_TIME_MAX = 2**32 - 1
"""2106-02-07T06:28:15Z: the end of the unsigned 32-bit seconds WeChat's field carries.
A millisecond timestamp (13 digits) is therefore refused rather than read as year 58000."""

_MAX_DIGITS = 20  # len(str(2**64 - 1)); longer text is refused before it is converted

# Identifiers: visible ASCII letters, digits, ``_`` and ``-`` — what WeChat issues.
_ID = re.compile(r"[A-Za-z0-9_-]+")
# Free text from a push (openid, MsgType, Event): anything but control characters
# (C0, DEL, C1: NUL cannot be stored by PostgreSQL, the others only forge log lines)
# and lone surrogates (not encodable as UTF-8).
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_appid(value: object) -> bool:
    """Whether ``value`` can be an appid at all (not whether such an account exists)."""
    return isinstance(value, str) and len(value) <= APPID_MAX and _ID.fullmatch(value) is not None


def appid_problem(value: object, name: str = "appid") -> str | None:
    """Why ``value`` cannot be an appid, or ``None`` when it can."""
    return _id_problem(value, name, APPID_MAX, allow_empty=False)


def original_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be an account's original id (``gh_…``; empty means unset)."""
    return _id_problem(value, "original_id", ORIGINAL_ID_MAX, allow_empty=True)


def token_problem(value: object, name: str = "callback token") -> str | None:
    """Why ``value`` cannot be a callback Token (empty means unset: every push refused)."""
    return _id_problem(value, name, CALLBACK_TOKEN_MAX, allow_empty=True)


def secret_problem(value: object, name: str = "secret") -> str | None:
    """Why ``value`` cannot be an account's AppSecret, or ``None`` when it can.

    An empty secret is refused: ``/cgi-bin/token`` reads an empty one as missing (41004),
    but a stored hash of ``""`` would let anyone sign in to the dashboard with the appid
    alone. Anything else is allowed, as it is only ever stored hashed.
    """
    if not isinstance(value, str):
        return f"{name} must be a string"
    return None if value else f"{name} must not be empty"


def _id_problem(value: object, name: str, limit: int, *, allow_empty: bool) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string"
    if not value:
        return None if allow_empty else f"{name} is missing"
    if len(value) > limit:
        return f"{name} is longer than {limit} characters"
    if not _ID.fullmatch(value):
        return f"{name} may only contain A-Z, a-z, 0-9, '_' and '-'"
    return None


def text_field(value: object, name: str, limit: int) -> str:
    """A required text field of a record (``FromUserName``, ``MsgType``, ``Event``).

    ``IngestError`` when missing, not a string, longer than ``limit`` characters (its
    column) or carrying a control character.
    """
    if value is None or value == "":
        raise IngestError(f"{name} is missing")
    if not isinstance(value, str):
        raise IngestError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise IngestError(f"{name} is longer than {limit} characters")
    bad = _NOT_TEXT.search(value)
    if bad:
        raise IngestError(f"{name} contains the control character U+{ord(bad.group()):04X}")
    return value


def integer_field(value: object, name: str, low: int, high: int) -> int:
    """A required integer field of a record: a JSON/CSV/XML number in ``low..high``.

    Accepts an ``int`` (not a ``bool``) or a string of ASCII digits with optional
    surrounding whitespace; anything else is an ``IngestError`` naming the field.
    """
    if value is None or value == "":
        raise IngestError(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise IngestError(f"{name} must be an integer, not {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        if not (text.isascii() and text.isdigit()):
            raise IngestError(f"{name} must be an integer, got {value[:40]!r}")
        if len(text.lstrip("0")) > _MAX_DIGITS:
            raise IngestError(f"{name} is out of range ({len(text)} digits)")
        value = int(text)
    if not low <= value <= high:
        shown = str(value) if value.bit_length() < 128 else "a very large number"
        raise IngestError(f"{name} {shown} is out of range {low}..{high}")
    return value
