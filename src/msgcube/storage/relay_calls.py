"""The relay's timings (``relay_calls``): one row per push forwarded to an upstream.

They are what WeChat's interface analysis (接口分析) measures about a developer's server:
how long the server took to answer each push, and whether it failed (no valid answer
within ``relay_timeout``, a transport error, or a non-2xx status). The relay writes
them in small batches off the answer's path (``relay/recorder.py``); the interface
rollup sums them per local day and hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Connection

from msgcube.domain.endpoints import Period
from msgcube.storage.rollup_state import mark_dirty
from msgcube.storage.schema import relay_calls


@dataclass(frozen=True, slots=True)
class RelayCall:
    """One forwarded push: when it arrived, its local day/hour, what it cost, if it failed."""

    account_id: int
    received_at: int  # unix seconds
    day: date  # local day in the account's time zone
    hour: int  # local hour, 0–23
    cost_ms: int  # push received → the upstream's complete answer, or the failure
    failed: bool


def record_relay_calls(
    conn: Connection, calls: Sequence[RelayCall], now: int | None = None
) -> None:
    """Insert ``calls`` in one executemany (inside the caller's transaction) and mark
    their days dirty for the interface rollup in the same transaction.

    ``now`` (unix seconds) only decides whether cached API answers must be voided; without
    it every batch is treated as possibly late (see ``_mark_days_dirty``).
    """
    if not calls:
        return
    _mark_days_dirty(conn, calls, now)
    conn.execute(
        relay_calls.insert(),
        [
            {
                "account_id": c.account_id,
                "received_at": c.received_at,
                "day": c.day,
                "hour": c.hour,
                "cost_ms": c.cost_ms,
                "failed": c.failed,
            }
            for c in calls
        ],
    )


def _mark_days_dirty(conn: Connection, calls: Sequence[RelayCall], now: int | None) -> None:
    """Mark each call's local day dirty (the day rollup rewrites its interface rows).

    A call landing on a day that has already ended is late data: the account's
    ``stats_gen`` must move so that cached answers for that day are voided. A call's day
    cannot have ended before ``received_at + (22 - hour) h`` (it is at least ``23 - hour``
    hours to local midnight, one less across a daylight-saving change), so only calls
    older than that — or every call, when ``now`` is unknown — count as possibly late.
    """
    by_account: dict[int, list[RelayCall]] = {}
    for c in calls:
        by_account.setdefault(c.account_id, []).append(c)
    for account_id, own in by_account.items():
        days = {c.day for c in own}
        late = now is None or any(now >= c.received_at + (22 - c.hour) * 3600 for c in own)
        # mark_dirty voids caches when a key's period has ended before ``today``.
        today = max(days) + timedelta(days=1) if late else min(days)
        mark_dirty(conn, account_id, {(Period.DAY, d) for d in days}, today)
