"""Quotas across the worker processes of a real ``msgcube serve --workers 2``.

Each worker counts in memory and flushes every second; after the documented window
(a flush plus a re-read, about two seconds) every worker reports the same total, the
limit holds, and a graceful stop leaves every counted call in the database.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from msgcube.storage.accounts import get_account
from msgcube.storage.db import open_store
from msgcube.storage.schema import quota_usage
from support.server import ServerProcess, msgcube_env, run_msgcube

pytestmark = pytest.mark.slow

NOW = "2026-03-10T10:00:00+08:00"
APPID = "wxquotaworkers0001"
SECRET = "quota-workers-secret-0123456789a"
MSG = "/datacube/getupstreammsg"
BODY = orjson.dumps({"begin_date": "2026-03-09", "end_date": "2026-03-09"})
LIMIT = 20


def test_two_workers_share_one_daily_quota(tmp_path: Path) -> None:
    db = tmp_path / "msgcube.db"
    run_msgcube("account", "add", "--appid", APPID, "--secret", SECRET, env=msgcube_env(db, NOW))
    with ServerProcess(db, tmp_path, now=NOW, workers=2, quota_datacube=LIMIT) as server:
        base = server.base_url
        token = httpx.get(
            base + "/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": APPID,
                "secret": SECRET,
            },
        ).json()["access_token"]
        for _ in range(LIMIT):  # a new connection per call: both workers take some
            body = httpx.post(base + MSG, params={"access_token": token}, content=BODY).json()
            assert body == {"list": []}, body
        time.sleep(2.5)  # one flush and one re-read: every worker sees every call
        for _ in range(6):
            answer = httpx.post(
                base + "/cgi-bin/openapi/quota/get",
                params={"access_token": token},
                content=orjson.dumps({"cgi_path": MSG}),
            ).json()
            assert answer["quota"] == {"daily_limit": LIMIT, "used": LIMIT, "remain": 0}
            refused = httpx.post(base + MSG, params={"access_token": token}, content=BODY).json()
            assert refused["errcode"] == 45009, refused
    store = open_store(f"sqlite:///{db}")
    try:
        with store.read() as conn:
            account = get_account(conn, APPID)
            assert account is not None
            used = conn.execute(
                select(quota_usage.c.used).where(
                    quota_usage.c.account_id == account.id, quota_usage.c.api == MSG
                )
            ).scalar_one()
        assert used == LIMIT
    finally:
        store.dispose()


def test_a_clear_reaches_every_worker_on_its_next_call(tmp_path: Path) -> None:
    """After ``clear_quota`` (answered by one worker) neither worker reports or refuses
    from the counters it read before the clear: both re-read at once, not after 1 s."""
    db = tmp_path / "msgcube.db"
    run_msgcube("account", "add", "--appid", APPID, "--secret", SECRET, env=msgcube_env(db, NOW))
    with ServerProcess(db, tmp_path, now=NOW, workers=2, quota_datacube=LIMIT) as server:
        base = server.base_url
        credentials = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        token = httpx.get(base + "/cgi-bin/token", params=credentials).json()["access_token"]

        def call(path: str, body: bytes = BODY) -> dict[str, object]:
            answer: dict[str, object] = httpx.post(
                base + path, params={"access_token": token}, content=body
            ).json()
            return answer

        quota_get = orjson.dumps({"cgi_path": MSG})
        while call(MSG).get("errcode") != 45009:
            pass
        time.sleep(2.5)  # both workers have read the exhausted counter
        for _ in range(6):
            assert call(MSG)["errcode"] == 45009
        cleared = call("/cgi-bin/clear_quota", orjson.dumps({"appid": APPID}))
        assert cleared == {"errcode": 0, "errmsg": "ok"}
        for _ in range(6):  # at once, from either worker: no wait for a re-read
            assert call("/cgi-bin/openapi/quota/get", quota_get)["quota"] == {
                "daily_limit": LIMIT,
                "used": 0,
                "remain": LIMIT,
            }
        outcomes = [call(MSG).get("errcode", 0) for _ in range(LIMIT)]
        assert outcomes == [0] * LIMIT
