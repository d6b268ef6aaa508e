"""The commands with ``--analytics-db chdb://DIR`` answer exactly as on SQLite alone.

Each run is a real ``msgcube`` process (chdb allows one data directory per process, so
these never share the test process's directory): generate a file, import it (twice, so
every line is a duplicate the second time), import followers, roll up, and compare every
endpoint's ``msgcube stats`` JSON with the same steps on SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.server import msgcube_env, run_msgcube

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
