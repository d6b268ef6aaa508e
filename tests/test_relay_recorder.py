"""The relay's timings: written in batches, kept across a failed write, bounded."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

from sqlalchemy import select

from msgcube.relay import RelayRecorder
from msgcube.storage.db import migrate, open_store
from msgcube.storage.relay_calls import RelayCall
from msgcube.storage.schema import relay_calls


def call(n: int, failed: bool = False) -> RelayCall:
    return RelayCall(7, 1_773_100_000 + n, date(2026, 3, 10), 9, 10 + n, failed)


def test_a_failed_write_keeps_the_timings_for_the_next_one(tmp_path: Path) -> None:
    # A database without the schema yet: the first write fails for real.
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}", migrate_schema=False)
    recorder = RelayRecorder(store, interval=3600, limit=5)

    async def go() -> None:
        async with recorder.running():
            for n in range(3):
                recorder.add(call(n, failed=n == 1))
            await recorder.flush()  # no relay_calls table: kept
            migrate(store)
            for n in range(3, 7):
                recorder.add(call(n))  # 7 pending, limit 5: the 2 oldest go
        # leaving running() flushes what is pending

    asyncio.run(go())
    assert recorder.dropped == 2
    with store.read() as conn:
        rows = conn.execute(select(relay_calls).order_by(relay_calls.c.id)).all()
    assert [(r.received_at - 1_773_100_000, r.cost_ms, bool(r.failed)) for r in rows] == [
        (n, 10 + n, False) for n in range(2, 7)
    ]
    assert {(r.account_id, r.day, r.hour) for r in rows} == {(7, date(2026, 3, 10), 9)}
    store.dispose()


def test_timings_are_written_every_interval_while_running(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    recorder = RelayRecorder(store, interval=0.05)

    async def go() -> int:
        async with recorder.running():
            recorder.add(call(1))
            for _ in range(200):  # written by the loop, not by the final flush
                await asyncio.sleep(0.05)
                with store.read() as conn:
                    if conn.execute(select(relay_calls.c.id)).first() is not None:
                        return 1
            return 0

    assert asyncio.run(go()) == 1
    store.dispose()
