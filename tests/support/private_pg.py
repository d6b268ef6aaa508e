"""A private PostgreSQL server for fault tests: initdb into a temporary directory, pg_ctl on
a free port, stopped and restarted at will, removed at the end.

The shared server (``MSGCUBE_TEST_PG``) is never touched: other tests and other runs use
it. Run as root, the server runs as the ``postgres`` user (PostgreSQL refuses root).
Without PostgreSQL's binaries the test is skipped locally; in CI (``CI`` set) it fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from support.server import free_port


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PrivatePostgres:
    """One server in ``root``; ``url`` names its ``postgres`` database."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "pg.log"
        self.root = root
        self.port = free_port()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://msgcube@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=self.root,
            **self._as,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "msgcube", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl -m fast restart``: every connection is cut, the server comes back."""
        data, log = str(self.data), str(self.log)
        self._run("pg_ctl", "-D", data, "-l", log, "-m", "fast", "-w", "restart")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server; stopped and deleted afterwards.

    Its directory is made directly under the system's temporary directory: pytest's
    ``tmp_path`` sits below a directory only its owner may enter, and the server may run
    as another user.
    """
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's binaries (initdb, pg_ctl) are missing in CI")
        pytest.skip("PostgreSQL's binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="msgcube-pg-"))
    server = PrivatePostgres(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with suppress(subprocess.SubprocessError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
