"""A per-process cache of what the API's token checks read, exact by generation.

Reading a token, its account and the account's quota override is one join per call, an
authorizer's grant one more statement, and under load those reads are the largest share
of an answer served from the answer cache. So each worker keeps them by token hash,
together with the account's ``auth_gen`` as read with them, and per call reads only that
generation (one primary-key lookup). Database triggers move ``auth_gen`` on any change
to the account row, its tokens, its grants or its quota override (migration 0010),
whoever makes the change and in whatever process, so a revoked token, a narrowed grant,
a new IP whitelist or a new quota takes effect on the very next call in every worker.
Nothing here expires by time: a cached token's expiry and ``valid_until`` are compared
with the clock on every call, exactly as for one just read.

Component tokens (no account row to carry a generation) are never cached.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from sqlalchemy import Connection

from msgcube.storage.platforms import Authorization, get_authorization
from msgcube.storage.tokens import TokenChecks, auth_generation, find_token_checks, hash_token

DEFAULT_SIZE = 4096
K = TypeVar("K")
V = TypeVar("V")


class CallerCache:
    """Token hash → its checks, and (platform, account) → grant, each under an ``auth_gen``.

    Reads are lock-free (single dict operations); inserts take a lock so that evicting
    the oldest entry never races another insert. Bounded to ``size`` entries each.
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._checks: dict[str, TokenChecks] = {}
        self._grants: dict[tuple[int, int], tuple[int, Authorization | None]] = {}
        self._lock = threading.Lock()

    def checks(self, conn: Connection, token: str) -> TokenChecks | None:
        """The token's checks as they stand now (None: no such token)."""
        key = hash_token(token)
        cached = self._checks.get(key)
        if cached is not None and auth_generation(conn, cached.token.account_id) == cached.auth_gen:
            return cached
        found = find_token_checks(conn, key)
        if found is None or found.auth_gen is None:
            self._checks.pop(key, None)
        else:
            self._put(self._checks, key, found)
        return found

    def grant(
        self, conn: Connection, platform_id: int, checks: TokenChecks
    ) -> Authorization | None:
        """The (platform, account) authorization, for ``checks`` just returned by
        ``checks()``: its ``auth_gen`` was read before this, so a grant read now is at
        least that fresh, and one cached under the same generation is still current."""
        if checks.account is None or checks.auth_gen is None:
            return get_authorization(conn, platform_id, checks.token.account_id)
        key = (platform_id, checks.account.id)
        cached = self._grants.get(key)
        if cached is not None and cached[0] == checks.auth_gen:
            return cached[1]
        found = get_authorization(conn, platform_id, checks.account.id)
        self._put(self._grants, key, (checks.auth_gen, found))
        return found

    def _put(self, table: dict[K, V], key: K, value: V) -> None:
        with self._lock:
            table.pop(key, None)
            table[key] = value
            while len(table) > self.size:
                del table[next(iter(table))]
