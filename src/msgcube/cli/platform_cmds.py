"""``msgcube platform add|set|ticket|authorize|revoke|list|accounts|forget``: third-party
platforms.

Registered by ``cli/main.py``; the shared helpers come from ``cli/common.py``. Each
command prints what a script needs on its **last** line (the secret, the ticket, the
refresh token), so ``msgcube platform ticket … | tail -1`` is all a script has to do.
The same library functions serve the admin API (``web/admin.py``).
"""

from __future__ import annotations

import secrets
from typing import Any

import click

from msgcube.auth.platforms import (
    DEFAULT_ACCOUNT_LIMIT,
    authorize_platform,
    change_platform,
    current_ticket,
    describe_platform,
    describe_platform_account,
    parse_func_ids,
    register_platform,
    remove_platform_account,
    require_platform,
    revoke_authorization,
)
from msgcube.cli.common import opened, require_account, with_settings
from msgcube.errors import PlatformError
from msgcube.settings import Settings
from msgcube.storage.platforms import (
    list_authorizations,
    list_platforms,
    platform_accounts,
)

TOKEN_HELP_TEXT = "The platform's Token: signs ticket pushes and the pushes to its message URL."  # noqa: S105
AES_KEY_HELP = "The platform's EncodingAESKey (43 characters)."
UPSTREAM_HELP = "The platform's own message URL ($APPID$ is replaced): pushes are relayed to it."
LIMIT_HELP = "How many accounts its message URL may create (0: none)."


def _line(fields: dict[str, object], *, yes_no: bool = False) -> str:
    """``value`` of the first field, then ``name:value`` tab-separated (``-`` for empty)."""
    items = list(fields.items())

    def text(value: object) -> str:
        if isinstance(value, bool):
            return ("yes" if value else "no") if yes_no else ("set" if value else "-")
        if isinstance(value, list):
            return ",".join(map(str, value)) or "-"
        return str(value) if value not in ("", None) else "-"

    return "\t".join([text(items[0][1]), *(f"{k}:{text(v)}" for k, v in items[1:])])


def _now(settings: Settings) -> int:
    return int(settings.clock().timestamp())


@click.group("platform")
def platform_group() -> None:
    """Third-party platforms: register, tickets, authorizations."""


@platform_group.command("add")
@click.option("--component-appid", required=True)
@click.option("--component-secret", default=None, help="Generated and printed when omitted.")
@click.option("--ticket-url", default="", help="Where component_verify_ticket is pushed.")
@click.option("--token", "push_token", default="", help=TOKEN_HELP_TEXT)
@click.option("--aes-key", default=None, help=AES_KEY_HELP)
@click.option("--upstream", "upstream_url", default="", help=UPSTREAM_HELP)
@click.option("--account-limit", type=int, default=DEFAULT_ACCOUNT_LIMIT, help=LIMIT_HELP)
@with_settings
def platform_add(
    component_appid: str,
    component_secret: str | None,
    settings: Settings,
    **values: Any,
) -> None:
    """Register a platform. The last line printed is the component appid and secret."""
    secret = component_secret or secrets.token_hex(16)
    with opened(settings, create=True) as store, store.write() as conn:
        register_platform(
            conn, component_appid=component_appid, secret=secret, now=_now(settings), **values
        )
    click.echo(f"{component_appid} {secret}")


@platform_group.command("set")
@click.option("--component-appid", required=True)
@click.option("--ticket-url", default=None, help="Where component_verify_ticket is pushed.")
@click.option("--token", "push_token", default=None, help=TOKEN_HELP_TEXT)
@click.option("--aes-key", default=None, help=AES_KEY_HELP + " The old one stays as previous.")
@click.option("--upstream", "upstream_url", default=None, help=UPSTREAM_HELP + " '' removes it.")
@click.option("--account-limit", type=int, default=None, help=LIMIT_HELP)
@with_settings
def platform_set(component_appid: str, settings: Settings, **changes: Any) -> None:
    """Change a platform's Token, EncodingAESKey, upstream, ticket URL or account limit."""
    with opened(settings) as store, store.write() as conn:
        platform = require_platform(conn, component_appid)
        change_platform(conn, platform, **changes)
    click.echo(f"updated {component_appid}")


@platform_group.command("accounts")
@click.option("--component-appid", required=True)
@with_settings
def platform_accounts_cmd(component_appid: str, settings: Settings) -> None:
    """List the accounts a platform feeds: created by its message URL, or authorized by hand."""
    with opened(settings) as store, store.read() as conn:
        platform = require_platform(conn, component_appid)
        for row in platform_accounts(conn, platform.id):
            click.echo(_line(describe_platform_account(row), yes_no=True))


@platform_group.command("forget")
@click.option("--component-appid", required=True)
@click.option("--appid", required=True)
@with_settings
def platform_forget(component_appid: str, appid: str, settings: Settings) -> None:
    """Delete an account the platform's message URL created, with all its data."""
    with opened(settings) as store, store.write() as conn:
        remove_platform_account(conn, require_platform(conn, component_appid), appid)
    click.echo(f"removed {appid}")


@platform_group.command("ticket")
@click.option("--component-appid", required=True)
@with_settings
def platform_ticket(component_appid: str, settings: Settings) -> None:
    """Print the platform's current component_verify_ticket (last line)."""
    with opened(settings) as store, store.read() as conn:
        platform = require_platform(conn, component_appid)
    click.echo(current_ticket(platform, _now(settings)).ticket)


@platform_group.command("authorize")
@click.option("--component-appid", required=True)
@click.option("--appid", required=True, help="The authorizing account.")
@click.option("--func", "funcs", required=True, help="Permission-set ids, e.g. 1,2,3.")
@with_settings
def platform_authorize(component_appid: str, appid: str, funcs: str, settings: Settings) -> None:
    """Record an account's authorization; the last line is the authorizer_refresh_token."""
    try:
        func_ids = parse_func_ids(funcs)
    except PlatformError as exc:
        raise click.BadParameter(str(exc), param_hint="--func") from exc
    with opened(settings) as store:
        account = require_account(store, appid)
        with store.write() as conn:
            platform = require_platform(conn, component_appid)
            auth, refresh = authorize_platform(conn, platform, account, func_ids, _now(settings))
    click.echo(f"{appid} authorized {component_appid} for {','.join(map(str, auth.func_ids))}")
    click.echo(refresh)


@platform_group.command("revoke")
@click.option("--component-appid", required=True)
@click.option("--appid", required=True)
@with_settings
def platform_revoke(component_appid: str, appid: str, settings: Settings) -> None:
    """End an authorization: the platform's tokens for the account stop working now."""
    with opened(settings) as store:
        account = require_account(store, appid)
        with store.write() as conn:
            platform = require_platform(conn, component_appid)
            ended = revoke_authorization(conn, platform, account, _now(settings))
    click.echo(f"revoked {component_appid} for {appid} ({ended} live tokens ended)")


@platform_group.command("list")
@with_settings
def platform_list(settings: Settings) -> None:
    """List platforms and their authorizations."""
    with opened(settings) as store, store.read() as conn:
        for p in list_platforms(conn):
            click.echo(_line(describe_platform(p)))
            for a in list_authorizations(conn, p.id):
                state = "revoked" if a["revoked_at"] is not None else "active"
                click.echo(f"  {a['appid']}\tfunc:{a['func_ids']}\t{state}")
