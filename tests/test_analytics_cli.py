"""The commands with ``--analytics-db chdb://DIR`` answer exactly as on SQLite alone,
and ``msgcube serve`` on it counts WeChat's retried pushes once.

Each run is a real ``msgcube`` process (chdb allows one data directory per process, so
these never share the test process's directory): generate a file, import it (twice, so
every line is a duplicate the second time), import followers, roll up, and compare every
endpoint's ``msgcube stats`` JSON with the same steps on SQLite.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from msgcube.wechat import build_push_xml, signature
from support.server import msgcube_env, run_msgcube, serving

NOW = "2026-03-10T12:00:00+08:00"
APPID = "wxanalyticscli"
ENDPOINTS = {
    "getupstreammsg": ("2026-02-20", "2026-02-26"),
    "getupstreammsghour": ("2026-02-25", "2026-02-25"),
    "getupstreammsgweek": ("2026-02-02", "2026-03-01"),
    "getupstreammsgmonth": ("2026-01-20", "2026-02-18"),
    "getupstreammsgdist": ("2026-02-12", "2026-02-26"),
    "getupstreammsgdistweek": ("2026-02-02", "2026-03-01"),
    "getupstreammsgdistmonth": ("2026-01-20", "2026-02-18"),
}


def _answers(tmp: Path, data: Path, followers: Path, **analytics: str) -> dict[str, object]:
    env = msgcube_env(tmp / "m.db", NOW, **analytics)
    run_msgcube("account", "add", "--appid", APPID, "--secret", "s3cret", env=env)
    for _ in range(2):
        run_msgcube("import", "--appid", APPID, "--quiet", str(data), env=env)
    run_msgcube("followers", "import", "--appid", APPID, str(followers), env=env)
    run_msgcube("rollup", env=env)
    return {
        name: json.loads(run_msgcube("stats", name, "--appid", APPID, b, e, env=env))
        for name, (b, e) in ENDPOINTS.items()
    }


@pytest.mark.slow
def test_import_rollup_stats_on_chdb_equal_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "pushes.jsonl"
    env = msgcube_env(tmp_path / "gen.db", NOW)
    run_msgcube(
        "generate",
        "--appid",
        APPID,
        "--days",
        "45",
        "--users",
        "60",
        "--per-day",
        "80",
        "--out",
        str(data),
        env=env,
    )
    followers = tmp_path / "followers.txt"
    followers.write_text("\n".join(f"fan{i}" for i in range(25)) + "\n")
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "chdb").mkdir()
    want = _answers(tmp_path / "sqlite", data, followers)
    got = _answers(
        tmp_path / "chdb", data, followers, analytics_db=f"chdb://{tmp_path / 'chdb' / 'ch'}"
    )
    assert any(want.values()), "the generated data should give rows"
    assert got == want


def _signed_push(base: str, appid: str, msg_id: int, openid: str, t: int) -> httpx.Response:
    xml = build_push_xml(
        {
            "ToUserName": "gh",
            "FromUserName": openid,
            "CreateTime": t,
            "MsgType": "text",
            "Content": "hi",
            "MsgId": msg_id,
        }
    )
    ts, nonce = "1773100800", "4242"
    params = {"signature": signature("tok", ts, nonce), "timestamp": ts, "nonce": nonce}
    return httpx.post(f"{base}/wechat/callback/{appid}", params=params, content=xml, timeout=30)


@pytest.mark.slow
def test_serve_on_chdb_counts_retried_pushes_once(tmp_path: Path) -> None:
    """A real ``msgcube serve`` (uvicorn) over chdb: WeChat's retries racing each other
    are stored once, and the API serves the count from ClickHouse."""
    analytics = f"chdb://{tmp_path / 'ch'}"
    env = msgcube_env(tmp_path / "m.db", NOW, analytics_db=analytics)
    run_msgcube("account", "add", "--appid", APPID, "--secret", "s3cret", "--token", "tok", env=env)
    t = int(datetime(2026, 3, 9, 2, tzinfo=UTC).timestamp())  # 10:00 yesterday in Shanghai
    with serving(tmp_path / "m.db", tmp_path, now=NOW, analytics_db=analytics) as server:
        pushes = [(i, f"o{i % 4}") for i in range(1, 13)] * 3
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda p: _signed_push(server.base_url, APPID, p[0], p[1], t), pushes)
            )
        assert {(r.status_code, r.text) for r in answers} == {(200, "success")}
        token = httpx.get(
            f"{server.base_url}/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": APPID, "secret": "s3cret"},
        ).json()["access_token"]
        body = httpx.post(
            f"{server.base_url}/datacube/getupstreammsg",
            params={"access_token": token},
            json={"begin_date": "2026-03-09", "end_date": "2026-03-09"},
            timeout=30,
        ).json()
    assert body == {
        "list": [{"ref_date": "2026-03-09", "msg_type": 1, "msg_user": 4, "msg_count": 12}]
    }
