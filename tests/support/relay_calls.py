"""Recording relay timings in tests, the way the relay's recorder does.

``RelayCall`` carries the local day and hour of ``received_at`` in the account's zone;
they are derived here with ``zoneinfo`` (not with msgcube's own helpers) so that a test
states when a push arrived and nothing more.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from msgcube.storage.accounts import Account
from msgcube.storage.db import Store
from msgcube.storage.relay_calls import RelayCall, record_relay_calls

Call = tuple[int, int, bool]
"""(received_at unix seconds, cost_ms, failed)."""


def relay_call(account: Account, received_at: int, cost_ms: int, failed: bool) -> RelayCall:
    local = datetime.fromtimestamp(received_at, ZoneInfo(account.tz))
    return RelayCall(account.id, received_at, local.date(), local.hour, cost_ms, failed)


def record_calls(
    store: Store, account: Account, calls: Iterable[Call], now: int | None = None
) -> None:
    """One transaction, as one flush of the relay's recorder."""
    batch = [relay_call(account, *c) for c in calls]
    with store.write() as conn:
        record_relay_calls(conn, batch, now)


def synthetic_calls(
    account: Account, first: date, last: date, *, seed: int = 1, per_day: int = 12
) -> list[Call]:
    """A few relayed pushes a day on ``[first, last]``: varied times, about one in eight
    failing (a failure costs up to the 4.5 s timeout)."""
    rng = random.Random(seed)
    zone = ZoneInfo(account.tz)
    out: list[Call] = []
    day = first
    while day <= last:
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())
        for _ in range(rng.randint(1, per_day)):
            failed = rng.random() < 0.125
            cost = rng.randint(3000, 4500) if failed else rng.randint(5, 900)
            out.append((midnight + rng.randrange(86400), cost, failed))
        day += timedelta(days=1)
    return out


def seed_calls(
    store: Store, account: Account, first: date, last: date, *, seed: int = 1
) -> list[Call]:
    """Record ``synthetic_calls`` in one batch; returns them (for oracles)."""
    calls = synthetic_calls(account, first, last, seed=seed)
    record_calls(store, account, calls)
    return calls
