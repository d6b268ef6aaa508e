"""Only ``trusted_proxies`` decides whose ``X-Forwarded-For`` is believed — under a real
``msgcube serve`` (uvicorn), with one worker and with several.

uvicorn believes the header from 127.0.0.1 by default and rewrites the client address
before the app sees it; a local proxy (or anyone reaching the server through one)
could then claim a whitelisted address. Here the test client calls from 127.0.0.1 and
claims 10.1.2.3, the account's whitelist.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from msgcube.storage.accounts import set_account
from msgcube.storage.db import open_store
from support.api import assert_envelope, new_account
from support.server import serving

APPID = "wxproxyfence"
SECRET = "proxy-secret-0123456789abcdef0123"
NOW = "2026-06-01T10:00:00+08:00"
CLAIM = {"X-Forwarded-For": "10.1.2.3"}
TOKEN_QUERY = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
BODY = orjson.dumps({"begin_date": "2026-05-31", "end_date": "2026-05-31"})


@pytest.fixture
def fenced_db(tmp_path: Path) -> tuple[Path, str]:
    """A database with one account fenced to 10.1.2.3, and a token issued before."""
    db = tmp_path / "proxy.db"
    store = open_store(f"sqlite:///{db}")
    new_account(store, APPID, SECRET)
    store.dispose()
    with serving(db, tmp_path, now=NOW) as server:
        token = httpx.get(server.base_url + "/cgi-bin/token", params=TOKEN_QUERY).json()
    store = open_store(f"sqlite:///{db}")
    with store.write() as conn:
        set_account(conn, APPID, ip_whitelist="10.1.2.3")
    store.dispose()
    return db, str(token["access_token"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    workers: int, fenced_db: tuple[Path, str], tmp_path: Path
) -> None:
    db, token = fenced_db
    datacube = "/datacube/getupstreammsg"
    with serving(db, tmp_path, now=NOW, workers=workers) as server:
        base = server.base_url
        refused = httpx.get(base + "/cgi-bin/token", params=TOKEN_QUERY, headers=CLAIM)
        assert_envelope(refused, 40164, ip="127.0.0.1")
        refused = httpx.post(
            base + datacube, params={"access_token": token}, content=BODY, headers=CLAIM
        )
        assert_envelope(refused, 40164, ip="127.0.0.1")
    with serving(db, tmp_path, now=NOW, workers=workers, trusted_proxies="127.0.0.1") as server:
        base = server.base_url
        granted = httpx.get(base + "/cgi-bin/token", params=TOKEN_QUERY, headers=CLAIM).json()
        assert set(granted) == {"access_token", "expires_in"}, granted
        answer = httpx.post(
            base + datacube, params={"access_token": token}, content=BODY, headers=CLAIM
        ).json()
        assert list(answer) == ["list"], answer
        # A trusted proxy's own address is not the client: without the header, refused.
        alone = httpx.post(base + datacube, params={"access_token": token}, content=BODY)
        assert_envelope(alone, 40164, ip="127.0.0.1")
