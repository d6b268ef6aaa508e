"""A real ``msgcube serve`` in a subprocess, on a free port, over a temporary database.

The tests that need a real HTTP server (the wechatpy conformance test, the benchmark)
drive msgcube exactly as a user does: the ``msgcube`` command with ``MSGCUBE_*``
variables. The environment is built from scratch (inherited ``MSGCUBE_*`` variables
are dropped and ``MSGCUBE_CONFIG`` points at nothing), so a stray ``msgcube.toml`` or
shell setting cannot leak in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

MSGCUBE = str(Path(sys.executable).with_name("msgcube"))
"""The ``msgcube`` console script of the running interpreter's environment."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def msgcube_env(db: str | Path, now: str = "", **settings: object) -> dict[str, str]:
    """The environment of a ``msgcube`` command: this database, this clock, these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGCUBE_")}
    env["MSGCUBE_CONFIG"] = os.devnull
    env["MSGCUBE_DB"] = str(db)
    if now:
        env["MSGCUBE_NOW"] = now
    for name, value in settings.items():
        env[f"MSGCUBE_{name.upper()}"] = str(value)
    return env


def run_msgcube(
    *args: str, env: Mapping[str, str], cwd: str | Path | None = None, timeout: float = 300
) -> str:
    """Run ``msgcube ARGS`` to completion; its stdout, or ``RuntimeError`` with its stderr."""
    proc = subprocess.run(
        [MSGCUBE, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"msgcube {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


class ServerProcess:
    """``msgcube serve`` on 127.0.0.1 and a free port; its output goes to ``log_path``.

    Use as a context manager, or call ``start()`` / ``stop()``. ``restart(now=...)``
    starts it again over the same database with another pinned clock.
    """

    def __init__(
        self,
        db: str | Path,
        workdir: str | Path,
        *,
        now: str = "",
        workers: int = 1,
        startup_timeout: float = 30.0,
        **settings: object,
    ) -> None:
        self.db = str(db)
        self.workdir = Path(workdir)
        self.now = now
        self.workers = workers
        self.settings = settings
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "serve.log"
        self._starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self, since: int = 0) -> str:
        """What every run of the server has written so far (after the mark ``since``)."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", errors="replace")

    def wait_log(self, needle: str, *, since: int = 0, timeout: float = 10.0) -> str:
        """The log (after ``since``) once it contains ``needle``: lines land after answers."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text(since)
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the server log:\n{text}")
            time.sleep(0.02)

    def log_size(self) -> int:
        """A mark in the log: ``log_text(since=mark)`` is what was written after it."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def start(self) -> ServerProcess:
        """Start and wait for ``/healthz``; a restart keeps the port when it is still free."""
        last_error = ""
        for attempt in range(3):  # a free port can be taken between probe and bind
            if attempt or not self.port:
                self.port = free_port()
            env = msgcube_env(
                self.db,
                self.now,
                host="127.0.0.1",
                port=self.port,
                workers=self.workers,
                log_level="info",
                access_log="all",
                **self.settings,
            )
            self._starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {self._starts}: now={self.now!r}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [MSGCUBE, "serve"],
                    env=env,
                    cwd=self.workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_healthy()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
        raise RuntimeError(f"msgcube serve did not start: {last_error}\n{self.log_text()}")

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"/healthz did not answer within {self.startup_timeout}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM (workers included)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its workers
            proc.wait(timeout=5)

    def restart(self, *, now: str | None = None) -> ServerProcess:
        self.stop()
        if now is not None:
            self.now = now
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(db: str | Path, workdir: str | Path, **kwargs: object) -> Iterator[ServerProcess]:
    """``with serving(db, tmp_path, now=...) as server: server.base_url ...``"""
    server = ServerProcess(db, workdir, **kwargs)  # type: ignore[arg-type]
    with server:
        yield server
