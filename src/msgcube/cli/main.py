"""The ``msgcube`` command: thin wrappers that parse arguments, call one library function, print.

Every command accepts every setting as a flag (``--db``, ``--tz`` …, generated from the
settings table), so ``msgcube stats --db x.db …`` and ``MSGCUBE_DB=x.db msgcube stats …``
mean the same thing. What only one command needs is imported in that command (and the
sub-commands kept in modules of their own are loaded by name, ``MsgcubeGroup``), so each
call starts with its own imports alone: a start is mostly imports.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from msgcube.cli.common import (
    SETTINGS_EPILOG,
    MsgcubeGroup,
    add_setting_flags,
    err,
    open_input,
    opened,
    out,
    require_account,
    require_files,
    with_listed_settings,
    with_settings,
)
from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, Period
from msgcube.domain.periods import local_today
from msgcube.errors import AccountError, ApiError, NotFound
from msgcube.ingest.batch import import_followers
from msgcube.ingest.files import ImportReport, detect_format, follower_openids, import_stream
from msgcube.settings import Settings, use_packaged_rules
from msgcube.storage.accounts import list_accounts
from msgcube.storage.records import SenderIds


@click.group(
    cls=MsgcubeGroup,
    lazy={
        "platform": "msgcube.cli.platform_cmds:platform_group",
        "quarantine": "msgcube.cli.push_cmds:quarantine_group",
        "replay": "msgcube.cli.push_cmds:replay_cmd",
        "sync": "msgcube.cli.sync_cmd:sync_command",
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=SETTINGS_EPILOG,
)
@click.version_option(package_name="msgcube")
def cli() -> None:
    """msgcube — WeChat's message analysis data interface, self-hosted."""
    use_packaged_rules()


# --- accounts -------------------------------------------------------------------------------


@cli.group()
def account() -> None:
    """Register and change official accounts."""


@account.command("add")
@click.option("--appid", required=True)
@click.option("--secret", help="AppSecret; generated and printed when omitted.")
@click.option("--original-id", default="", help="Original id (gh_...).")
@click.option("--token", "callback_token", default="", help="Callback token (server config).")
@click.option("--aes-key", default=None, help="EncodingAESKey (43 characters).")
@click.option("--unverified", is_flag=True, help="Unverified account: datacube answers 48001.")
@with_settings
def account_add(
    appid: str,
    secret: str | None,
    original_id: str,
    callback_token: str,
    aes_key: str | None,
    unverified: bool,
    settings: Settings,
) -> None:
    """Register an account. The last line printed is the appid and secret."""
    from msgcube.auth.accounts import AccountChanges, create_account

    secret = secret or secrets.token_hex(16)
    changes = AccountChanges(
        original_id=original_id,
        callback_token=callback_token,
        aes_key=aes_key,
        verified=not unverified,
    )
    with opened(settings, create=True) as store, store.write() as conn:
        now = settings.clock()
        create_account(conn, appid, secret, tz=settings.tz, changes=changes, now=now)
    click.echo(f"{appid} {secret}")


@account.command("set")
@click.option("--appid", required=True)
@click.option("--secret", default=None)
@click.option("--original-id", default=None)
@click.option("--token", "callback_token", default=None)
@click.option("--aes-key", default=None, help="New EncodingAESKey; the old one becomes previous.")
@click.option(
    "--prev-aes-key", default=None, help="Previous EncodingAESKey, tried when the current fails."
)
@click.option("--verified/--unverified", default=None)
@click.option("--account-tz", default=None, help="Time zone of this account's statistics.")
@click.option(
    "--ip-whitelist",
    default=None,
    help="Addresses/networks allowed to use the account's own tokens, comma-separated; '' clears.",
)
@click.option(
    "--daily-quota",
    default=None,
    metavar="N|default",
    help="Daily calls per datacube API for this account; 'default' uses quota_datacube.",
)
@click.option(
    "--upstream",
    "upstream_url",
    default=None,
    metavar="URL",
    help="The account's own server: pushes are stored and relayed there; '' clears.",
)
@with_settings
def account_set(appid: str, settings: Settings, **changes: Any) -> None:
    """Change an account's settings (a new time zone re-derives its stored days and hours)."""
    from msgcube.auth.accounts import AccountChanges, update_account
    from msgcube.auth.quotas import parse_daily_quota

    values = {k: v for k, v in changes.items() if v is not None}
    if "account_tz" in values:
        values["tz"] = values.pop("account_tz")
    try:
        if "daily_quota" in values:
            quota = parse_daily_quota(values.pop("daily_quota"))
            values["daily_quota"] = "default" if quota is None else quota
        wanted = AccountChanges(**values)
        if wanted.empty():
            raise click.UsageError("nothing to change")
        with opened(settings) as store, store.write() as conn:
            update_account(conn, appid, wanted, now=settings.clock())
    except (AccountError, ValueError, NotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"updated {appid}")


