"""The per-process quota counter on the web side, and the flusher that writes it.

The counter lives on ``app.state.quotas``, one per process; the flusher (started by the
app's lifespan) writes its counts every second and once more at shutdown. Without a
lifespan (tests over ``httpx.ASGITransport``) counts stay in memory and every answer of
this process is still exact: the check adds what is not flushed yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from msgcube.auth.quotas import FLUSH_EVERY, QuotaCounter
from msgcube.web.background import running
from msgcube.web.faults import faults

JOB = "quota flush"


def counter_of(request: Request) -> QuotaCounter:
    counter: QuotaCounter = request.app.state.quotas
    return counter


@contextlib.asynccontextmanager
async def quota_flusher(
    counter: QuotaCounter, interval: float = FLUSH_EVERY
) -> AsyncIterator[None]:
    """Flush the counter every ``interval`` seconds while the app runs, and at shutdown."""

    async def flush() -> None:
        try:
            await run_in_threadpool(counter.flush)
        except Exception as exc:  # keep counting; the counts stay pending for the next flush
            faults.failed(JOB, exc)
        else:
            faults.succeeded(JOB)

    async def loop() -> None:
        while True:
            await anyio.sleep(interval)
            await flush()

    try:
        async with running(loop):
            yield
    finally:
        with anyio.CancelScope(shield=True):
            await flush()
