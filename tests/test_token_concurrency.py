"""Token issuing under concurrency, on a real ``msgcube serve --workers 2``, SQLite and
PostgreSQL.

Many clients asking for one account's token at once must leave what WeChat leaves: after
a burst of ``/cgi-bin/token`` calls only the newest token and the one it superseded work;
concurrent ``stable_token`` calls without ``force_refresh`` all get the same token; and a
burst of forced refreshes in the same second refreshes once (30 s apart), leaving one
stable token. On PostgreSQL two transactions used to read "no current token" (or "may
force") side by side and both issue one.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from support.server import ServerProcess, msgcube_env, run_msgcube

from conftest import PG_URL, fresh_appid

pytestmark = pytest.mark.slow

NOW = "2026-03-10T10:00:00+08:00"
SECRET = "token-burst-secret-0123456789abc"
MSG = "/datacube/getupstreammsg"
BODY = orjson.dumps({"begin_date": "2026-03-09", "end_date": "2026-03-09"})
BURST = 24


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("token_burst")
    if request.param == "sqlite":
        db = str(tmp / "msgcube.db")
    else:
        request.getfixturevalue("pg_store")  # skipped (or failed in CI) when unreachable
        db = PG_URL
    with ServerProcess(db, tmp, now=NOW, workers=2, quota_datacube=10**6) as running:
        yield running


def new_account(server: ServerProcess) -> str:
    appid = fresh_appid("wxburst")
    run_msgcube(
        "account", "add", "--appid", appid, "--secret", SECRET, env=msgcube_env(server.db, NOW)
    )
    return appid


def burst(calls: int, call: Any) -> list[dict[str, Any]]:
    """``calls`` calls at once, each on its own connection (both workers take some)."""
    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(lambda _: call(), range(calls)))


def works(server: ServerProcess, token: str) -> bool:
    answer = httpx.post(server.base_url + MSG, params={"access_token": token}, content=BODY)
    body = answer.json()
    assert body == {"list": []} or body.get("errcode") == 40001, body
    return "list" in body


def credentials(appid: str, **extra: object) -> dict[str, object]:
    return {"grant_type": "client_credential", "appid": appid, "secret": SECRET, **extra}


def test_a_burst_of_token_calls_leaves_the_newest_two(server: ServerProcess) -> None:
    appid = new_account(server)

    def fetch() -> dict[str, Any]:
        answer = httpx.get(server.base_url + "/cgi-bin/token", params=credentials(appid))
        body: dict[str, Any] = answer.json()
        return body

    answers = burst(BURST, fetch)
    tokens = [a["access_token"] for a in answers]
    assert len(set(tokens)) == BURST
    assert sum(works(server, token) for token in tokens) == 2
    newest = fetch()["access_token"]
    assert works(server, newest)
    assert sum(works(server, token) for token in tokens) == 1  # the one newest superseded


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_stable_tokens_are_one_and_forcing_refreshes_once(
    server: ServerProcess, round_: int
) -> None:
    appid = new_account(server)  # a race: each round tries it on a new account

    def stable(force: bool) -> dict[str, Any]:
        body = orjson.dumps(credentials(appid, force_refresh=force))
        answer: dict[str, Any] = httpx.post(
            server.base_url + "/cgi-bin/stable_token", content=body
        ).json()
        return answer

    plain = burst(BURST, lambda: stable(False))
    assert {a["expires_in"] for a in plain} == {7200}
    (first,) = {a["access_token"] for a in plain}
    forced = {a["access_token"] for a in burst(BURST, lambda: stable(True))}
    # The same pinned second: one refresh; the other calls get the token then current.
    assert len(forced - {first}) == 1
    assert not works(server, first)
    (current,) = forced - {first}
    assert works(server, current)
    assert {a["access_token"] for a in burst(8, lambda: stable(False))} == {current}