@account.command("list")
@with_settings
def account_list(settings: Settings) -> None:
    """List accounts."""
    from msgcube.relay import shown_upstream

    with opened(settings) as store, store.read() as conn:
        for a in list_accounts(conn):
            click.echo(
                f"{a.appid}\t{a.original_id or '-'}\t{a.tz}\t"
                f"{'verified' if a.verified else 'unverified'}\t"
                f"followers:{'known' if a.follower_base else 'unknown'}\t"
                f"since:{a.stats_since or '-'}\t"
                f"upstream:{shown_upstream(a.upstream_url) or '-'}"
            )


# --- data in ---------------------------------------------------------------------------------


@cli.command("import")
@click.option("--appid", required=True)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where bad lines go (default: FILE.rejects; rejects.jsonl for stdin).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("files", nargs=-1, required=True)
@with_settings
def import_cmd(
    appid: str,
    fmt: str,
    rejects: str | None,
    quiet: bool,
    files: tuple[str, ...],
    settings: Settings,
) -> None:
    """Bulk-import pushes (JSON Lines or CSV with WeChat's field names; - is stdin).

    Bad lines are reported as FILE:LINE: reason and written to the rejects file; the
    others are imported. Exit status 1 when any line was rejected.
    """
    require_files(files)  # before the rejects file exists or the database is touched
    with opened(settings, create=True) as store:
        account = require_account(store, appid)
        report = ImportReport()
        senders = SenderIds(account.id)
        rejects_path = Path(
            rejects or (files[0] + ".rejects" if files[0] != "-" else "rejects.jsonl")
        )
        with open(rejects_path, "wb") as rejects_file:
            for path in files:
                kind = detect_format(path) if fmt == "auto" else fmt
                with open_input(path) as stream, _progress(path, quiet) as tick:
                    import_stream(
                        store,
                        account,
                        stream,
                        settings.clock(),
                        source=path,
                        fmt=kind,
                        rejects=rejects_file,
                        report=report,
                        progress=tick,
                        sender_ids=senders,
                        parser=settings.import_parser,
                    )
        if report.bad_count == 0:
            rejects_path.unlink(missing_ok=True)
    for bad in report.bad:
        click.echo(f"{bad.source}:{bad.line}: {bad.reason}", err=True)
    if report.bad_count > len(report.bad):
        click.echo(f"… and {report.bad_count - len(report.bad)} more bad lines", err=True)
    w = report.written
    summary = (
        f"{report.lines} lines: {w.messages_new} new messages, {w.messages_duplicate} duplicates, "
        f"{w.events_new} new events, {w.events_duplicate} duplicate events, {report.bad_count} bad"
    )
    if report.bad_count:
        summary += f" (written to {rejects_path})"
    click.echo(summary)
    if report.uncounted:
        types = ", ".join(f"{name!r} ×{n}" for name, n in report.uncounted.most_common())
        click.echo(
            f"{report.uncounted.total()} messages stored but in no statistic: their MsgType is "
            f"not one WeChat counts ({types})",
            err=True,
        )
    if report.bad_count:
        sys.exit(1)


