"""``msgcube sync``: pull the datasets (one per datacube endpoint) into the user's own database.

Unlike the other commands, ``--db`` here names the *user's* database (the mirror), not
msgcube's own store: ``msgcube sync`` is a client and may run on a machine with no
msgcube server at all, against WeChat itself.
"""

from __future__ import annotations

import functools
import sys
from datetime import date, time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from msgcube.analytics.client import Analytics
from msgcube.analytics.url import parse_analytics_url
from msgcube.cli.common import sqlite_path
from msgcube.cli.sync_clickhouse import ClickHouseMirror
from msgcube.client import Client
from msgcube.client.protocol import DEFAULT_BASE_URL, http_url
from msgcube.client.schema import normalize_url
from msgcube.client.sync import Mirror, SyncAborted, SyncProgress, SyncReport, run_daily, sync
from msgcube.client.tokens import FileTokenCache
from msgcube.domain.endpoints import BY_NAME, SPAN_PROFILES, SpanProfile
from msgcube.domain.periods import DEFAULT_TZ
from msgcube.errors import ConfigError
from msgcube.settings import Settings

err = Console(stderr=True)


def _datasets(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise click.BadParameter(
            f"unknown dataset(s) {', '.join(unknown)}; expected {', '.join(BY_NAME)}"
        )
    return names


@click.command("sync")
@click.option("--appid", required=True)
@click.option(
    "--secret",
    envvar="MSGCUBE_SYNC_SECRET",
    required=True,
    help="AppSecret (or env MSGCUBE_SYNC_SECRET: keeps it out of `ps`).",
)
@click.option(
    "--base-url", default=DEFAULT_BASE_URL, show_default=True, help="WeChat, or a msgcube server."
)
@click.option(
    "--db",
    "db_url",
    required=True,
    help="Your database: a SQLAlchemy URL, a SQLite file path, or ClickHouse"
    " (chdb://DIR, clickhouse://user:pass@host:9000/db).",
)
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First day wanted (default: resume; 90 days back on a first run).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Last day wanted (default and maximum: yesterday).",
)
@click.option("--datasets", default=None, help="Comma-separated endpoint names (default: all).")
@click.option(
    "--token-api",
    type=click.Choice(["stable_token", "token"]),
    default="stable_token",
    show_default=True,
)
@click.option(
    "--token-cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Shared token cache directory (default: the user cache dir).",
)
@click.option(
    "--span-profile",
    type=click.Choice(SPAN_PROFILES),
    default=SpanProfile.CLASSIC.value,
    show_default=True,
)
@click.option("--tz", default=DEFAULT_TZ, show_default=True, help="The account's time zone.")
@click.option("--concurrency", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option(
    "--refresh-days",
    type=click.IntRange(0, 3660),
    default=0,
    show_default=True,
    metavar="N",
    help="Also fetch again the N days before where each dataset resumes (whole weeks and"
    " months): picks up late data the server recounted after they were mirrored.",
)
@click.option(
    "--watch",
    "watch_at",
    default=None,
    metavar="HH:MM",
    help="Keep running: sync now and then every day at this local time.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sync_command(
    appid: str,
    secret: str,
    base_url: str,
    db_url: str,
    since: object,
    until: object,
    datasets: str | None,
    token_api: str,
    token_cache: str | None,
    span_profile: str,
    tz: str,
    concurrency: int,
    refresh_days: int,
    watch_at: str | None,
    quiet: bool,
) -> None:
    """Pull every datacube dataset into your own database, incrementally (resumable)."""
    names = _datasets(datasets)
    begin = since.date() if hasattr(since, "date") else None
    end = until.date() if hasattr(until, "date") else None
    if begin and end and begin > end:
        raise click.BadParameter(f"{begin} is after --until {end}", param_hint="--since")
    target: str | Mirror = db_url
    if db_url.startswith(("chdb://", "clickhouse://")):
        try:
            url = parse_analytics_url(db_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--db") from exc
        assert url is not None
        target = ClickHouseMirror(Analytics(url))
    elif "://" not in db_url:
        db_url = target = "sqlite:///" + str(Path(db_url).expanduser())
    else:
        try:
            normalize_url(db_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--db") from exc
    mirror = sqlite_path(db_url)
    if mirror is not None and not mirror.parent.is_dir():
        # The mirror file is created on a first sync, its folder never: a typo'd path
        # must not silently become a new, empty mirror somewhere else.
        raise ConfigError(f"{mirror.parent}: no such folder for the database")
    # The one clock of every msgcube command: MSGCUBE_NOW pins "yesterday" here too.
    try:
        clock = Settings.load({}).clock
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    cache = FileTokenCache(Path(token_cache)) if token_cache else None
    try:
        http_url(base_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from exc
    client = Client(
        appid,
        secret,
        base_url=base_url,
        token_api=token_api,  # type: ignore[arg-type]
        token_cache=cache,
        span_profile=span_profile,
        tz=tz,
        clock=clock,
    )

    def once() -> SyncReport:
        return _run(client, target, appid, begin, end, names, concurrency, refresh_days, quiet)

    try:
        if watch_at is None:
            report = once()
        else:
            try:
                at = time.fromisoformat(watch_at)
            except ValueError as exc:
                raise click.BadParameter("expected HH:MM", param_hint="--watch") from exc
            run_daily(at, once, tz=tz, on_result=lambda r: click.echo(r.summary()), clock=clock)
            return
    except SyncAborted as exc:
        click.echo(exc.report.summary(), err=True)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        client.close()
        if isinstance(target, ClickHouseMirror):
            target.an.close()
    click.echo(report.summary())


def _run(
    client: Client,
    db_url: str | Mirror,
    appid: str,
    since: date | None,
    until: date | None,
    names: list[str] | None,
    concurrency: int,
    refresh_days: int,
    quiet: bool,
) -> SyncReport:
    run = functools.partial(
        sync,
        client,
        db_url,
        appid,
        since,
        until,
        names,
        concurrency=concurrency,
        refresh_days=refresh_days,
    )
    if quiet or not err.is_terminal:
        return run()
    columns = (
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]} rows"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(p: SyncProgress) -> None:
            if p.dataset not in tasks:
                tasks[p.dataset] = bar.add_task(p.dataset, total=p.windows_total, rows=0)
            bar.update(
                tasks[p.dataset],
                completed=p.windows_done,
                total=p.windows_total,
                rows=p.rows_written,
            )

        return run(progress)
