"""Synthetic traffic into the database or a JSON Lines file (``msgcube generate``, the demo).

The traffic itself comes from ``msgcube.domain.traffic`` (pure); this module only routes it
through the same ``write_batch`` as real pushes, so generated data is deduplicated,
dirty-marked and rolled up exactly like the real thing.
"""

from __future__ import annotations

from datetime import date, datetime, time
from itertools import islice

import orjson

from msgcube.domain.messages import parse_record
from msgcube.domain.periods import zone
from msgcube.domain.traffic import generate_traffic, initial_followers
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.db import Store
from msgcube.storage.records import SenderIds, WriteResult

BATCH = 20_000


def write_jsonl(
    path: str,
    *,
    appid: str,
    days: int,
    users: int,
    seed: int,
    end: date,
    tz: str,
    messages_per_day: int | None = None,
    original_id: str = "",
) -> int:
    """Write generated pushes to ``path``, one JSON object per line; returns the count."""
    count = 0
    with open(path, "wb") as out:
        records = generate_traffic(
            appid=appid,
            original_id=original_id or f"gh_{appid[-12:]}",
            days=days,
            users=users,
            seed=seed,
            end=end,
            tz=tz,
            messages_per_day=messages_per_day,
        )
        while chunk := list(islice(records, BATCH)):
            out.write(b"\n".join(orjson.dumps(r) for r in chunk) + b"\n")
            count += len(chunk)
    return count


def generate_into(
    store: Store,
    account: Account,
    *,
    days: int,
    users: int,
    seed: int,
    end: date,
    today: date,
    messages_per_day: int | None = None,
    with_followers: bool = True,
) -> WriteResult:
    """Store generated traffic for ``account``; with ``with_followers`` also its follower base."""
    total = WriteResult()
    # Generated rows are stamped with the start of ``today``: a generated database is
    # then the same on every run (the demo and the tests pin ``today``).
    stamp = int(datetime.combine(today, time(), zone(account.tz)).timestamp())
    senders = SenderIds(account.id)
    records = generate_traffic(
        appid=account.appid,
        original_id=account.original_id or f"gh_{account.appid[-12:]}",
        days=days,
        users=users,
        seed=seed,
        end=end,
        tz=account.tz,
        messages_per_day=messages_per_day,
    )
    while chunk := list(islice(records, BATCH)):
        parsed = [parse_record(r) for r in chunk]
        with store.write() as conn:
            total.add(write_batch(conn, account, parsed, today, senders, received_at=stamp))
    if with_followers:
        base = initial_followers(appid=account.appid, users=users, days=days, seed=seed)
        with store.write() as conn:
            fresh = get_account(conn, account.appid)
            assert fresh is not None
            import_followers(conn, fresh, base, today)
    return total