@contextlib.contextmanager
def _progress(name: str, quiet: bool) -> Iterator[Callable[[int, int | None], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total: int | None = None
    with contextlib.suppress(OSError, ValueError):
        total = Path(name).stat().st_size if name != "-" else None
    if quiet or not err.is_terminal:
        yield lambda _n, _position: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[lines]:,} lines"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(name, total=total, lines=0, rate="")
        lines = 0

        def tick(n: int, position: int | None) -> None:
            nonlocal lines
            lines += n
            elapsed = bar.tasks[task].elapsed  # rich's own clock: display only
            rate = f"{lines / elapsed:,.0f} msg/s" if elapsed else ""
            bar.update(task, completed=position if total else None, lines=lines, rate=rate)

        yield tick


@cli.group()
def followers() -> None:
    """The follower base (count_interval 0)."""


@followers.command("import")
@click.option("--appid", required=True)
@click.argument("file")
@with_settings
def followers_import(appid: str, file: str, settings: Settings) -> None:
    """Set the follower base from a file of openids, one per line (- is stdin)."""
    with open_input(file) as stream:
        openids = follower_openids(stream, file)
    with opened(settings) as store:
        account = require_account(store, appid)
        today = local_today(settings.clock(), account.tz)
        with store.write() as conn:
            count = import_followers(conn, account, openids, today)
    click.echo(f"{count} followers")


@cli.command()
@click.option("--appid", required=True)
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True)
@click.option("--users", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--per-day", type=click.IntRange(1), default=None, help="Average messages per day.")
@click.option(
    "--end",
    "end_day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last day, YYYY-MM-DD (default: yesterday).",
)
@click.option(
    "--out", "out_path", default=None, help="Write JSON Lines here instead of the database."
)
@with_settings
def generate(
    appid: str,
    days: int,
    users: int,
    seed: int,
    per_day: int | None,
    end_day: datetime | None,
    out_path: str | None,
    settings: Settings,
) -> None:
    """Generate realistic synthetic traffic, into the database or a JSONL file."""
    from msgcube.ingest.synthetic import generate_into, write_jsonl

    end = (
        end_day.date()
        if end_day
        else local_today(settings.clock(), settings.tz) - timedelta(days=1)
    )
    if out_path:
        n = write_jsonl(
            out_path,
            appid=appid,
            days=days,
            users=users,
            seed=seed,
            end=end,
            tz=settings.tz,
            messages_per_day=per_day,
        )
        click.echo(f"{n} records written to {out_path}")
        return
    with opened(settings) as store:
        account = require_account(store, appid)
        today = local_today(settings.clock(), account.tz)
        written = generate_into(
            store,
            account,
            days=days,
            users=users,
            seed=seed,
            end=end,
            today=today,
            messages_per_day=per_day,
        )
    click.echo(
        f"{written.messages_new} messages and {written.events_new} events stored for {appid}"
    )


# --- statistics ------------------------------------------------------------------------------


@cli.command()
@click.option("--appid", default=None, help="Only this account.")
@with_settings
def rollup(appid: str | None, settings: Settings) -> None:
    """Bring every closed period up to date now."""
    from msgcube.rollup.engine import refresh

    with opened(settings) as store:
        with store.read() as conn:
            targets = [require_account(store, appid)] if appid else list_accounts(conn)
        for a in targets:
            now = settings.clock()
            report = refresh(store, a, local_today(now, a.tz), computed_at=int(now.timestamp()))
            click.echo(
                f"{a.appid}: {report.computed[Period.DAY]} days, {report.computed[Period.WEEK]} "
                f"weeks, {report.computed[Period.MONTH]} months in {report.seconds:.2f}s"
            )


@cli.command()
@click.argument("endpoint", type=click.Choice([e.name for e in ENDPOINTS]))
@click.argument("begin")
@click.argument("end")
@click.option("--appid", required=True)
@with_settings
def stats(endpoint: str, begin: str, end: str, appid: str, settings: Settings) -> None:
    """Print, as JSON, exactly the list the API returns (errors on stderr, exit status 2)."""
    from msgcube.rollup.query import served_list

    with opened(settings) as store:
        account = require_account(store, appid)
        try:
            rows = served_list(
                store,
                account,
                BY_NAME[endpoint],
                begin,
                end,
                settings.clock(),
                span_profile=settings.span_profile,
                ready_at=settings.ready_time,
            )
        except ApiError as exc:
            click.echo(orjson.dumps({"errcode": exc.errcode, "errmsg": exc.errmsg}), err=True)
            if exc.detail:
                click.echo(exc.detail, err=True)
            sys.exit(2)
    click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())


@cli.command("settings", epilog="Precedence: defaults < msgcube.toml < MSGCUBE_* < flags.")
@click.option("--markdown", is_flag=True, help="Print the settings reference as a Markdown table.")
@functools.partial(add_setting_flags, hidden=False)  # under the command: in the table's order
def show_settings(markdown: bool, **flags: Any) -> None:
    """Print the resolved settings (secrets masked); its options work on every command but sync."""
    from msgcube.cli.reference import settings_markdown

    if markdown:
        click.echo(settings_markdown())
        return
    settings = Settings.load(flags)
    click.echo(orjson.dumps(settings.public(), option=orjson.OPT_INDENT_2).decode())


@cli.command(hidden=True)
@click.option(
    "--write",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Rewrite the generated blocks of this Markdown file (repeatable).",
)
def docs(files: tuple[str, ...]) -> None:
    """Print the generated reference tables, or rewrite them in README.md, docs/contract.md."""
    from msgcube.cli.reference import all_tables, regenerate

    if not files:
        click.echo(all_tables(cli))
    for name in files:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        fresh = regenerate(text, cli)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            click.echo(f"rewrote {path}")


@cli.command()
@with_listed_settings
def serve(settings: Settings) -> None:
    """Serve the API, callback and dashboard; keep rollups current in the background."""
    from msgcube.web.server import serve as run_server

    with opened(settings, create=True):
        pass  # create and migrate the database before workers start
    click.echo(f"msgcube serving on http://{settings.host}:{settings.port}", err=True)
    run_server(settings)


@cli.command()
@click.option("--days", type=click.IntRange(7, 3660), default=120, show_default=True)
@click.option("--users", type=click.IntRange(10), default=3000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Build and print the demo, do not serve it.")
@with_settings
def demo(days: int, users: int, no_serve: bool, settings: Settings) -> None:
    """A demo account with months of traffic, rolled up, printed with curl examples, served."""
    from msgcube.cli.demo import run_demo

    run_demo(settings, days=days, users=users, console=out, serve=not no_serve)


def main() -> None:
    cli(standalone_mode=True)
