"""``msgcube platform add|ticket|authorize|revoke|list``: the last line is what a script needs."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner, Result

from msgcube.auth.platforms import check_ticket, exchange_refresh_token
from msgcube.cli.main import cli
from msgcube.errors import ApiError
from msgcube.storage.accounts import get_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import get_platform
from support.api import new_account, shanghai
from support.app_secrets import secret_ok

from conftest import PG_URL, fresh_appid

T0 = shanghai(2026, 3, 10, 10)
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def run(store: Store, *args: str) -> Result:
    db = str(store.engine.url) if store.is_sqlite else PG_URL
    env = {"MSGCUBE_CONFIG": "/dev/null", "MSGCUBE_DB": db, "MSGCUBE_NOW": T0.isoformat()}
    return CliRunner().invoke(cli, list(args), env=env)


def last_line(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[-1]


def test_the_platform_commands_print_what_a_script_needs(store: Store) -> None:
    component_appid, appid = fresh_appid("wxclic"), fresh_appid("wxclia")
    new_account(store, appid, "s")
    added = last_line(
        run(
            store,
            "platform",
            "add",
            "--component-appid",
            component_appid,
            "--ticket-url",
            "https://platform.test/events",
            "--token",
            "t",
            "--aes-key",
            AES_KEY,
        )
    )
    name, secret = added.split(" ")
    assert name == component_appid and len(secret) == 32
    now = int(T0.timestamp())
    with store.read() as conn:
        platform = get_platform(conn, component_appid)
        assert platform is not None
        assert secret_ok(conn, platform.secret_hash, secret)
        assert not secret_ok(conn, platform.secret_hash, secret + "x")
    # Keyed as an account's AppSecret: a table of SHA-256s of likely secrets finds nothing.
    assert platform.secret_hash != hashlib.sha256(secret.encode()).hexdigest()

    ticket = last_line(run(store, "platform", "ticket", "--component-appid", component_appid))
    check_ticket(platform, ticket, now)

    refresh = last_line(
        run(
            store,
            "platform",
            "authorize",
            "--component-appid",
            component_appid,
            "--appid",
            appid,
            "--func",
            "2, 1",
        )
    )
    assert refresh.startswith("refreshtoken@@@")
    with store.write() as conn:
        account = get_account(conn, appid)
        assert account is not None
        grant = exchange_refresh_token(conn, platform, account, refresh, now)
    assert grant.expires_in == 7200

    listing = run(store, "platform", "list")
    assert listing.exit_code == 0
    assert f"{appid}\tfunc:1,2\tactive" in listing.output

    revoked = last_line(
        run(store, "platform", "revoke", "--component-appid", component_appid, "--appid", appid)
    )
    assert revoked == f"revoked {component_appid} for {appid} (1 live tokens ended)"
    with store.write() as conn, pytest.raises(ApiError) as failure:
        exchange_refresh_token(conn, platform, account, grant.authorizer_refresh_token, now)
    assert failure.value.errcode == 61003


def test_the_platform_commands_refuse_what_they_cannot_do(store: Store) -> None:
    component_appid, appid = fresh_appid("wxclic"), fresh_appid("wxclia")
    new_account(store, appid, "s")
    assert run(
        store,
        "platform",
        "add",
        "--component-appid",
        component_appid,
        "--component-secret",
        "given",
    ).output.splitlines()[-1] == (f"{component_appid} given")
    cases = [
        (("platform", "add", "--component-appid", component_appid), "already exists"),
        (
            (
                "platform",
                "add",
                "--component-appid",
                fresh_appid("wxclic"),
                "--ticket-url",
                "https://p.test/e",
            ),
            "needs --token and --aes-key",
        ),
        (("platform", "ticket", "--component-appid", "wxnobody"), "unknown platform"),
        (
            (
                "platform",
                "authorize",
                "--component-appid",
                component_appid,
                "--appid",
                appid,
                "--func",
                "x",
            ),
            "not a permission-set id",
        ),
        (
            (
                "platform",
                "authorize",
                "--component-appid",
                component_appid,
                "--appid",
                "wxnobody",
                "--func",
                "1",
            ),
            "unknown appid",
        ),
        (
            ("platform", "revoke", "--component-appid", component_appid, "--appid", appid),
            "has not authorized",
        ),
    ]
    for args, message in cases:
        result = run(store, *args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
