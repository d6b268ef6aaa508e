"""msgcube as a user deploys it: a ``db`` file, optionally an ``analytics_db``, its CLI, its server.

The ClickHouse tests run the same commands against two deployments — SQLite alone, and
SQLite for accounts plus ClickHouse for messages and statistics — and compare what they
answer with the oracle and with each other. Everything goes through the ``msgcube``
command and a real ``msgcube serve`` (``support.server``), with the settings as
``MSGCUBE_*`` variables, exactly as a user would configure them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.storage.accounts import get_account
from msgcube.storage.db import open_store
from support.server import ServerProcess, msgcube_env, run_msgcube

from oracle import OracleAccount

Rows = list[dict[str, object]]


@dataclass
class Deployment:
    """One msgcube installation: a working directory, its SQLite ``db`` and ``analytics_db``."""

    workdir: Path
    now: str
    analytics_db: str | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def db(self) -> Path:
        return self.workdir / "msgcube.db"

    def settings(self) -> dict[str, object]:
        return {} if self.analytics_db is None else {"analytics_db": self.analytics_db}

    def env(self) -> dict[str, str]:
        return msgcube_env(self.db, self.now, **self.settings())

    def run(self, *args: str, timeout: float = 600) -> str:
        """``msgcube ARGS`` in this deployment; its stdout (RuntimeError on a non-zero exit)."""
        return run_msgcube(*args, env=self.env(), cwd=self.workdir, timeout=timeout)

    def add_account(self, appid: str, secret: str, token: str = "") -> None:
        args = ["account", "add", "--appid", appid, "--secret", secret]
        self.run(*args, *(["--token", token] if token else []))

    def account_id(self, appid: str) -> int:
        """The account's id in ``db``: the key its rows carry in ClickHouse."""
        store = open_store(f"sqlite:///{self.db}")
        try:
            with store.read() as conn:
                account = get_account(conn, appid)
        finally:
            store.dispose()
        assert account is not None, appid
        return account.id

    def server(self, workers: int = 1) -> ServerProcess:
        """``msgcube serve`` over this deployment (not started: use it as a context manager)."""
        return ServerProcess(
            self.db, self.workdir, now=self.now, workers=workers, **self.settings()
        )


def token_of(base_url: str, appid: str, secret: str) -> str:
    answer = httpx.get(
        base_url + "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": appid, "secret": secret},
        timeout=30,
    ).json()
    assert "access_token" in answer, answer
    return str(answer["access_token"])


def datacube(base_url: str, token: str, endpoint: str, begin: str, end: str) -> dict[str, object]:
    """One datacube call's JSON answer (the HTTP status must be 200, as WeChat's always is)."""
    answer = httpx.post(
        f"{base_url}/datacube/{endpoint}",
        params={"access_token": token},
        content=orjson.dumps({"begin_date": begin, "end_date": end}),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = orjson.loads(answer.content)
    return body


def windows(first: date, last: date, span: int) -> Iterator[tuple[str, str]]:
    """[first, last] cut into consecutive windows of at most SPAN days."""
    day = first
    while day <= last:
        end = min(last, day + timedelta(days=span - 1))
        yield day.isoformat(), end.isoformat()
        day = end + timedelta(days=1)


def calls(first: date, last: date) -> Iterator[tuple[str, str, str]]:
    """(endpoint, begin, end) covering [first, last] for each of the seven endpoints.

    Windows of at most 7 days (1 for the hourly endpoint) so that week and month
    labels fall inside some windows and outside others.
    """
    for ep in ENDPOINTS:
        if not ep.name.startswith("getupstreammsg"):
            continue
        span = 1 if ep.name == "getupstreammsghour" else min(ep.span_classic, 7)
        for begin, end in windows(first, last, span):
            yield ep.name, begin, end


def served(
    base_url: str, appid: str, secret: str, first: date, last: date
) -> dict[tuple[str, str, str], Rows]:
    """Every list the API serves for the account over [first, last], by (endpoint, begin, end)."""
    token = token_of(base_url, appid, secret)
    out: dict[tuple[str, str, str], Rows] = {}
    for key in calls(first, last):
        body = datacube(base_url, token, *key)
        assert "list" in body, (key, body)
        out[key] = body["list"]  # type: ignore[assignment]
    return out


def oracle_answers(
    oracle: OracleAccount, now: datetime, first: date, last: date
) -> Mapping[tuple[str, str, str], Rows]:
    """What the oracle serves for the same calls as :func:`served`."""
    return {key: oracle.served(*key, now) for key in calls(first, last)}
