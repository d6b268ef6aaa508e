"""What every ``msgcube`` sub-command shares: the settings flags, the store, the error edge.

Sub-command modules import from here and ``cli/main.py`` imports them, so imports run one
way only (main → commands → common). ``MsgcubeGroup`` is the CLI's one exception
boundary: errors msgcube expects (its own tree, the client's, files that cannot be read,
databases that cannot be reached) become one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from msgcube.domain.identifiers import is_appid
from msgcube.errors import ConfigError, MsgcubeError
from msgcube.settings import SETTINGS, Settings
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.db import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True)
out = Console()

SETTINGS_EPILOG = "Every setting is also a flag (--db, --port, …): see `msgcube settings --help`."


def expected(exc: BaseException) -> bool:
    """Whether the CLI reports ``exc`` in one line; anything else is a bug and keeps its
    traceback. The client's errors count only once the client was loaded (a command
    that never loads it cannot raise them): loading it costs every command's start."""
    client_errors = sys.modules.get("msgcube.client.errors")
    return isinstance(exc, (MsgcubeError, OSError, SQLAlchemyError)) or (
        client_errors is not None and isinstance(exc, client_errors.ClientError)
    )


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without the driver's multi-line decorations."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        text = str(orig) if orig is not None else str(exc)
        return "database: " + (text.strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MsgcubeGroup(click.Group):
    """The top-level group: translates expected errors once, for every sub-command.

    Sub-commands kept in modules of their own are named in ``lazy`` (name →
    ``module:attribute``) and imported only when they run or a listing (``--help``, the
    reference tables) names them: every command starts with its own imports alone.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not expected(exc):
                raise
            raise click.ClickException(describe(exc)) from exc


def with_settings(func: F) -> F:
    """Add one ``--x`` option per setting and pass the resolved ``settings``.

    The options are hidden from each command's help (they are the same everywhere) and
    listed once by ``msgcube settings --help``.
    """
    return settings_options(func, hidden=True)


def with_listed_settings(func: F) -> F:
    """Like ``with_settings``, with the options in the command's own help (``serve``)."""
    return settings_options(func, hidden=False)


def settings_options(func: F, *, hidden: bool) -> F:
    """One option per row of the settings table, resolved into ``settings`` for ``func``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {s.name: kwargs.pop(s.name, None) for s in SETTINGS}
        kwargs["settings"] = Settings.load(flags)  # a ConfigError: the group's one edge
        return func(*args, **kwargs)

    return add_setting_flags(wrapper, hidden=hidden)  # type: ignore[return-value]


def add_setting_flags(func: F, *, hidden: bool) -> F:
    """Decorate ``func`` with one ``--x`` option per setting (no resolution)."""
    for setting in reversed(SETTINGS):
        func = click.option(
            setting.flag,
            setting.name,
            default=None,
            metavar=setting.name.upper(),
            help=f"{setting.help} [env {setting.env}]",
            hidden=hidden,
        )(func)
    return func


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser()


def require_database(url: str) -> None:
    """Refuse a SQLite database that does not exist yet (a command that only reads).

    Opening would create the folders and an empty database — for a typo'd ``--db`` that
    hides the mistake behind empty answers. (PostgreSQL refuses a missing database itself.)
    """
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(
            f"database {path} does not exist (create it with `msgcube account add`, "
            "`msgcube import` or `msgcube demo`)"
        )


@contextlib.contextmanager
def opened(settings: Settings, *, create: bool = False) -> Iterator[Store]:
    """The store of ``settings``; only commands that create data pass ``create=True``."""
    if not create:
        require_database(settings.db_url)
    store = open_store(settings.db_url, analytics=settings.analytics_db)
    try:
        yield store
    finally:
        store.dispose()


def require_account(store: Store, appid: str) -> Account:
    # An appid no account can have (a NUL byte, too long) is unknown without asking the
    # database, which on PostgreSQL could not even run the query.
    account = None
    if is_appid(appid):
        with store.read() as conn:
            account = get_account(conn, appid)
    if account is None:
        raise click.ClickException(f"unknown appid {appid!r} (add it with `msgcube account add`)")
    return account


def require_files(paths: tuple[str, ...]) -> None:
    """Refuse, before any work, an input that is missing or a folder (``-`` is stdin)."""
    for path in paths:
        if path != "-" and not Path(path).is_file():
            reason = "is a directory, not a file" if Path(path).is_dir() else "no such file"
            raise ConfigError(f"{path}: {reason}")


@contextlib.contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """A file given on the command line (``-`` is stdin), opened for reading bytes."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as handle:
        yield handle
