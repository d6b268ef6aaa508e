"""Keeping rollups current while serving.

Closed days are computed soon after midnight, late data soon after it lands.

Every ``interval`` seconds each account's pending closed periods are computed. Several
workers may run the loop: the engine serialises per account (SQLite's write lock, a
PostgreSQL advisory lock) and a period done by one worker is no longer pending for the
next, so the duplication costs a read, not a recomputation.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from msgcube.domain.periods import local_today
from msgcube.rollup.engine import refresh
from msgcube.storage.accounts import list_accounts
from msgcube.web.context import AppContext
from msgcube.web.faults import faults

log = logging.getLogger("msgcube.rollup")


def rollup_once(ctx: AppContext) -> int:
    """One pass over every account; returns the number of periods computed."""
    with ctx.store.read() as conn:
        accounts = list_accounts(conn)
    total = 0
    now = ctx.now()
    for account in accounts:
        report = refresh(
            ctx.store,
            account,
            local_today(now, account.tz),
            chunk=7,
            computed_at=int(now.timestamp()),
        )
        if report.total:
            log.info(
                "rolled up %s: %d periods in %.2fs", account.appid, report.total, report.seconds
            )
        total += report.total
    return total


@contextlib.asynccontextmanager
async def running(loop: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run ``loop`` as a task while the ``async with`` block runs; cancel it on exit.

    The server's periodic jobs (rollups, quota flushes, ticket pushes) live in the app's
    lifespan this way.
    """
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def rollup_loop(ctx: AppContext, interval: float = 30.0) -> AsyncIterator[None]:
    async def loop() -> None:
        await anyio.sleep(random.uniform(0.5, 2.0))  # workers start together; spread them
        while True:
            try:
                await run_in_threadpool(rollup_once, ctx)
            except Exception as exc:  # keep serving; the next pass retries
                faults.failed("background rollup", exc)
            else:
                faults.succeeded("background rollup")
            await anyio.sleep(interval)

    async with running(loop):
        yield
