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
from datetime import date

from sqlalchemy import Connection

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


def record_relay_calls(conn: Connection, calls: Sequence[RelayCall]) -> None:
    """Insert ``calls`` in one executemany (inside the caller's transaction)."""
    if not calls:
        return
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
