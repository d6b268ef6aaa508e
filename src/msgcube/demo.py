"""``msgcube demo``: a demo account with months of realistic traffic, rolled up and shown.

Idempotent: run twice on the same database and the second run reuses the account and
its data (the secret is printed again because it is derived from the appid, not random:
a demo is for copy-paste, not for protecting anything).
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from rich.console import Console
from rich.table import Table

from msgcube.domain.endpoints import BY_NAME, Endpoint
from msgcube.domain.messages import MSG_TYPE_NAMES_EN
from msgcube.domain.periods import local_today, month_start, week_start
from msgcube.ingest.synthetic import generate_into
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.settings import Settings
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store, open_store

DEMO_APPID = "wx5d3c0be1a2f40001"
DEMO_ORIGINAL_ID = "gh_5d3c0be1a2f4"
DEMO_TOKEN = "msgcubedemo"  # noqa: S105 - a published demo value, not a secret
DEMO_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def demo_secret(appid: str = DEMO_APPID) -> str:
    return hashlib.sha256(f"msgcube-demo:{appid}".encode()).hexdigest()[:32]


def ensure_demo(
    store: Store, settings: Settings, *, days: int, users: int, console: Console
) -> Account:
    """The demo account with its traffic, created on first use."""
    today = local_today(settings.clock(), settings.tz)
    with store.write() as conn:
        account = get_account(conn, DEMO_APPID)
        created = account is None
        if account is None:
            account = add_account(
                conn, appid=DEMO_APPID, secret=demo_secret(), tz=settings.tz,
                original_id=DEMO_ORIGINAL_ID, callback_token=DEMO_TOKEN, aes_key=DEMO_AES_KEY,
            )  # fmt: skip
    if created:
        started = time.perf_counter()
        with console.status(f"Generating {days} days of traffic from {users} users…"):
            written = generate_into(
                store, account, days=days, users=users, seed=2015, end=today - timedelta(days=1),
                today=today,
            )  # fmt: skip
        console.print(
            f"Stored {written.messages_new:,} messages and {written.events_new:,} events "
            f"in {time.perf_counter() - started:.1f}s"
        )
    with store.read() as conn:
        fresh = get_account(conn, DEMO_APPID)
    assert fresh is not None
    with console.status("Rolling up…"):
        report = refresh(store, fresh, today)
    if report.total:
        console.print(f"Rolled up {report.total} periods in {report.seconds:.1f}s")
    return fresh


def _table(title: str, ep: Endpoint, rows: list[dict[str, object]]) -> Table:
    table = Table(title=f"{title} — {ep.name}", title_justify="left")
    for column in ep.fields:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(
            MSG_TYPE_NAMES_EN.get(v, str(v)) if k == "msg_type" and isinstance(v, int) else str(v)
            for k, v in row.items()
        ))  # fmt: skip
    return table


def show_tables(store: Store, settings: Settings, account: Account, console: Console) -> None:
    now = settings.clock()
    today = local_today(now, account.tz)
    yesterday = today - timedelta(days=1)
    last_week = week_start(today) - timedelta(days=7)
    last_month = month_start(month_start(today) - timedelta(days=1))
    shown = [
        ("Yesterday by type", "getupstreammsg", yesterday, yesterday),
        ("Last full week", "getupstreammsgweek", last_week, last_week),
        ("Last full month", "getupstreammsgmonth", last_month, last_month),
        ("Last month's senders by count", "getupstreammsgdistmonth", last_month, last_month),
    ]
    for title, name, begin, end in shown:
        ep = BY_NAME[name]
        rows = served_list(
            store, account, ep, begin.isoformat(), end.isoformat(), now,
            span_profile=settings.span_profile,
        )  # fmt: skip
        console.print(_table(title, ep, rows))


def run_demo(settings: Settings, *, days: int, users: int, console: Console) -> None:
    store = open_store(settings.db_url)
    try:
        account = ensure_demo(store, settings, days=days, users=users, console=console)
        show_tables(store, settings, account, console)
        console.print(f"\nDatabase: {store.url}")
        console.print(f"Demo account: appid [bold]{DEMO_APPID}[/]  secret [bold]{demo_secret()}[/]")
        console.print(
            f"Try: msgcube stats getupstreammsghour --appid {DEMO_APPID} "
            f"{(local_today(settings.clock(), account.tz) - timedelta(days=1)).isoformat()} "
            f"{(local_today(settings.clock(), account.tz) - timedelta(days=1)).isoformat()}"
        )
    finally:
        store.dispose()
