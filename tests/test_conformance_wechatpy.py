"""Conformance with a real third-party SDK: wechatpy 1.8.18 against a real ``msgcube serve``.

wechatpy is used unchanged except for what a user of msgcube changes: the base URLs
(``WeChatClient.API_BASE_URL`` and its datacube API's own ``API_BASE_URL``) and the URL
its ``fetch_access_token`` calls. It sends the JSON body without a Content-Type, unwraps
``list`` itself, refetches the token on 40001/42001 and raises ``WeChatClientException``
on any other errcode — all of which is exercised here over real HTTP.

The account's traffic is made by ``msgcube generate --out`` and loaded with ``msgcube
import`` and ``msgcube followers import``, so the same pushes also feed the brute-force
oracle (tests/oracle.py): every row wechatpy returns must equal both the engine's answer
(``served_list``) and the oracle's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
from wechatpy import WeChatClient
from wechatpy.client.api import WeChatDataCube
from wechatpy.exceptions import WeChatClientException

from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, Endpoint
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.db import Store, open_store
from support.relay_calls import seed_calls
from support.server import ServerProcess, msgcube_env, run_msgcube

from oracle import OracleAccount

pytestmark = pytest.mark.slow

NOW = "2026-02-15T10:00:00+08:00"  # a Sunday: data runs 2026-01-06 .. 2026-02-14
NOW_DT = datetime.fromisoformat(NOW)
LATER = "2026-02-15T12:00:01+08:00"  # 2 h 1 s later: every token issued at NOW has expired
APPID = "wxconformance000001"
SECRET = "conformance-secret-0123456789abcd"
FIRST_DAY = date(2026, 1, 1)  # a few days before the data: windows also cover empty days
YESTERDAY = date(2026, 2, 14)

WECHATPY_METHOD = {
    "getupstreammsg": "get_upstream_msg",
    "getupstreammsghour": "get_upstream_msg_hour",
    "getupstreammsgweek": "get_upstream_msg_week",
    "getupstreammsgmonth": "get_upstream_msg_month",
    "getupstreammsgdist": "get_upstream_msg_dist",
    "getupstreammsgdistweek": "get_upstream_msg_dist_week",
    "getupstreammsgdistmonth": "get_upstream_msg_dist_month",
    "getinterfacesummary": "get_interface_summary",
    "getinterfacesummaryhour": "get_interface_summary_hour",
}


class MsgcubeClient(WeChatClient):
    """wechatpy's client, only its base URLs pointed at msgcube; counts its token fetches."""

    base_url = ""

    def __init__(self, appid: str, secret: str) -> None:
        super().__init__(appid, secret)
        self.token_fetches = 0
        self.sent: list[requests.PreparedRequest] = []
        self._http.hooks["response"].append(self._note)

    def _note(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.sent.append(response.request)

    def fetch_access_token(self) -> dict[str, Any]:
        self.token_fetches += 1
        result: dict[str, Any] = self._fetch_access_token(
            url=f"{self.base_url}/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
        return result


def wechatpy_client(base_url: str, appid: str = APPID, secret: str = SECRET) -> MsgcubeClient:
    """A wechatpy client for msgcube at ``base_url``: subclasses override the base URLs."""
    datacube_cls = type(
        "MsgcubeDataCube", (WeChatDataCube,), {"API_BASE_URL": f"{base_url}/datacube/"}
    )
    client_cls = type(
        "BoundMsgcubeClient",
        (MsgcubeClient,),
        {"API_BASE_URL": f"{base_url}/cgi-bin/", "base_url": base_url, "datacube": datacube_cls()},
    )
    client: MsgcubeClient = client_cls(appid, secret)
    return client


def call(client: MsgcubeClient, name: str, begin: date | str, end: date | str) -> Any:
    return getattr(client.datacube, WECHATPY_METHOD[name])(begin, end)


# --------------------------------------------------------------------------- the account


@dataclass
class Seeded:
    db: Path
    workdir: Path
    store: Store
    oracle: OracleAccount

    def account(self) -> Account:
        with self.store.read() as conn:
            account = get_account(conn, APPID)
        assert account is not None
        return account

    def engine_rows(self, ep: Endpoint, begin: str, end: str) -> list[dict[str, Any]]:
        return served_list(self.store, self.account(), ep, begin, end, NOW_DT)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A SQLite database with one account, 40 days of traffic from 200 users, followers."""
    workdir = tmp_path_factory.mktemp("conformance")
    db = workdir / "msgcube.db"
    env = msgcube_env(db, NOW)
    pushes = workdir / "pushes.jsonl"
    run_msgcube("account", "add", "--appid", APPID, "--secret", SECRET, env=env, cwd=workdir)
    run_msgcube(
        "generate",
        "--appid",
        APPID,
        "--days",
        "40",
        "--users",
        "200",
        "--seed",
        "7",
        "--out",
        str(pushes),
        env=env,
        cwd=workdir,
    )
    run_msgcube("import", "--appid", APPID, "--quiet", str(pushes), env=env, cwd=workdir)
    records = [orjson.loads(line) for line in pushes.read_bytes().splitlines() if line]
    senders = sorted({r["FromUserName"] for r in records})
    # Every third sender follows, plus people who never write: count_interval 0 has rows.
    followers = senders[::3] + [f"oSilentFollower{i:04d}" for i in range(25)]
    followers_file = workdir / "followers.txt"
    followers_file.write_text("\n".join(followers) + "\n")
    run_msgcube("followers", "import", "--appid", APPID, str(followers_file), env=env, cwd=workdir)
    oracle = OracleAccount("Asia/Shanghai")
    oracle.store(records)
    oracle.import_followers(followers)
    store = open_store(f"sqlite:///{db}")
    # The relay's timings of the same days (interface analysis), for the store and the oracle.
    with store.read() as conn:
        account = get_account(conn, APPID)
    assert account is not None
    for received_at, cost_ms, failed in seed_calls(store, account, date(2026, 1, 6), YESTERDAY):
        oracle.record_call(received_at=received_at, cost_ms=cost_ms, failed=failed)
    yield Seeded(db, workdir, store, oracle)
    store.dispose()


@pytest.fixture(scope="module")
def server(seeded: Seeded) -> Iterator[ServerProcess]:
    with ServerProcess(seeded.db, seeded.workdir, now=NOW) as proc:
        yield proc


def windows(ep: Endpoint) -> list[tuple[str, str]]:
    """Consecutive request windows of the endpoint's largest span over every data day."""
    span = ep.max_span("classic")
    out = []
    begin = FIRST_DAY
    while begin <= YESTERDAY:
        end = min(begin + timedelta(days=span - 1), YESTERDAY)
        out.append((begin.isoformat(), end.isoformat()))
        begin = end + timedelta(days=1)
    return out


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_returns_exactly_the_engines_rows(
    ep: Endpoint, seeded: Seeded, server: ServerProcess
) -> None:
    client = wechatpy_client(server.base_url)
    total = 0
    for begin, end in windows(ep):
        got = call(client, ep.name, begin, end)
        expected = seeded.engine_rows(ep, begin, end)
        assert got == expected, (ep.name, begin, end)
        assert got == seeded.oracle.served(ep.name, begin, end, NOW_DT), (ep.name, begin, end)
        for row in got:  # WeChat's field order, integers, YYYY-MM-DD strings
            assert tuple(row) == ep.fields
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["ref_date"])
            assert all(type(row[f]) is int for f in ep.fields if f != "ref_date")
        total += len(got)
    assert total > 0, f"{ep.name}: no rows at all, the comparison proved nothing"
    assert client.token_fetches == 1  # one token served every call
    datacube_calls = [r for r in client.sent if "/datacube/" in (r.url or "")]
    assert len(datacube_calls) == len(windows(ep))
    for request in datacube_calls:  # wechatpy really sends its JSON without a Content-Type
        assert request.method == "POST"
        assert "Content-Type" not in request.headers


def test_rows_cover_every_kind_of_row(seeded: Seeded, server: ServerProcess) -> None:
    """The data is rich enough to mean something: all msg_types, hours, intervals 0–3."""
    client = wechatpy_client(server.base_url)
    week = call(client, "getupstreammsg", "2026-02-08", "2026-02-14")
    assert {r["msg_type"] for r in week} == {1, 2, 3, 4, 6}
    hours = call(client, "getupstreammsghour", "2026-02-10", "2026-02-10")
    assert len({r["ref_hour"] for r in hours}) >= 12
    assert all(r["ref_hour"] % 100 == 0 and 0 <= r["ref_hour"] <= 2300 for r in hours)
    month = call(client, "getupstreammsgdistmonth", "2026-01-01", "2026-01-01")
    assert [r["count_interval"] for r in month] == [0, 1, 2, 3]
    assert [r["ref_date"] for r in month] == ["2026-01-01"] * 4
    weeks = call(client, "getupstreammsgweek", "2026-01-05", "2026-02-03")
    assert sorted({r["ref_date"] for r in weeks}) == [
        "2026-01-05",
        "2026-01-12",
        "2026-01-19",
        "2026-01-26",
        "2026-02-02",
    ]


def test_expired_token_is_refetched_once(seeded: Seeded, tmp_path: Path) -> None:
    """A token issued at NOW is expired 2 h later: wechatpy gets 42001, refetches once, succeeds."""
    ep = BY_NAME["getupstreammsg"]
    begin, end = "2026-02-08", "2026-02-14"
    with ServerProcess(seeded.db, tmp_path, now=NOW) as proc:
        client = wechatpy_client(proc.base_url)
        first = call(client, ep.name, begin, end)
        assert client.token_fetches == 1
        stale = client.session.get(client.access_token_key)
        port = proc.port
        proc.stop()
        mark = proc.log_size()  # after the first run's last log line
        proc.now = LATER  # same database and port, the clock 2 h 1 s later
        proc.start()
        assert proc.port == port
        # The old token really is expired now (42001, not unknown or superseded).
        direct = httpx.post(
            f"{proc.base_url}/datacube/{ep.name}",
            params={"access_token": stale},
            content=orjson.dumps({"begin_date": begin, "end_date": end}),
        )
        assert direct.json()["errcode"] == 42001
        again = call(client, ep.name, begin, end)
        assert again == first == seeded.engine_rows(ep, begin, end)
        assert client.token_fetches == 2
        assert client.session.get(client.access_token_key) != stale
        after_restart = proc.wait_log(f"POST /datacube/{ep.name} 200 errcode=0", since=mark)
        log = proc.log_text()
    datacube_lines = [ln for ln in after_restart.splitlines() if f" {ep.path} " in ln]
    assert [re.findall(r"errcode=(\d+)", ln)[0] for ln in datacube_lines] == [
        "42001",  # the direct probe
        "42001",  # wechatpy's call with the stale token
        "0",  # its single retry with the refetched token
    ]
    assert stale not in log


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        ("2026-02-30", "2026-02-30"),  # not a calendar day
        ("2026/02/10", "2026/02/10"),
        ("2026-2-10", "2026-02-10"),
        ("2026-02-10", "20260210"),
        ("", "2026-02-10"),
    ],
)
def test_bad_date_raises_wechatpy_exception_61500(
    server: ServerProcess, begin: str, end: str
) -> None:
    client = wechatpy_client(server.base_url)
    with pytest.raises(WeChatClientException) as info:
        call(client, "getupstreammsg", begin, end)
    assert info.value.errcode == 61500
    match = re.fullmatch(
        r"date format error rid: ([0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8})", info.value.errmsg
    )
    assert match is not None
    assert client.token_fetches == 1  # not mistaken for a token problem
    # The rid a user would quote finds the request's line in the server's log.
    log = server.wait_log(f"rid={match.group(1)}")
    [line] = [ln for ln in log.splitlines() if f"rid={match.group(1)}" in ln]
    assert " POST /datacube/getupstreammsg 200 errcode=61500 " in line


def test_range_error_raises_61501(server: ServerProcess) -> None:
    client = wechatpy_client(server.base_url)
    for begin, end in [("2026-02-14", "2026-02-15"), ("2026-02-01", "2026-02-08")]:
        with pytest.raises(WeChatClientException) as info:
            call(client, "getupstreammsg", begin, end)
        assert info.value.errcode == 61501


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_range_without_data_is_an_empty_list(ep: Endpoint, server: ServerProcess) -> None:
    client = wechatpy_client(server.base_url)
    assert call(client, ep.name, date(2025, 6, 2), date(2025, 6, 2)) == []
    assert call(client, ep.name, "2014-01-01", "2014-01-01") == []  # before WeChat's 2014-12-01


def test_no_token_or_secret_in_the_server_log(seeded: Seeded, server: ServerProcess) -> None:
    mark = server.log_size()
    client = wechatpy_client(server.base_url)
    call(client, "getupstreammsg", "2026-02-14", "2026-02-14")
    token = client.session.get(client.access_token_key)
    log = server.wait_log("POST /datacube/getupstreammsg 200 errcode=0", since=mark)
    assert "GET /cgi-bin/token 200 errcode=0" in log
    assert token not in log
    assert SECRET not in log
