"""Daily call quotas per account and API (contract: Quotas), counted without a write per call.

A datacube call must not pay for a write transaction: on SQLite that would serialise
every reader behind the one writer, on PostgreSQL it would add a commit (an fsync) to
each answer. So each process counts in memory and a flusher adds the increments to
``quota_usage`` about once a second (and at shutdown) with one upsert per batch
(``used = used + delta``), which is commutative, so any number of workers can flush
into the same rows.

The check ("may this call go ahead?") uses

    used = (the counter's value in the database, read at most once per ``cache_seconds``
            and bumped by what this process itself flushed since)
         + (this process's calls not flushed yet)

The limit itself (the setting, or the account's own ``--daily-quota``) is not cached
here: each call passes the one read with its token, which is exact on every call
(``auth/caller_cache``), so a new limit holds from the next call in every worker.

Over-admission window: another worker's calls reach this worker's view only once that
worker has flushed them (≤ 1 s) *and* this worker has re-read the row (≤ 1 s), so with
N workers at most the calls the other N−1 admit in about two seconds can pass beyond
the limit. That is the price of not writing per call; a daily quota of thousands is
not meaningfully changed by it. A single process is exact. A worker killed without a
graceful shutdown loses its last second of counts (they were admitted, never written).

Reads of the database happen under the flush lock, in their own transaction, so a
read never lands between a flush's commit and the bookkeeping that moves the flushed
amount from "pending" to "seen" (which would count it twice or not at all).

``clear_quota`` (10 per account per calendar month, then 48006) resets the account's
counters of the current local day for every API, ``/cgi-bin/token`` included, as
WeChat's does, and moves the account's ``auth_gen``. Each view remembers the generation
it was read under (the caller passes the one it read with its token), so every worker
re-reads the cleared counters on its very next call instead of refusing 45009 from a
stale view; calls other workers admitted just before the clear and had not flushed yet
land after it and count against the fresh day (the same ≈ 2 s window as above).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.errors import ApiError
from msgcube.storage.db import Store
from msgcube.storage.usage import (
    add_usage_deltas,
    clear_usage,
    count_clears_since,
    lock_account,
    record_clear,
    usage_of,
)

DATACUBE_APIS: tuple[str, ...] = tuple(ep.path for ep in ENDPOINTS)
"""The APIs whose calls the counter admits (``/datacube/getupstreammsg`` …)."""
CLEARS_PER_MONTH = 10
FLUSH_EVERY = 1.0
"""Seconds between flushes of the in-memory counts (the lifespan task's interval)."""
_FORGET_AFTER = 600.0

QuotaKey = tuple[int, str, date]


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    daily_limit: int
    used: int

    @property
    def remain(self) -> int:
        return max(0, self.daily_limit - self.used)

    def body(self) -> dict[str, int]:
        return {"daily_limit": self.daily_limit, "used": self.used, "remain": self.remain}


class QuotaCounter:
    """One process's view of the datacube quotas (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()  # guards the dicts; held for microseconds
        self._flush_lock = threading.Lock()  # orders database reads, flushes and clears
        self._pending: dict[QuotaKey, int] = {}
        self._seen: dict[QuotaKey, tuple[float, int, int | None]] = {}
        """key → (monotonic time read, used in the database then, the account's auth_gen)"""

    # -- the hot path -------------------------------------------------------------------

    def admit(
        self, account_id: int, api: str, day: date, limit: int, gen: int | None = None
    ) -> int:
        """Count one call, or raise 45009 when the day's calls are used up; returns ``used``.

        ``limit`` is the account's daily limit as the caller read it with its token (its
        own override or the setting; exact on every call, see ``auth/caller_cache``), and
        ``gen`` the account's ``auth_gen`` read with it: a view read under another
        generation (a ``clear_quota`` since, in any worker) is read again first.
        """
        key = (account_id, api, day)
        self._ensure(key, gen)
        with self._lock:
            pending = self._pending.get(key, 0)
            used = self._seen.get(key, (0.0, 0, None))[1] + pending
            if used >= limit:
                raise ApiError(45009, f"{api}: {limit} calls a day")
            self._pending[key] = pending + 1
        return used + 1

    def status(
        self, account_id: int, api: str, day: date, limit: int, gen: int | None = None
    ) -> QuotaStatus:
        """What ``/cgi-bin/openapi/quota/get`` reports for this account and API today."""
        key = (account_id, api, day)
        self._ensure(key, gen)
        with self._lock:
            used = self._seen.get(key, (0.0, 0, None))[1] + self._pending.get(key, 0)
            return QuotaStatus(limit, used)

    def _ensure(self, key: QuotaKey, gen: int | None) -> None:
        """Re-read the database value when it is older than ``cache_seconds``.

        Without any value yet, or with one read under another ``auth_gen`` than ``gen``
        (None: not known), the read waits for a running flush; with a merely stale one it
        is skipped while a flush runs (the next call re-reads), so a call never waits on it.
        """
        with self._lock:
            seen = self._seen.get(key)
        if seen is None or (gen is not None and seen[2] != gen):
            self._refresh(key, block=True, gen=gen)
        elif self._clock() - seen[0] >= self.cache_seconds:
            self._refresh(key, block=False, gen=seen[2])

    def _refresh(self, key: QuotaKey, *, block: bool, gen: int | None) -> None:
        if not self._flush_lock.acquire(blocking=block):
            return
        try:
            account_id, api, day = key
            with self.store.read() as conn:
                used = usage_of(conn, account_id, api, day)
            with self._lock:
                self._seen[key] = (self._clock(), used, gen)
        finally:
            self._flush_lock.release()

    # -- background ---------------------------------------------------------------------

    def flush(self) -> int:
        """Add the pending counts to the database; returns how many calls were written.

        On a database error the counts stay pending and the next flush retries them.
        """
        with self._flush_lock:
            with self._lock:
                batch = {k: n for k, n in self._pending.items() if n}
            if batch:
                with self.store.write() as conn:
                    add_usage_deltas(conn, batch)
            with self._lock:
                for key, n in batch.items():
                    left = self._pending.get(key, 0) - n
                    if left > 0:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
                    seen = self._seen.get(key)
                    if seen is not None:
                        self._seen[key] = (seen[0], seen[1] + n, seen[2])
                self._forget_idle()
            return sum(batch.values())

    def _forget_idle(self) -> None:
        """Drop views not refreshed for a while (yesterday's keys, idle accounts)."""
        horizon = self._clock() - _FORGET_AFTER
        for key in [k for k, (t, _, _) in self._seen.items() if t < horizon]:
            if key not in self._pending:
                del self._seen[key]

    def pending(self) -> int:
        with self._lock:
            return sum(self._pending.values())

    # -- administration -----------------------------------------------------------------

    def clear(self, account_id: int, day: date, now: int, month_start: int) -> None:
        """``clear_quota``: 48006 after 10 clears this month, else today's counters → 0."""
        with self._flush_lock:
            with self.store.write() as conn:
                lock_account(conn, account_id)
                if count_clears_since(conn, account_id, month_start) >= CLEARS_PER_MONTH:
                    raise ApiError(48006, f"{CLEARS_PER_MONTH} clears this month")
                clear_usage(conn, account_id, day)
                record_clear(conn, account_id, now)
            fresh = self._clock()
            with self._lock:
                for key in [k for k in self._pending if k[0] == account_id and k[2] == day]:
                    del self._pending[key]
                for key in [k for k in self._seen if k[0] == account_id and k[2] == day]:
                    self._seen[key] = (fresh, 0, None)  # the clear moved auth_gen


def parse_daily_quota(text: str) -> int | None:
    """``"default"`` (the setting applies) or a non-negative count, as the CLI takes it."""
    if text.strip().lower() == "default":
        return None
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(f"daily quota must be a number or 'default', not {text!r}") from None
    if limit < 0:
        raise ValueError("daily quota must be zero or more")
    return limit
