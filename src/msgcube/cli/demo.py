"""``msgcube demo``: a demo account with months of realistic traffic, rolled up and shown.

Idempotent: run twice on the same database and the second run reuses the account and
its data (the secret is printed again because it is derived from the appid, not random:
a demo is for copy-paste, not for protecting anything).
"""

from __future__ import annotations

import hashlib
import time
from datetime import date, timedelta

from rich.console import Console
from rich.table import Table

from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, Endpoint, Period
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
                conn,
                appid=DEMO_APPID,
                secret=demo_secret(),
                tz=settings.tz,
                original_id=DEMO_ORIGINAL_ID,
                callback_token=DEMO_TOKEN,
                aes_key=DEMO_AES_KEY,
                now=int(settings.clock().timestamp()),
            )
    if created:
        started = time.perf_counter()
        with console.status(f"Generating {days} days of traffic from {users} users…"):
            written = generate_into(
                store,
                account,
                days=days,
                users=users,
                seed=2015,
                end=today - timedelta(days=1),
                today=today,
            )
        console.print(
            f"Stored {written.messages_new:,} messages and {written.events_new:,} events "
            f"in {time.perf_counter() - started:.1f}s"
        )
    with store.read() as conn:
        fresh = get_account(conn, DEMO_APPID)
    assert fresh is not None
    with console.status("Rolling up…"):
        report = refresh(store, fresh, today, computed_at=int(settings.clock().timestamp()))
    if report.total:
        console.print(f"Rolled up {report.total} periods in {report.seconds:.1f}s")
    return fresh


def _table(title: str, ep: Endpoint, rows: list[dict[str, object]]) -> Table:
    table = Table(title=f"{title} — {ep.name}", title_justify="left")
    for column in ep.fields:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            *(
                MSG_TYPE_NAMES_EN.get(v, str(v))
                if k == "msg_type" and isinstance(v, int)
                else str(v)
                for k, v in row.items()
            )
        )
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
            store,
            account,
            ep,
            begin.isoformat(),
            end.isoformat(),
            now,
            span_profile=settings.span_profile,
        )
        console.print(_table(title, ep, rows))


def example_ranges(settings: Settings, today: date) -> dict[str, tuple[date, date]]:
    """A useful, valid request range per endpoint under the configured span profile."""
    yesterday = today - timedelta(days=1)
    last_monday = week_start(today) - timedelta(days=7)
    last_month = month_start(month_start(today) - timedelta(days=1))
    out: dict[str, tuple[date, date]] = {}
    for ep in ENDPOINTS:
        span = ep.max_span(settings.span_profile)
        if ep.period is Period.WEEK:
            out[ep.name] = (
                (last_monday - timedelta(days=21), last_monday)
                if span > 21
                else (last_monday, last_monday)
            )
        elif ep.period is Period.MONTH:
            out[ep.name] = (last_month, last_month)
        else:
            out[ep.name] = (yesterday - timedelta(days=span - 1), yesterday)
    return out


def curl_examples(settings: Settings, today: date) -> str:
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        "# a token (valid 2 hours):",
        f"TOKEN=$(curl -s '{base}/cgi-bin/token?grant_type=client_credential"
        f"&appid={DEMO_APPID}&secret={demo_secret()}' | python3 -c "
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
    ]
    for name, (begin, end) in example_ranges(settings, today).items():
        lines.append(
            f"curl -s -X POST '{base}/datacube/{name}?access_token='$TOKEN "
            f'-d \'{{"begin_date": "{begin}", "end_date": "{end}"}}\''
        )
    return "\n".join(lines)


def run_demo(settings: Settings, *, days: int, users: int, console: Console, serve: bool) -> None:
    """Build (or reuse) the demo, print it, then serve it until interrupted."""
    store = open_store(settings.db_url, analytics=settings.analytics_db)
    try:
        account = ensure_demo(store, settings, days=days, users=users, console=console)
        show_tables(store, settings, account, console)
    finally:
        store.dispose()
    today = local_today(settings.clock(), account.tz)
    console.print(f"\nDatabase: {store.url}")
    if settings.analytics_db is not None:
        console.print(f"Analytics (ClickHouse): {settings.analytics_db.shown}")
    console.print(f"Demo account: appid [bold]{DEMO_APPID}[/]  secret [bold]{demo_secret()}[/]")
    console.print(
        f"Callback URL: http://{settings.host}:{settings.port}/wechat/callback/{DEMO_APPID}"
        f"  (Token {DEMO_TOKEN}, EncodingAESKey {DEMO_AES_KEY})"
    )
    console.print(
        f"Dashboard: http://{settings.host}:{settings.port}/dashboard"
        "  (sign in with the appid and secret above)"
    )
    console.print(f"OpenAPI: http://{settings.host}:{settings.port}/openapi.json\n")
    print(curl_examples(settings, today), flush=True)
    if serve:
        from msgcube.web.server import serve as run_server

        console.print(f"\nServing on http://{settings.host}:{settings.port} (Ctrl-C stops)")
        run_server(settings)
