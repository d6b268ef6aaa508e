"""The AES envelope of safe/compatible mode (消息加解密, wechat-notes §5).

``Encrypt = base64(AES-256-CBC(random16 + len(xml) as 4 bytes big-endian + xml + appid))``
with key ``base64(EncodingAESKey + "=")``, IV = the key's first 16 bytes and PKCS#7
padding to 32-byte blocks. A fixed IV is a weakness of the protocol, not a choice made
here; the 16 random leading bytes are what keeps equal messages from encrypting equally.

Decryption failures raise ``DecryptError`` with one of four reasons so a quarantined body
says what went wrong. Every reason is reported only after the ``msg_signature`` check has
passed, so the distinction gives nothing to someone without the Token.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from msgcube.errors import IngestError
from msgcube.wechat.signature import msg_signature
from msgcube.wechat.xml import cdata

_BLOCK = 32  # WeChat pads to 32 bytes, not to AES's 16-byte block
_RANDOM_LEN = 16
_LENGTH_LEN = 4
_ENCODING_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
_BASE64_WHITESPACE = re.compile(r"[ \t\r\n]")

DecryptReason = Literal["bad base64", "bad length", "bad padding", "appid mismatch"]


class DecryptError(IngestError, ValueError):
    """An ``Encrypt`` payload that cannot be opened with the given key and appid.

    ``reason`` is one of ``DecryptReason``; ``str(error)`` adds the detail. A wrong key
    normally shows up as ``"bad padding"`` or ``"bad length"``: CBC decrypts anything, and
    garbage rarely ends in valid padding.
    """

    def __init__(self, reason: DecryptReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DecryptReason = reason
        self.detail = detail


@dataclass(frozen=True, repr=False)
class AESKey:
    """An account's EncodingAESKey, checked once and decoded to the 32-byte AES key.

    Its repr never shows the key, so keys can sit in settings objects that get logged.
    Equality compares the decoded key: the last of the 43 characters carries two bits
    that base64 drops, so two spellings can be the same key.
    """

    encoding_aes_key: str = field(compare=False)
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        value = self.encoding_aes_key
        if not isinstance(value, str):
            raise TypeError(f"EncodingAESKey must be str, got {type(value).__name__}")
        if len(value) != 43:
            raise ValueError(f"EncodingAESKey must be 43 characters long, got {len(value)}")
        if not _ENCODING_AES_KEY.fullmatch(value):
            raise ValueError("EncodingAESKey may only contain the characters A-Z, a-z and 0-9")
        object.__setattr__(self, "key", base64.b64decode(value + "="))

    def __repr__(self) -> str:
        return "AESKey(<redacted>)"


def encrypt(key: AESKey, plaintext_xml: bytes, appid: str, random16: bytes | None = None) -> str:
    """The base64 ``Encrypt`` text for ``plaintext_xml``.

    ``random16`` exists so tests can produce fixed output; leave it ``None`` otherwise.
    """
    if random16 is None:
        random16 = os.urandom(_RANDOM_LEN)
    if len(random16) != _RANDOM_LEN:
        raise ValueError(f"random16 must be 16 bytes, got {len(random16)}")
    if len(plaintext_xml) >= 2**32:
        raise ValueError("plaintext_xml is too long for the 4-byte length field")
    data = (
        random16
        + len(plaintext_xml).to_bytes(_LENGTH_LEN, "big")
        + plaintext_xml
        + appid.encode("utf-8")
    )
    pad = _BLOCK - len(data) % _BLOCK  # 1..32: a whole block when already aligned
    encryptor = _cipher(key).encryptor()
    ciphertext = encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(ciphertext).decode("ascii")


def decrypt(key: AESKey, encrypted_b64: str, appid: str) -> bytes:
    """The XML inside an ``Encrypt`` payload, after checking that it was sealed for ``appid``."""
    return _open(key, _ciphertext(encrypted_b64), appid)


def decrypt_with_rotation(
    keys: Sequence[AESKey], encrypted_b64: str, appid: str
) -> tuple[bytes, int]:
    """Decrypt with the first key that works: ``(xml, index of that key)``.

    ``keys`` is current first, then previous ones (the contract keeps the previous
    EncodingAESKey during a rotation); the caller should encrypt its reply with the key
    that worked. If none works the error is an ``"appid mismatch"`` from any key if there
    is one (that key did decrypt, so it is the informative failure), else the current
    key's error. Malformed base64 or length fails at once: no key can fix those.
    """
    if not keys:
        raise ValueError("decrypt_with_rotation needs at least one key")
    ciphertext = _ciphertext(encrypted_b64)
    errors: list[DecryptError] = []
    for index, key in enumerate(keys):
        try:
            return _open(key, ciphertext, appid), index
        except DecryptError as exc:
            errors.append(exc)
    mismatches = [e for e in errors if e.reason == "appid mismatch"]
    raise (mismatches or errors)[0]


def reply_envelope(
    key: AESKey, token: str, xml: bytes, appid: str, timestamp: str | int, nonce: str
) -> str:
    """The encrypted, signed reply body that safe mode requires for a passive reply."""
    timestamp = str(timestamp)
    if not timestamp.isascii() or not timestamp.isdigit():
        raise ValueError(f"timestamp must be decimal digits, got {timestamp!r}")
    encrypted = encrypt(key, xml, appid)
    signed = msg_signature(token, timestamp, nonce, encrypted)
    return (
        f"<xml><Encrypt>{cdata(encrypted)}</Encrypt>"
        f"<MsgSignature>{cdata(signed)}</MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp>"
        f"<Nonce>{cdata(nonce)}</Nonce></xml>"
    )


def _cipher(key: AESKey) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key.key), modes.CBC(key.key[:16]))


def _ciphertext(encrypted_b64: str) -> bytes:
    """Base64-decode strictly, forgiving only whitespace (some encoders wrap lines)."""
    try:
        ciphertext = base64.b64decode(_BASE64_WHITESPACE.sub("", encrypted_b64), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("bad base64", str(exc)) from None
    if not ciphertext or len(ciphertext) % 16:
        raise DecryptError(
            "bad length", f"{len(ciphertext)} bytes is not a whole number of AES blocks"
        )
    return ciphertext


def _open(key: AESKey, ciphertext: bytes, appid: str) -> bytes:
    decryptor = _cipher(key).decryptor()
    data = decryptor.update(ciphertext) + decryptor.finalize()
    # Padding is checked by hand because the cryptography unpadder would insist on whole
    # 32-byte blocks; any AES-aligned ciphertext with valid 1..32 padding is accepted.
    pad = data[-1]
    if not 1 <= pad <= _BLOCK or pad > len(data) or data[-pad:] != bytes([pad]) * pad:
        raise DecryptError("bad padding", "the plaintext does not end in PKCS#7 padding")
    data = data[:-pad]
    header = _RANDOM_LEN + _LENGTH_LEN
    if len(data) < header:
        raise DecryptError("bad length", f"{len(data)} bytes is too short for the header")
    xml_len = int.from_bytes(data[_RANDOM_LEN:header], "big")
    if header + xml_len > len(data):
        raise DecryptError(
            "bad length", f"declared XML length {xml_len} exceeds the {len(data)}-byte payload"
        )
    found = data[header + xml_len :]
    if found != appid.encode("utf-8"):
        raise DecryptError("appid mismatch", f"expected {appid!r}, found {found[:64]!r}")
    return data[header : header + xml_len]
