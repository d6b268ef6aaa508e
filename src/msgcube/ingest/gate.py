"""The push gate: from the parts of a callback request to a verified record, free of HTTP.

The server, ``msgcube quarantine replay`` (and any later consumer of pushes, such as a
relay) all pass a ``RawPush`` through ``open_push`` and get back a ``VerifiedPush`` — the
record plus the request it came from and its plaintext XML — or one of two errors:

* ``BadSignature`` (403, stored nowhere): ``signature`` is wrong or missing, or, in
  compatible/safe mode, ``msg_signature`` over the ``Encrypt`` element is wrong,
  missing or cannot even be checked because the envelope is not XML or has no
  ``Encrypt``. Nothing unauthenticated reaches the quarantine.
* ``IngestError`` (400, quarantined): the request is authenticated but its content
  cannot be stored — AES, XML or record validation failed.

What is authenticated differs by mode. In compatible and safe mode ``msg_signature``
binds the ciphertext, so a quarantined body is one the account's Token holder sealed.
In plaintext mode ``signature`` covers only ``timestamp`` and ``nonce``: a captured query
string can be replayed with any body. ``signed_by`` names the signature that covers the
request, and the quarantine keeps at most one entry per signature, so each captured
query string can add one entry, not an unbounded flood (plus the per-account caps).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from msgcube.domain.messages import Record, parse_record
from msgcube.errors import BadSignature, IngestError
from msgcube.storage.accounts import Account
from msgcube.storage.quarantine import NewEntry
from msgcube.wechat import (
    AESKey,
    DecryptError,
    XmlError,
    check_signature,
    decrypt_with_rotation,
    parse_envelope,
    parse_push_xml,
)


def parse_query(query_string: str) -> dict[str, str]:
    """The query parameters, last occurrence winning, blanks kept.

    The server and the quarantine replay both read the stored raw query string through
    this one function, so they can never disagree about which ``nonce`` was signed. It
    reads exactly what ``parse_qsl(keep_blank_values=True)`` reads (and Starlette's
    ``query_params``); without ``%`` or ``+`` nothing needs unquoting, and a plain split
    does the same at a fraction of the cost (every push and API call comes here).
    """
    if "%" in query_string or "+" in query_string:
        return dict(parse_qsl(query_string, keep_blank_values=True))
    pairs: dict[str, str] = {}
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs[name] = value
    return pairs


@dataclass(frozen=True, slots=True)
class RawPush:
    """A callback request as it arrived: what the quarantine keeps, byte for byte."""

    appid: str
    query_string: str
    body: bytes = field(repr=False)
    query: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", parse_query(self.query_string))

    def with_body(self, body: bytes) -> RawPush:
        """This request with its body read (the query, already parsed, is kept)."""
        copy = object.__new__(RawPush)
        for name, value in (
            ("appid", self.appid),
            ("query_string", self.query_string),
            ("body", body),
            ("query", self.query),
        ):
            object.__setattr__(copy, name, value)
        return copy

    @property
    def encrypted(self) -> bool:
        return _encrypt_type(self.query) == "aes"

    @property
    def signed_by(self) -> str:
        """The signature that authenticates this request's content as far as anything does:
        ``msg_signature`` in compatible/safe mode, else ``signature``."""
        return self.query.get("msg_signature" if self.encrypted else "signature", "")

    def quarantined(self, reason: str, now: int, component_appid: str = "") -> NewEntry:
        """What to keep of this request, received at ``now`` (on ``component_appid``'s
        message URL, if a platform's), when it cannot be stored."""
        return NewEntry(
            appid=self.appid,
            received_at=now,
            reason=reason,
            query=self.query_string,
            body=self.body,
            signed_by=self.signed_by,
            component_appid=component_appid,
        )


@dataclass(frozen=True, slots=True)
class VerifiedPush:
    """A push that passed the gate: its record, the request, and the plaintext XML."""

    record: Record
    raw: RawPush
    xml: bytes = field(repr=False)


def check_request_signature(account: Account, query: Mapping[str, str]) -> None:
    """The ``signature`` check every callback request (GET or POST) must pass.

    An account without a callback Token refuses everything: with an empty Token anyone
    could compute the signature of any timestamp and nonce.
    """
    token = account.callback_token
    if not token:
        raise BadSignature("the account has no callback token")
    if not check_signature(
        query.get("signature", ""), token, query.get("timestamp", ""), query.get("nonce", "")
    ):
        raise BadSignature("bad signature")


def open_push(account: Account, raw: RawPush) -> VerifiedPush:
    """Verify and decode one POSTed push (both signatures, then the content)."""
    check_request_signature(account, raw.query)
    return open_body(account, raw)


def open_body(account: Account, raw: RawPush) -> VerifiedPush:
    """The part of ``open_push`` after the ``signature`` check (the server reads the body
    only once that check has passed)."""
    fields, xml = open_fields(account, raw)
    try:
        record = parse_record(fields)
    except IngestError as exc:
        raise IngestError(f"record: {exc.reason}") from None
    return VerifiedPush(record=record, raw=raw, xml=xml)


def open_fields(account: Account, raw: RawPush) -> tuple[dict[str, str], bytes]:
    """``open_body`` up to the push's XML fields and plaintext, before they are read as a
    record (a platform's URL also receives WeChat's own notices, which are no record)."""
    encrypt_type = _encrypt_type(raw.query)
    if encrypt_type == "raw":
        xml = raw.body
    elif encrypt_type == "aes":
        xml = _decrypt(account, raw.query, raw.body)
    else:
        raise IngestError(f"unknown encrypt_type {encrypt_type[:32]!r}")
    try:
        return parse_push_xml(xml), xml
    except XmlError as exc:
        raise IngestError(f"xml: {exc}") from None


def _encrypt_type(query: Mapping[str, str]) -> str:
    return (query.get("encrypt_type") or "raw").strip().lower()


def _decrypt(account: Account, query: Mapping[str, str], body: bytes) -> bytes:
    expected = query.get("msg_signature")
    if not expected:
        raise BadSignature("encrypt_type=aes without msg_signature")
    try:
        _, encrypted = parse_envelope(body)
    except XmlError as exc:
        # msg_signature covers the Encrypt text: without it nothing about this body is
        # authenticated, so it is refused, not quarantined.
        raise BadSignature(f"msg_signature cannot be checked: envelope {exc.reason}") from None
    if not encrypted:
        raise BadSignature("msg_signature cannot be checked: the envelope has no Encrypt")
    token = account.callback_token
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not token or not check_signature(expected, token, timestamp, nonce, encrypted):
        raise BadSignature("bad msg_signature")
    keys = aes_keys(account)
    try:
        xml, _index = decrypt_with_rotation(keys, encrypted, account.appid)
    except DecryptError as exc:
        raise IngestError(f"decrypt: {exc}") from None
    return xml


def aes_keys(account: Account) -> list[AESKey]:
    """The account's EncodingAESKeys, current first; ``IngestError`` when none is usable."""
    texts = [k for k in (account.aes_key, account.prev_aes_key) if k]
    if not texts:
        raise IngestError("decrypt: the account has no EncodingAESKey (msgcube account set)")
    keys: list[AESKey] = []
    for text in texts:
        try:
            keys.append(_aes_key(text))
        except ValueError as exc:
            raise IngestError(f"decrypt: the account's EncodingAESKey is invalid ({exc})") from None
    return keys


@functools.lru_cache(maxsize=256)
def _aes_key(text: str) -> AESKey:
    return AESKey(text)
