"""Bulk import through the real CLI: formats, dedup, bad lines, rejects file, stdin."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from msgcube.storage.db import open_store
from msgcube.storage.schema import messages
from support.import_cli import add, import_env, run

NOW = "2026-03-10T12:00:00+08:00"


@pytest.fixture(params=["process", "inline"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Every test twice: lines parsed by a parser process, and in the importing process."""
    return import_env(tmp_path, NOW, request.param)


def push(i: int, user: str = "u1", t: int = 1772600000, kind: str = "text") -> dict[str, object]:
    return {
        "ToUserName": "gh_x",
        "FromUserName": user,
        "CreateTime": t + i,
        "MsgType": kind,
        "MsgId": i,
    }


def stored_msg_ids(env: dict[str, str]) -> list[int]:
    store = open_store("sqlite:///" + env["MSGCUBE_DB"])
    with store.read() as conn:
        ids = sorted(conn.execute(messages.select().with_only_columns(messages.c.msg_id)).scalars())
    store.dispose()
    return ids


def test_jsonl_with_bad_lines_imports_the_good_ones(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    lines = [
        orjson.dumps(push(1)),
        b"{not json",
        orjson.dumps(push(2)),
        orjson.dumps(
            {"FromUserName": "u2", "CreateTime": 1772600000, "MsgType": "text"}
        ),  # no MsgId
        b"",
        orjson.dumps(push(3) | {"CreateTime": "soon"}),
        b"[1, 2]",
        orjson.dumps(push(1)),  # a retried push: a duplicate, not an error
        orjson.dumps(push(4, kind="location")),
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = run(env, "import", "--appid", appid, "--quiet", str(src))
    assert code == 1  # lines were rejected: a script must notice, though the rest is stored
    assert f"{src}:2: invalid JSON" in err
    assert f"{src}:4: MsgId is missing" in err
    assert f"{src}:6: CreateTime must be an integer, got 'soon'" in err
    assert f"{src}:7: a line must be a JSON object" in err
    assert "8 lines: 3 new messages, 1 duplicates, 0 new events, 0 duplicate events, 4 bad" in out
    rejects = (tmp_path / "in.jsonl.rejects").read_bytes().splitlines()
    assert rejects == [lines[1], lines[3], lines[5], lines[6]]
    assert stored_msg_ids(env) == [1, 2, 4]
    # location is a real MsgType that WeChat's statistics do not count: stored, and said so
    assert "1 messages stored but in no statistic" in err and "'location' ×1" in err


def test_csv_and_stdin_and_reimport_is_idempotent(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(
        "FromUserName,CreateTime,MsgType,MsgId,Event\n"
        "u1,1772600000,text,10,\n"
        "u1,1772600001,event,,subscribe\n"
        "u2,1772600002,image,11\n"  # wrong column count
        "u2,1772600003,voice,12,\n"
    )
    code, out, err = run(env, "import", "--appid", appid, "--quiet", str(csv_file))
    assert code == 1, err  # the row with the wrong column count
    assert f"{csv_file}:4: expected 5 columns, found 4" in err
    assert "2 new messages" in out and "1 new events" in out and "1 bad" in out
    code, out, _ = run(env, "import", "--appid", appid, "--quiet", str(csv_file))
    assert "0 new messages, 2 duplicates, 0 new events, 1 duplicate events" in out
    stdin = b"\n".join(orjson.dumps(push(i)) for i in (12, 13)) + b"\n"
    code, out, _ = run(env, "import", "--appid", appid, "--quiet", "-", input=stdin)
    assert code == 0 and "1 new messages, 1 duplicates" in out
    assert stored_msg_ids(env) == [10, 12, 13]


def test_unknown_appid_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps(push(1)))
    code, _, err = run(env, "import", "--appid", "wxnobody", str(src))
    assert code == 1 and "unknown appid 'wxnobody'" in err


def test_stats_cli_matches_wechat_rules(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    # 2026-03-04 13:33:20 +08:00 .. a few seconds later: three texts from two users.
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(push(i, user=f"u{i % 2}")) for i in range(3)))
    assert run(env, "import", "--appid", appid, "--quiet", str(src))[0] == 0
    code, out, _ = run(env, "stats", "getupstreammsg", "--appid", appid, "2026-03-01", "2026-03-07")
    assert code == 0
    assert json.loads(out) == [
        {"ref_date": "2026-03-04", "msg_type": 1, "msg_user": 2, "msg_count": 3}
    ]
    code, out, err = run(
        env, "stats", "getupstreammsg", "--appid", appid, "2026-03-01", "2026-03-08"
    )
    assert code == 2 and out == ""
    assert json.loads(err.splitlines()[0]) == {"errcode": 61501, "errmsg": "date range error"}
    code, _, err = run(
        env, "stats", "getupstreammsghour", "--appid", appid, "2026-3-4", "2026-03-04"
    )
    assert code == 2 and json.loads(err.splitlines()[0])["errcode"] == 61500
    code, _, err = run(env, "stats", "getupstreammsg", "--appid", appid, "2026-03-09", "2026-03-10")
    assert code == 2 and json.loads(err.splitlines()[0])["errcode"] == 61501


def test_followers_import_gives_count_interval_zero(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps(push(1, user="talker")))
    run(env, "import", "--appid", appid, "--quiet", str(src))
    follower_file = tmp_path / "followers.txt"
    follower_file.write_text("talker\nquiet1\nquiet2\n\n")
    code, out, _ = run(env, "followers", "import", "--appid", appid, str(follower_file))
    assert code == 0 and out.strip() == "3 followers"
    code, out, _ = run(
        env, "stats", "getupstreammsgdist", "--appid", appid, "2026-03-04", "2026-03-04"
    )
    assert json.loads(out) == [
        {"ref_date": "2026-03-04", "count_interval": 0, "msg_user": 2},
        {"ref_date": "2026-03-04", "count_interval": 1, "msg_user": 1},
    ]


def test_progress_bar_on_a_terminal_shows_the_rate(env: dict[str, str], tmp_path: Path) -> None:
    """stderr a real terminal (a pty): the bar shows lines and msg/s; the summary is intact."""
    import os
    import pty
    import subprocess
    import sys

    appid = add(env)
    src = tmp_path / "p.jsonl"
    src.write_bytes(b"".join(orjson.dumps(push(i)) + b"\n" for i in range(1, 2001)))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgcube.cli", "import", "--appid", appid, str(src)],
        env=os.environ | env | {"TERM": "xterm-256color", "COLUMNS": "160"},
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"2000 new messages" in out
    assert b"2,000 lines" in shown and b"msg/s" in shown, shown[-500:]
    code, _, err = run(env, "import", "--appid", appid, str(src))  # not a terminal: quiet
    assert code == 0 and "msg/s" not in err
