"""Keeping the relay's timings without delaying any answer.

Every forwarded push adds one ``RelayCall`` to a list in memory; a task writes the list
in one transaction every ``interval`` seconds (on a worker thread) and once more when
the server shuts down. The answer to WeChat never waits for this write.

What a crash can lose: on SIGKILL (or power loss) the timings of at most the last
``interval`` seconds of forwarded pushes — interface statistics only. Messages are
never at stake: a push is acknowledged only after the group committer made it durable,
which does not depend on this list. A write that fails keeps its calls for the next
one; beyond ``limit`` pending calls the oldest are dropped (and logged), so a database
outage cannot grow the list without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from msgcube.storage.db import Store
from msgcube.storage.relay_calls import RelayCall, record_relay_calls

log = logging.getLogger("msgcube.relay")


class RelayRecorder:
    """Batches ``RelayCall`` rows and writes them every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 1.0,
        limit: int = 200_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self.dropped = 0
        self._pending: list[RelayCall] = []
        self._flushing = asyncio.Lock()

    def add(self, call: RelayCall) -> None:
        self._pending.append(call)
        excess = len(self._pending) - self.limit
        if excess > 0:
            del self._pending[:excess]
            self.dropped += excess
            log.warning("relay timings: %d dropped while the database was unavailable", excess)

    async def flush(self) -> None:
        """Write what is pending now (one transaction); keep it for later if that fails."""
        async with self._flushing:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                log.exception("could not write %d relay timings; retrying later", len(batch))
                self._pending[:0] = batch

    def _write(self, batch: list[RelayCall]) -> None:
        with self.store.write() as conn:
            # With the time of writing, only calls whose day has already ended void the
            # account's cached answers; without it every flush would void them all.
            record_relay_calls(conn, batch, now=int(self.clock().timestamp()))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Flush every ``interval`` seconds while the block runs, and once more at its end."""
        task = asyncio.get_running_loop().create_task(self._loop(), name="relay-recorder")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
