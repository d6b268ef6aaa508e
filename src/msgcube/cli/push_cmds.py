"""``msgcube quarantine list|show|replay|prune`` and ``msgcube replay``: the push side of the CLI.

Registered by ``cli/main.py``; the shared helpers come from ``cli/common.py``. Like the
rest of the CLI these only parse arguments, call one library function and print.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import click

from msgcube.cli.common import open_input, opened, sqlite_path, with_settings
from msgcube.domain.identifiers import appid_problem
from msgcube.ingest.quarantine import replay_quarantine
from msgcube.settings import Settings
from msgcube.storage.accounts import get_account
from msgcube.storage.quarantine import get_entries, list_entries, prune_entries
from msgcube.wechat import AESKey

ENTRY_ID = click.IntRange(1, 2**63 - 1)
"""A quarantine entry's id: a row id (BIGINT), so a larger number is no entry rather than
an integer the database driver cannot even bind."""


def _appid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--appid``, refused when no account could have it (PostgreSQL cannot query a NUL)."""
    problem = None if value is None else appid_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group("quarantine")
def quarantine_group() -> None:
    """Signed pushes that could not be stored: list, inspect, replay, prune."""


@quarantine_group.command("list")
@click.option("--appid", default=None, callback=_appid, help="Only this account.")
@click.option("--pending", is_flag=True, help="Only entries not replayed yet.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@with_settings
def quarantine_list(appid: str | None, pending: bool, limit: int, settings: Settings) -> None:
    """List quarantined pushes, newest first (id, received, appid, bytes, replayed, reason)."""
    with opened(settings) as store, store.read() as conn:
        entries = list_entries(conn, appid=appid, pending_only=pending, limit=limit)
    for e in entries:
        click.echo(
            f"{e.id}\t{_when(e.received_at)}\t{e.appid}\t{e.body_size}\t"
            f"{_when(e.replayed_at) if e.replayed_at else 'pending'}\t{e.reason}"
        )
    if not entries:
        click.echo("quarantine is empty" if not pending else "nothing pending", err=True)


@quarantine_group.command("show")
@click.argument("entry_id", type=ENTRY_ID)
@click.option("--raw", is_flag=True, help="Write only the body, byte for byte, to stdout.")
@with_settings
def quarantine_show(entry_id: int, raw: bool, settings: Settings) -> None:
    """Show one quarantined push: why, when, its query string and its body."""
    with opened(settings) as store, store.read() as conn:
        found = get_entries(conn, [entry_id])
    if not found:
        raise click.ClickException(f"no quarantine entry {entry_id}")
    e = found[0]
    if raw:
        sys.stdout.buffer.write(e.body)
        return
    click.echo(f"id:        {e.id}")
    click.echo(f"appid:     {e.appid}")
    click.echo(f"received:  {_when(e.received_at)}")
    click.echo(f"replayed:  {_when(e.replayed_at)}")
    click.echo(f"reason:    {e.reason}")
    click.echo(f"query:     {e.query}")
    click.echo(f"body:      {e.body_size} bytes")
    click.echo(e.body.decode("utf-8", errors="replace"))


@quarantine_group.command("replay")
@click.argument("entry_ids", nargs=-1, type=ENTRY_ID)
@click.option("--appid", default=None, callback=_appid, help="Only this account's pending entries.")
@with_settings
def quarantine_replay(entry_ids: tuple[int, ...], appid: str | None, settings: Settings) -> None:
    """Run pending (or the given) entries through the push gate again; store what now opens.

    Typical use: a push was quarantined because the EncodingAESKey was wrong; fix it with
    `msgcube account set --aes-key`, then replay. Stored pushes are deduplicated like any
    push and marked replayed; the others keep their entry with the new reason.
    """
    with opened(settings) as store:
        report = replay_quarantine(
            store,
            settings.clock(),
            list(entry_ids) if entry_ids else None,
            appid=appid,
            tz=settings.tz,
        )
    for entry_id, reason in report.failed:
        click.echo(f"{entry_id}: still failing: {reason}", err=True)
    w = report.written
    click.echo(
        f"{len(report.replayed)} replayed ({w.messages_new} new messages, "
        f"{w.messages_duplicate} duplicates, {w.events_new} new events), "
        f"{len(report.failed)} still failing, {len(report.already)} already replayed"
    )
    if report.failed:
        sys.exit(1)


@quarantine_group.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(0),
    default=None,
    help="Delete entries received more than DAYS days ago.",
)
@click.option("--all", "everything", is_flag=True, help="Delete every entry (of --appid).")
@click.option("--replayed", is_flag=True, help="Only entries already replayed.")
@click.option("--appid", default=None, callback=_appid, help="Only this account.")
@with_settings
def quarantine_prune(
    days: int | None, everything: bool, replayed: bool, appid: str | None, settings: Settings
) -> None:
    """Delete quarantined pushes by age (--older-than) or all of them (--all).

    The server also drops entries older than quarantine_retention_days on its own.
    """
    if (days is not None) == everything:
        raise click.UsageError("give exactly one of --older-than DAYS and --all")
    before = None if days is None else int(settings.clock().timestamp()) - days * 86_400
    with opened(settings) as store, store.write() as conn:
        removed = prune_entries(conn, appid=appid, before=before, replayed_only=replayed)
    click.echo(f"{removed} quarantined pushes deleted")


