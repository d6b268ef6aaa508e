"""msgcube's time-zone rules are the installed ``tzdata`` package's, in every process."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import orjson
import tzdata  # type: ignore[import-untyped]

from msgcube.domain.periods import local_day_hour
from msgcube.settings import use_packaged_rules

# British Columbia keeps UTC-7 the year round from 2026-11-01 (IANA 2026a and later); an
# older system database still moves it to UTC-8. 2026-11-14 07:30 UTC is thus 00:30 on
# the 14th by the package's rules, 23:30 on the 13th by the old ones.
NOV14_0730_UTC = int(datetime.datetime(2026, 11, 14, 7, 30, tzinfo=datetime.UTC).timestamp())


def test_the_package_decides_not_the_system() -> None:
    assert use_packaged_rules() == tzdata.IANA_VERSION
    assert zoneinfo.TZPATH == ()
    assert local_day_hour(NOV14_0730_UTC, "America/Vancouver") == (datetime.date(2026, 11, 14), 0)


def test_every_entry_point_uses_the_package(tmp_path: Path) -> None:
    """The command line and the import's parser process (stdin is a pipe: parsed in a
    process of its own) derive local days by the package's rules; the server's workers
    start through the same ``app_from_env``, which every server test runs."""
    env = {
        **os.environ,
        "MSGCUBE_DB": str(tmp_path / "tz.db"),
        "MSGCUBE_CONFIG": os.devnull,
        "MSGCUBE_NOW": "2026-11-20T12:00:00+00:00",
    }
    cli = [sys.executable, "-m", "msgcube.cli"]
    appid = "wx7a0c0ffee0000001"
    subprocess.run(
        [*cli, "account", "add", "--appid", appid, "--secret", "tz-secret-0123456789"],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "account", "set", "--appid", appid, "--account-tz", "America/Vancouver"],
        env=env,
        check=True,
        capture_output=True,
    )
    line = orjson.dumps(
        {
            "ToUserName": "gh_0",
            "FromUserName": "o" + "x" * 27,
            "CreateTime": NOV14_0730_UTC,
            "MsgType": "text",
            "Content": "hi",
            "MsgId": 7,
        }
    )
    subprocess.run(
        [*cli, "import", "--appid", appid, "--quiet", "-"],
        env=env,
        input=line + b"\n",
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*cli, "stats", "getupstreammsghour", "--appid", appid, "2026-11-14", "2026-11-14"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert '"ref_hour": 0' in out or '"ref_hour":0' in out, out
