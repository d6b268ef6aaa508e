"""How an AppSecret is stored (an account's, and a platform's component_appsecret).

``s1$<salt>$<hash>``: scrypt (N = 2^14, r = 8, p = 1: 16 MiB and some 30–60 ms of one
core) of ``HMAC-SHA256(key, SHA-256(secret))``, keyed with the deployment's
``app_secret_key``. The key means a copy of the table alone cannot be checked against
guesses; scrypt means that whoever also holds the key pays 16 MiB and tens of
milliseconds per guess, however the secret was chosen (``account add --secret`` takes
the one WeChat gave the account, or any other).

Rows written before this scheme hold the keyed hash alone (64 hex digits). They still
verify, fast, and are rewritten in this form by the first check that succeeds
(``Check.outdated``). Any other value (an account created by a platform's push, which
has no AppSecret of its own) never matches. The slow work runs off the event loop and
under a bound (``auth/secret_checks.py``); every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "s1"
NO_SECRET = "none"  # noqa: S105 - stored for an account without an AppSecret: matches none
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 12
_HASH_BYTES = 30  # with the salt, 59 characters: the column holds 64


def keyed_secret_hash(key: str, secret: str) -> str:
    """``HMAC-SHA256(key, SHA-256(secret))`` in hex: what scrypt is given, and what rows
    written before ``s1`` hold."""
    inner = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return hmac.new(key.encode(), inner.encode(), hashlib.sha256).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(keyed: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        keyed.encode("ascii"), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20, dklen=_HASH_BYTES
    )


def new_secret_hash(key: str, secret: str) -> str:
    """The value to store for ``secret``, with a new random salt."""
    salt = os.urandom(_SALT_BYTES)
    return f"{SCHEME}${_b64(salt)}${_b64(_scrypt(keyed_secret_hash(key, secret), salt))}"


@dataclass(frozen=True, slots=True)
class Check:
    """The result of checking a secret against a stored value."""

    matches: bool
    outdated: bool = False  # it matched a row written before ``s1``: store it anew


# An unknown appid is checked against this, so that its answer takes as long as a wrong
# secret's: the answer's timing does not tell which appids exist.
_DECOY = f"{SCHEME}${_b64(bytes(_SALT_BYTES))}${_b64(bytes(_HASH_BYTES))}"


def check_secret(stored: str | None, key: str, secret: str) -> Check:
    """Whether ``secret`` is the one ``stored`` was made from (``None``: no such account,
    checked all the same). Slow: call it from a worker thread."""
    keyed = keyed_secret_hash(key, secret)
    value = _DECOY if stored is None else stored
    scheme, _, rest = value.partition("$")
    if scheme == SCHEME:
        salt, _, expected = rest.partition("$")
        try:
            got = _b64(_scrypt(keyed, _unb64(salt)))
        except ValueError:  # a damaged row: no match, never a crash
            return Check(False)
        return Check(hmac.compare_digest(got, expected) and stored is not None)
    if len(value) == 64 and hmac.compare_digest(value, keyed):
        return Check(True, outdated=True)
    return Check(False)