def _account_secrets(settings: Settings, appid: str) -> tuple[str, str | None]:
    """Token and EncodingAESKey of ``appid`` from the database, if there is one."""
    path = sqlite_path(settings.db_url)
    if path is not None and not path.is_file():
        raise click.UsageError(f"--token is required (no database at {path})")
    with opened(settings) as store, store.read() as conn:
        account = get_account(conn, appid)
    if account is None or not account.callback_token:
        raise click.UsageError(f"--token is required ({appid} has no callback token here)")
    return account.callback_token, account.aes_key


@click.command("replay")
@click.argument("file")
@click.option("--url", required=True, help="Callback URL, or a server's base URL.")
@click.option("--appid", required=True)
@click.option("--token", default=None, help="Callback Token (default: the account's, from --db).")
@click.option("--aes-key", default=None, help="EncodingAESKey (default: the account's).")
@click.option(
    "--mode", type=click.Choice(["plain", "compat", "safe"]), default="plain", show_default=True
)
@click.option("--concurrency", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--tries", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--timeout", type=click.FloatRange(0.1), default=5.0, show_default=True)
@with_settings
def replay_cmd(
    file: str,
    url: str,
    appid: str,
    token: str | None,
    aes_key: str | None,
    mode: str,
    concurrency: int,
    tries: int,
    timeout: float,
    settings: Settings,
) -> None:
    """Send a JSON Lines file of pushes (msgcube generate --out) to a callback as WeChat would.

    Each push is signed with the Token, encrypted in compat/safe mode, sent concurrently
    and retried up to --tries times on anything but HTTP 200. With a base URL
    (http://host:port) the push goes to msgcube's /wechat/callback/APPID there.
    """
    # Imported here: httpx is only needed by this command, not by every msgcube start.
    from msgcube.client.replay import PushSigner, ReplaySummary, callback_url, read_jsonl, replay

    if token is None:
        token, stored_key = _account_secrets(settings, appid)
        aes_key = aes_key or stored_key
    try:
        key = AESKey(aes_key) if aes_key else None
        signer = PushSigner(appid=appid, token=token, mode=mode, aes_key=key)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        target = callback_url(url, appid)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from exc
    summary = ReplaySummary()
    with open_input(file) as handle:
        records = read_jsonl(handle, summary)
        asyncio.run(
            replay(
                records,
                target,
                signer,
                concurrency=concurrency,
                tries=tries,
                timeout=timeout,
                summary=summary,
            )
        )
    click.echo(summary.text())
    if summary.failed or summary.bad_lines:
        sys.exit(1)
