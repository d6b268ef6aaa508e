"""The component_verify_ticket pusher.

It runs in the server's lifespan: every few seconds it looks for platforms with a ticket
URL whose current 10-minute ticket has not been pushed, claims the push in the database
(so one worker of several pushes it) and POSTs it signed and encrypted the way WeChat
does. A failed push is logged and not retried: the next one comes 10 minutes later and
the previous ticket stays valid for 12 hours, as with WeChat.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.concurrency import run_in_threadpool

from msgcube.auth.platforms import TICKET_EVERY, Ticket, ticket_for_slot, ticket_push
from msgcube.storage.platforms import Platform, claim_push, list_platforms
from msgcube.web.access_log import printable
from msgcube.web.background import running
from msgcube.web.context import AppContext
from msgcube.web.faults import faults

log = logging.getLogger("msgcube.component")

PUSH_POLL = 10.0
"""Seconds between looks for a ticket to push (a new one is due every 10 minutes)."""
PUSHER = "ticket pusher"
PUSH_TIMEOUT = 5.0
"""WeChat gives a developer's server 5 seconds to answer a push."""


def claim_due_pushes(ctx: AppContext) -> list[tuple[Platform, Ticket]]:
    """The tickets this worker should push now, each claimed so no other worker does."""
    slot = ctx.now_ts() // TICKET_EVERY
    with ctx.store.read() as conn:
        due = [
            p
            for p in list_platforms(conn)
            if p.ticket_url and (p.pushed_slot is None or p.pushed_slot < slot)
        ]
    claimed = []
    for platform in due:
        with ctx.store.write() as conn:
            if claim_push(conn, platform.id, slot):
                claimed.append((platform, ticket_for_slot(platform, slot)))
    return claimed


async def push_ticket(
    client: httpx.AsyncClient, platform: Platform, ticket: Ticket, now: int
) -> bool:
    """POST one ticket; True when the platform answered ``success`` like WeChat expects."""
    params, body = ticket_push(platform, ticket, now, nonce=str(secrets.randbelow(10**10)))
    try:
        # Merged, not replaced: a platform's URL may carry a query of its own.
        url = httpx.URL(platform.ticket_url).copy_merge_params(params)
        response = await client.post(
            url, content=body, headers={"Content-Type": "text/xml"}, timeout=PUSH_TIMEOUT
        )
    except httpx.HTTPError as exc:
        log.warning(
            "ticket push to %s failed: %s", printable(platform.component_appid), printable(str(exc))
        )
        return False
    if response.status_code != 200 or response.text.strip() != "success":
        log.warning(
            "ticket push to %s answered HTTP %d %r",
            printable(platform.component_appid),
            response.status_code,
            response.text[:80],
        )
        return False
    log.info("pushed component_verify_ticket to %s", printable(platform.component_appid))
    return True


async def push_due_tickets(ctx: AppContext, client: httpx.AsyncClient) -> int:
    """One round of the pusher; returns how many pushes were answered ``success``."""
    claimed = await run_in_threadpool(claim_due_pushes, ctx)
    now = ctx.now_ts()
    results = [await push_ticket(client, platform, ticket, now) for platform, ticket in claimed]
    return sum(results)


@contextlib.asynccontextmanager
async def ticket_pusher(ctx: AppContext, interval: float = PUSH_POLL) -> AsyncIterator[None]:
    """Run the pusher while the app runs (``msgcube serve``)."""

    async def loop() -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while True:
                try:
                    await push_due_tickets(ctx, client)
                except Exception as exc:  # keep serving; the next round tries again
                    faults.failed(PUSHER, exc)
                else:
                    faults.succeeded(PUSHER)
                await anyio.sleep(interval)

    async with running(loop):
        yield
