"""``msgcube import`` through the real CLI, for the import tests: an environment per test
(a fresh SQLite file, a pinned clock, no config file, the parser named), a runner and a
new account."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from msgcube.cli.main import cli

from conftest import fresh_appid


def import_env(tmp_path: Path, now: str, parser: str) -> dict[str, str]:
    """``parser``: ``process`` (lines parsed by a parser process) or ``inline``."""
    return {
        "MSGCUBE_DB": str(tmp_path / "m.db"),
        "MSGCUBE_NOW": now,
        "MSGCUBE_CONFIG": "/dev/null",  # no config file
        "MSGCUBE_IMPORT_PARSER": parser,
    }


def run(env: dict[str, str], *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of one CLI call."""
    result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def add(env: dict[str, str]) -> str:
    """A new account (secret ``s3cret``); its appid."""
    appid = fresh_appid()
    code, out, _ = run(env, "account", "add", "--appid", appid, "--secret", "s3cret")
    assert code == 0 and out.strip() == f"{appid} s3cret"
    return appid
