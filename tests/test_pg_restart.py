"""PostgreSQL restarted or stopped under a running ``msgcube serve``: the API answers
``-1 system error`` with a rid while the database is away, comes back by itself, and
the log holds one traceback per kind of fault, not one per request.

A private PostgreSQL server is started for this (``support/private_pg``) and really
restarted (``pg_ctl -m fast restart``) and stopped/started; the shared one is never
touched. In CI this test runs (it fails, never skips, without PostgreSQL's binaries).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest

from msgcube.ingest.synthetic import generate_into
from msgcube.storage.db import open_store
from support.api import assert_envelope, new_account
from support.private_pg import private_postgres
from support.server import serving

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NOW = "2026-06-01T10:00:00+08:00"
APPID = "wxpgrestart"
SECRET = "pg-restart-secret-0123456789abcdef"
BODY = orjson.dumps({"begin_date": "2026-05-25", "end_date": "2026-05-31"})
TOKEN_QUERY = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}


def _rows(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/datacube/getupstreammsg", params={"access_token": token}, content=BODY)


def _is_fault(response: httpx.Response) -> bool:
    """The envelope of -1 with a rid (asserted), or False for any other answer."""
    if response.json().get("errcode") != -1:
        return False
    assert_envelope(response, -1)
    return True


def test_the_api_survives_postgres_restarts_and_outages(tmp_path: Path) -> None:
    with private_postgres() as pg:
        store = open_store(pg.url)
        account = new_account(store, APPID, SECRET)
        end, today = date(2026, 5, 31), date(2026, 6, 1)
        generate_into(store, account, days=7, users=6, seed=5, end=end, today=today)
        store.dispose()
        with (
            serving(pg.url, tmp_path, now=NOW) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as client,
        ):
            token = client.get("/cgi-bin/token", params=TOKEN_QUERY).json()["access_token"]
            expected = _rows(client, token).json()
            assert expected["list"], expected

            # 1. pg_ctl -m fast restart: every held connection dies. At most the request
            # that finds its connection dead fails (-1), the next ones are answered.
            pg.restart()
            answers = [_rows(client, token) for _ in range(3)]
            assert all(a.status_code == 200 for a in answers)
            failed = [a for a in answers if _is_fault(a)]
            assert len(failed) <= 1, [a.text for a in answers]
            assert answers[-1].json() == expected
            assert client.get("/cgi-bin/token", params=TOKEN_QUERY).json()["expires_in"] == 7200

            # 2. Stopped: every answer is -1 system error with a rid, HTTP 200.
            mark = server.log_size()
            pg.stop()
            for _ in range(25):
                response = _rows(client, token)
                assert _is_fault(response), response.text
            assert _is_fault(client.get("/cgi-bin/token", params=TOKEN_QUERY))
            rid = assert_envelope(_rows(client, token), -1)
            server.wait_log(f"rid={rid}", since=mark)

            # 3. Started again: answered again without restarting msgcube.
            pg.start()
            answers = [_rows(client, token) for _ in range(2)]
            assert answers[-1].json() == expected, [a.text for a in answers]
            log = server.wait_log("recovered after", since=mark)
            # The first failure of each kind of fault is logged with its traceback (the
            # API's, and perhaps a background job's), not one per failed request.
            first = [line for line in log.splitlines() if "ERROR msgcube.errors" in line]
            assert 1 <= len(first) <= 4, log
            assert all(" failed: " in line or "still failing" in line for line in first)
            assert "wechat requests: OperationalError recovered after" in log
