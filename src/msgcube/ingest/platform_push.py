"""A third-party platform's push, opened: the account callback's gate fed the platform's
Token, keys and component appid. The platform's message URL (web/platform_callback.py)
and quarantine replay both open a platform's pushes through here.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgcube.domain.messages import Record, parse_record
from msgcube.errors import IngestError, PushRefused
from msgcube.ingest.gate import RawPush, open_fields
from msgcube.storage.accounts import Account
from msgcube.storage.platforms import Platform
from msgcube.wechat import parse_push_xml

ENVELOPE_FIELDS = frozenset({"ToUserName", "AppId", "Encrypt"})
"""The only fields of a safe-mode body; anything else is compatible mode."""


def platform_gate(platform: Platform) -> Account:
    """The platform as the gate sees an account: the Token that signs, the keys that
    open, and the appid every envelope must end with (the component appid)."""
    return Account(
        id=0,
        appid=platform.component_appid,
        original_id="",
        tz="UTC",
        verified=False,
        follower_base=False,
        stats_since=None,
        callback_token=platform.push_token,
        aes_key=platform.aes_key,
        prev_aes_key=platform.prev_aes_key,
    )


def open_platform_fields(platform: Platform, raw: RawPush) -> dict[str, str]:
    """The push's XML fields, opened with the platform's keys (``msg_signature``,
    decryption and the component appid checked): ``IngestError`` when it does not open."""
    return open_fields(platform_gate(platform), raw)[0]


@dataclass(frozen=True, slots=True)
class PlatformPush:
    """An opened push: the authorized account's original id and its record, or no
    record for WeChat's own notice to the platform (nothing to count)."""

    to_user: str
    record: Record | None


def read_platform_push(platform: Platform, fields: dict[str, str], body: bytes) -> PlatformPush:
    """What an opened push holds. ``PushRefused`` for compatible mode (WeChat never sends
    it to a platform), ``IngestError`` for a record that cannot be stored."""
    if not set(parse_push_xml(body)) <= ENVELOPE_FIELDS:
        raise PushRefused("compatible mode is not accepted on a platform URL")
    to_user = fields.get("ToUserName", "")
    if not to_user and fields.get("AppId") == platform.component_appid:
        return PlatformPush(to_user, None)
    try:
        return PlatformPush(to_user, parse_record(fields))
    except IngestError as exc:
        raise IngestError(f"record: {exc.reason}") from None
