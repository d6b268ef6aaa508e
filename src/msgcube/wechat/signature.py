"""The SHA-1 signatures WeChat puts on every callback request.

Both signatures hash the *lexicographically sorted* parts joined without a separator
(wechat-notes §4.1, §5): ``signature`` covers ``[token, timestamp, nonce]`` and proves the
request came from someone who knows the account's Token; ``msg_signature`` adds the
``Encrypt`` payload so the ciphertext cannot be swapped. SHA-1 is weak, but it is what the
protocol fixes; we only choose how to *compare* (in constant time).
"""

from __future__ import annotations

import hashlib
import hmac


def _sha1_of_sorted(*parts: str) -> str:
    # Python sorts str by code point, which for UTF-8 is the same order as PHP's byte-wise
    # SORT_STRING used by WeChat's sample code.
    joined = "".join(sorted(parts)).encode("utf-8")
    return hashlib.sha1(joined).hexdigest()  # noqa: S324 -- SHA-1 is mandated by the protocol


def signature(token: str, timestamp: str, nonce: str) -> str:
    """The ``signature`` query parameter of the GET handshake and of every POST push."""
    return _sha1_of_sorted(token, timestamp, nonce)


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The ``msg_signature`` of an encrypted push or reply (``encrypt`` is the base64 text)."""
    return _sha1_of_sorted(token, timestamp, nonce, encrypt)


def check_signature(
    expected: str,
    token: str,
    timestamp: str,
    nonce: str,
    encrypt: str | None = None,
) -> bool:
    """Whether ``expected`` (from the query string) is the right signature.

    With ``encrypt`` it checks a ``msg_signature``, without it a plain ``signature``. The
    comparison is constant-time so response timing does not leak how many leading hex
    digits of a forged signature were right. ``expected`` is attacker-controlled and may be
    any text, so both sides are compared as UTF-8 bytes (``compare_digest`` refuses
    non-ASCII ``str``).
    """
    if encrypt is None:
        actual = signature(token, timestamp, nonce)
    else:
        actual = msg_signature(token, timestamp, nonce, encrypt)
    return hmac.compare_digest(expected.encode("utf-8"), actual.encode("ascii"))
