"""``msgcube platform add|ticket|authorize|revoke|list``: third-party platforms.

Registered by ``cli/main.py``; the shared helpers come from ``cli/common.py``. Each
command prints what a script needs on its **last** line (the secret, the ticket, the
refresh token), so ``msgcube platform ticket … | tail -1`` is all a script has to do.
The same library functions serve the admin API (``web/admin.py``).
"""

from __future__ import annotations

import secrets

import click

from msgcube.auth.platforms import (
    authorize_platform,
    current_ticket,
    parse_func_ids,
    register_platform,
    require_platform,
    revoke_authorization,
)
from msgcube.cli.common import opened, require_account, with_settings
from msgcube.errors import NotFound, PlatformError
from msgcube.settings import Settings
from msgcube.storage.platforms import list_authorizations, list_platforms


def _now(settings: Settings) -> int:
    return int(settings.clock().timestamp())


@click.group("platform")
def platform_group() -> None:
    """Third-party platforms: register, tickets, authorizations."""


@platform_group.command("add")
@click.option("--component-appid", required=True)
@click.option("--component-secret", default=None, help="Generated and printed when omitted.")
@click.option("--ticket-url", default="", help="Where component_verify_ticket is pushed.")
@click.option("--token", "push_token", default="", help="Token that signs the ticket pushes.")
@click.option("--aes-key", default=None, help="EncodingAESKey that encrypts the ticket pushes.")
@with_settings
def platform_add(
    component_appid: str,
    component_secret: str | None,
    ticket_url: str,
    push_token: str,
    aes_key: str | None,
    settings: Settings,
) -> None:
    """Register a platform. The last line printed is the component appid and secret."""
    secret = component_secret or secrets.token_hex(16)
    with opened(settings, create=True) as store, store.write() as conn:
        try:
            register_platform(
                conn, component_appid=component_appid, secret=secret, now=_now(settings),
                ticket_url=ticket_url, push_token=push_token, aes_key=aes_key,
            )  # fmt: skip
        except PlatformError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"{component_appid} {secret}")


@platform_group.command("ticket")
@click.option("--component-appid", required=True)
@with_settings
def platform_ticket(component_appid: str, settings: Settings) -> None:
    """Print the platform's current component_verify_ticket (last line)."""
    with opened(settings) as store, store.read() as conn:
        try:
            platform = require_platform(conn, component_appid)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc
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
            try:
                platform = require_platform(conn, component_appid)
            except NotFound as exc:
                raise click.ClickException(str(exc)) from exc
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
            try:
                platform = require_platform(conn, component_appid)
                ended = revoke_authorization(conn, platform, account, _now(settings))
            except NotFound as exc:
                raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {component_appid} for {appid} ({ended} live tokens ended)")


@platform_group.command("list")
@with_settings
def platform_list(settings: Settings) -> None:
    """List platforms and their authorizations."""
    with opened(settings) as store, store.read() as conn:
        for p in list_platforms(conn):
            click.echo(f"{p.component_appid}\tticket_url:{p.ticket_url or '-'}")
            for a in list_authorizations(conn, p.id):
                state = "revoked" if a["revoked_at"] is not None else "active"
                click.echo(f"  {a['appid']}\tfunc:{a['func_ids']}\t{state}")
