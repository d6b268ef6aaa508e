"""Checking AppSecrets without handing anyone the server's CPU.

A stored AppSecret is slow to check on purpose (``storage/secret_hashes.py``), and
``/cgi-bin/token`` checks it before anyone is authenticated. So, per process:

- the check runs on a worker thread (scrypt releases the GIL), never on the event loop;
- at most ``SLOTS`` run at once, and with ``QUEUE`` more waiting a request is answered
  -1 (system busy) at once: a flood of guesses costs at most ``SLOTS`` cores;
- a secret that matched is remembered (as an HMAC under a key that lives only in this
  process's memory, never the secret) until the stored value changes, so a caller that
  asks for tokens with the right secret pays the slow check once per process.

A row written before the slow scheme is rewritten by the first check that matches it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict

import anyio
from sqlalchemy import Table, update

from msgcube.errors import ApiError
from msgcube.storage.accounts import SECRET_KEY_NAME, Account
from msgcube.storage.db import Store
from msgcube.storage.schema import accounts
from msgcube.storage.secret_hashes import check_secret, new_secret_hash
from msgcube.storage.server_secrets import server_secret


class SecretChecks:
    """The AppSecret checks of one process (``AppContext.secrets``)."""

    SLOTS = 2
    QUEUE = 64
    REMEMBERED = 4096

    def __init__(self) -> None:
        self._limiter: anyio.CapacityLimiter | None = None
        self._waiting = 0
        self._memory_key = os.urandom(32)
        self._matched: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._key: str | None = None

    async def matches(
        self, store: Store, table: Table, row_id: int | None, stored: str | None, secret: str
    ) -> bool:
        """Whether ``secret`` is the AppSecret stored as ``stored`` in row ``row_id`` of
        ``table`` (``None``: no such row; it is checked all the same, so that the answer's
        timing does not tell). An empty secret never matches."""
        mark = hmac.new(
            self._memory_key, f"{stored}\0{secret}".encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()
        if stored is not None and self._remembered(mark):
            return True
        if self._waiting >= self.QUEUE:
            raise ApiError(-1, "too many AppSecret checks at once")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.SLOTS)
        self._waiting += 1
        try:
            matched = await anyio.to_thread.run_sync(
                self._check, store, table, row_id, stored, secret, limiter=self._limiter
            )
        finally:
            self._waiting -= 1
        if matched:
            with self._lock:
                self._matched[mark] = None
                while len(self._matched) > self.REMEMBERED:
                    self._matched.popitem(last=False)
        return matched and secret != ""

    async def account_matches(self, store: Store, account: Account | None, secret: str) -> bool:
        """``matches`` for an account's AppSecret (``None``: an unknown appid, checked the
        same way)."""
        if account is None:
            return await self.matches(store, accounts, None, None, secret)
        return await self.matches(store, accounts, account.id, account.secret_hash, secret)

    def _remembered(self, mark: bytes) -> bool:
        with self._lock:
            if mark in self._matched:
                self._matched.move_to_end(mark)
                return True
            return False

    def _check(
        self, store: Store, table: Table, row_id: int | None, stored: str | None, secret: str
    ) -> bool:
        """On a worker thread: the slow check, and the rewrite of an outdated row."""
        key = self.key(store)
        result = check_secret(stored, key, secret)
        if result.matches and result.outdated and row_id is not None:
            fresh = new_secret_hash(key, secret)
            with store.write() as conn:  # unless someone set a new secret meanwhile
                conn.execute(
                    update(table)
                    .where(table.c.id == row_id, table.c.secret_hash == stored)
                    .values(secret_hash=fresh)
                )
        return result.matches

    def key(self, store: Store) -> str:
        """The deployment's ``app_secret_key`` (read once: it never changes)."""
        if self._key is None:
            with store.write() as conn:
                self._key = server_secret(conn, SECRET_KEY_NAME)
        return self._key
