"""The CLI's one error edge, through the real ``msgcube`` command (a subprocess, as a user runs it).

A missing or directory input, a database that does not exist or cannot be reached, a
sync target that refuses connections: one line on stderr, exit status 1, never a
traceback — and nothing created on the way (no empty database for a typo'd ``--db``, no
stray rejects file).
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from msgcube.client import Client, FileTokenCache, NetworkError
from msgcube.client.protocol import Attempts, Backoff
from msgcube.settings import Settings
from msgcube.storage.db import open_store
from msgcube.web.app import create_app
from support.server import MSGCUBE, free_port, msgcube_env

NOW = "2026-03-10T12:00:00+08:00"


@dataclass
class Run:
    code: int
    out: str
    err: str


def msgcube(env: dict[str, str], *args: str, cwd: Path | None = None) -> Run:
    proc = subprocess.run(
        [MSGCUBE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def one_line_error(run: Run, *fragments: str) -> None:
    assert run.code == 1, run
    assert "Traceback" not in run.err, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = msgcube_env(tmp_path / "m.db", now=NOW)
    assert msgcube(env, "account", "add", "--appid", "wxerr", "--secret", "s").code == 0
    return env


@pytest.mark.parametrize(
    "command",
    [
        ["import", "--appid", "wxerr"],
        ["followers", "import", "--appid", "wxerr"],
        ["replay", "--appid", "wxerr", "--token", "t", "--url", "http://127.0.0.1:9"],
    ],
)
def test_missing_or_directory_input_is_one_line(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nothing.jsonl"
    one_line_error(msgcube(env, *command, str(missing)), str(missing))
    (tmp_path / "folder").mkdir()
    one_line_error(msgcube(env, *command, str(tmp_path / "folder")), "folder", "directory")
    assert not list(tmp_path.glob("*.rejects")), "a rejects file for an import that never ran"


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "getupstreammsg", "2026-03-01", "2026-03-02", "--appid", "wxerr"],
        ["account", "list"],
        ["rollup"],
        ["quarantine", "list"],
        ["followers", "import", "--appid", "wxerr", "-"],
    ],
)
def test_reading_commands_do_not_create_a_database(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo" / "m.db"
    run = msgcube(msgcube_env(typo, now=NOW), *command)
    one_line_error(run, f"database {typo} does not exist")
    assert not typo.parent.exists()


def test_creating_commands_still_create(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "m.db"
    run = msgcube(msgcube_env(fresh), "account", "add", "--appid", "wxnew", "--secret", "s")
    assert run.code == 0, run.err
    assert fresh.is_file()


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody:x@127.0.0.1:{free_port()}/none"
    one_line_error(msgcube(msgcube_env(url), "account", "list"), "database:", "refused")


def sync_args(db: str, port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    return ["sync", "--appid", "wxerr", "--secret", "s", "--base-url", base, "--db", db]


def test_sync_to_a_closed_port_fails_with_one_error_and_the_pinned_day(tmp_path: Path) -> None:
    env = msgcube_env(tmp_path / "unused.db", now=NOW)
    run = msgcube(env, *sync_args(str(tmp_path / "mirror.db"), free_port()), "--quiet")
    assert run.code == 1 and "Traceback" not in run.err
    assert "Connection refused" in run.err
    # MSGCUBE_NOW pins sync's clock like every other command's: yesterday is 9 March.
    assert "sync wxerr up to 2026-03-09" in run.err


def test_sync_refuses_a_missing_folder_and_a_reversed_range(tmp_path: Path) -> None:
    env = msgcube_env(tmp_path / "unused.db", now=NOW)
    typo = tmp_path / "typo" / "mirror.db"
    one_line_error(msgcube(env, *sync_args(str(typo), free_port())), "typo", "no such folder")
    assert not typo.parent.exists()
    reversed_range = ["--since", "2026-03-05", "--until", "2026-03-01"]
    run = msgcube(env, *sync_args(str(tmp_path / "m.db"), free_port()), *reversed_range)
    assert run.code == 2 and "2026-03-05 is after --until 2026-03-01" in run.err
    assert "up to date" not in run.out + run.err


def test_connection_refused_is_not_retried(tmp_path: Path) -> None:
    """Retrying a refused connection only delays the error (it took 24 s): no backoff."""
    slept: list[float] = []
    with (
        Client(
            "wxerr",
            "s",
            base_url=f"http://127.0.0.1:{free_port()}",
            token_cache=FileTokenCache(tmp_path / "tokens"),
            sleep=slept.append,
        ) as client,
        pytest.raises(NetworkError) as raised,
    ):
        client.get_upstream_msg("2026-03-01", "2026-03-01")
    assert raised.value.refused
    assert slept == []
    # Other network failures keep their backoff.
    attempts = Attempts(0, Backoff(), random.Random(1))
    assert attempts.next(NetworkError("timeout")) is not None


@pytest.mark.parametrize(
    ("args", "extra_env", "fragments"),
    [
        (
            ["account", "set", "--appid", "wxerr", "--daily-quota", "9" * 23],
            {},
            ["daily_quota: must be 0 to 2147483647"],
        ),
        (["account", "set", "--appid", "wxerr", "--secret", ""], {}, ["secret must not be empty"]),
        (["settings"], {"MSGCUBE_QUOTA_DATACUBE": "9" * 23}, ["MSGCUBE_QUOTA_DATACUBE"]),
        (["account", "list"], {"MSGCUBE_DB": "mysql://x/y"}, ["MSGCUBE_DB", "mysql://"]),
        (["quarantine", "show", "9" * 23], {}, ["9" * 23, "range"]),
        (["quarantine", "replay", "9" * 23], {}, ["9" * 23, "range"]),
        (["generate", "--appid", "wxerr", "--end", "garbage"], {}, ["--end", "garbage"]),
        (
            ["sync", "--appid", "wxerr", "--secret", "s", "--db", "x.db"],
            {},
            ["--base-url", "no host"],
        ),
        (
            ["sync", "--appid", "wxerr", "--secret", "s", "--base-url", "http://127.0.0.1:9"],
            {},
            ["--db", "mysql://"],
        ),
        (
            ["replay", "--appid", "wxerr", "--token", "t", "--url", "notaurl"],
            {},
            ["--url", "http:// or https://"],
        ),
    ],
)
def test_bad_values_are_one_line_never_a_traceback(
    env: dict[str, str],
    tmp_path: Path,
    args: list[str],
    extra_env: dict[str, str],
    fragments: list[str],
) -> None:
    """Values that reached a driver or a parser unchecked used to end in a traceback (an
    OverflowError, a missing MySQLdb, httpx.InvalidURL, date.fromisoformat …)."""
    if args[0] == "sync":
        # The two sync cases each break one of --base-url and --db.
        args = [*args, "--base-url", "http://"] if "--db" in args else [*args, "--db", "mysql://x"]
    if args[0] == "replay":
        pushes = tmp_path / "p.jsonl"
        pushes.write_text("{}\n")
        args = [*args, str(pushes)]
    run = msgcube({**env, **extra_env}, *args, cwd=tmp_path)
    assert run.code in (1, 2), run
    assert "Traceback" not in run.err, run.err
    assert run.err.strip(), run
    last = run.err.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last


def test_a_broken_follower_file_is_one_line_and_changes_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_bytes(b"fan1\nfan2\n")
    bad.write_bytes(b"fan3\n\xa3\xff\n")
    assert msgcube(env, "followers", "import", "--appid", "wxerr", str(good)).code == 0
    one_line_error(
        msgcube(env, "followers", "import", "--appid", "wxerr", str(bad)), f"{bad}:2: not UTF-8"
    )


def test_a_client_refuses_a_url_it_cannot_call() -> None:
    """An unusable base URL used to fail only at the first call, as a network error
    retried with backoff for 20 s (``notaurl``) or as ``httpx.InvalidURL``."""
    for url in ("notaurl", "ftp://host", "http://", "http://[::1", "http://h:99999"):
        with pytest.raises(ValueError, match="base URL"):
            Client("wxerr", "s", base_url=url)


def test_serve_help_lists_its_options() -> None:
    run = msgcube(msgcube_env("unused.db"), "serve", "--help")
    assert run.code == 0
    for flag in ("--db", "--host", "--port", "--workers"):
        assert flag in run.out


async def test_the_root_redirects_to_the_dashboard(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        app = create_app(Settings(), store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/")
        assert response.status_code == 302
        assert response.headers["location"] == "/dashboard"
    finally:
        store.dispose()
