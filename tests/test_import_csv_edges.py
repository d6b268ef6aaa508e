"""CSV imports at their edges, through the real CLI (parsed inline and in a parser process).

A CSV written by Excel or a script carries a byte-order mark, CRLF line ends, quoted
commas, quotes and newlines in ``Content``, now and then a byte that is not UTF-8 and
rows with a column too many or too few. Every good record must be stored, every bad one
reported at the line it starts on and written to the rejects file in a form that can be
fixed and imported again; and the statistics must equal those of the same records as
JSON Lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.storage.db import open_store
from msgcube.storage.schema import messages
from support.import_cli import add, import_env, run

NOW = "2026-03-20T12:00:00+08:00"
T0 = 1772600000  # 2026-03-04 13:33:20 in Shanghai
HEADER = "FromUserName,CreateTime,MsgType,Content,MsgId"


@pytest.fixture(params=["process", "inline"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return import_env(tmp_path, NOW, request.param)


def msg_ids(env: dict[str, str]) -> list[int]:
    store = open_store("sqlite:///" + env["MSGCUBE_DB"])
    with store.read() as conn:
        found = sorted(
            conn.execute(messages.select().with_only_columns(messages.c.msg_id)).scalars()
        )
    store.dispose()
    return found


def content(i: int) -> str:
    """Plain text, or text with a comma, a doubled quote and a newline (CSV-quoted)."""
    return f'"hi, ""{i}""\nsecond line"' if i % 3 == 0 else f"plain {i}"


def good(i: int) -> bytes:
    kind = ("text", "image", "voice", "video", "link")[i % 5]
    return f"o{i % 41},{T0 + i * 97},{kind},{content(i)},{1000 + i}".encode()


def test_every_good_record_is_stored_and_bad_ones_are_reported_where_they_start(
    env: dict[str, str], tmp_path: Path
) -> None:
    appid = add(env)
    records: list[bytes] = [good(i) for i in range(1, 1201)]
    # Bad records, each starting on a known line (a good record i % 3 == 0 spans 2 lines).
    records.insert(10, b'oBad,soon,text,"a, b\nc",9')  # CreateTime; 2 lines
    records.insert(20, b"oBad,1772600000,text,x,y,10")  # a column too many
    records.insert(30, b"oBad,1772600000,text,11")  # a column too few
    records.insert(700, b"oBad,1772600000,text,caf\xe9 latin-1,12")  # not UTF-8, past 8 KiB
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n" + b"\r\n".join(records) + b"\r\n")
    starts, line = [], 2
    for record in records:
        starts.append(line)
        line += record.count(b"\n") + 1

    code, out, err = run(env, "import", "--appid", appid, "--quiet", str(path))

    assert code == 1
    assert err.splitlines() == [
        f"{path}:{starts[10]}: CreateTime must be an integer, got 'soon'",
        f"{path}:{starts[20]}: expected 5 columns, found 6",
        f"{path}:{starts[30]}: expected 5 columns, found 4",
        f"{path}:{starts[700]}: not UTF-8",
    ]
    assert out.startswith("1204 lines: 1200 new messages, 0 duplicates,")
    assert msg_ids(env) == list(range(1001, 2201))
    # The rejects file is a CSV again: the header, then each bad record quoted as needed,
    # its bytes as they were.
    rejects = Path(f"{path}.rejects").read_bytes()
    assert rejects == (
        HEADER.encode() + b"\n"
        b'oBad,soon,text,"a, b\nc",9\n'
        b"oBad,1772600000,text,x,y,10\n"
        b"oBad,1772600000,text,11\n"
        b"oBad,1772600000,text,caf\xe9 latin-1,12\n"
    )
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(rejects.replace(b"soon", b"1772600001").replace(b"\xe9", b"e"))
    code, out, err = run(env, "import", "--appid", appid, "--quiet", str(fixed))
    assert err.splitlines() == [
        f"{fixed}:4: expected 5 columns, found 6",
        f"{fixed}:5: expected 5 columns, found 4",
    ]
    assert msg_ids(env) == [9, 12, *range(1001, 2201)]


def test_a_header_that_is_not_utf8_is_one_reject(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    path = tmp_path / "in.csv"
    path.write_bytes(b"FromUserName,CreateTime,MsgType,MsgId,Not\xff\n" + good(1) + b"\n")
    code, _out, err = run(env, "import", "--appid", appid, "--quiet", str(path))
    assert code == 1 and err.splitlines() == [f"{path}:1: the CSV header is not UTF-8"]
    assert msg_ids(env) == []


def test_a_bom_starts_json_lines_too(env: dict[str, str], tmp_path: Path) -> None:
    appid = add(env)
    lines = [
        orjson.dumps({"FromUserName": "o1", "CreateTime": T0 + i, "MsgType": "text", "MsgId": i})
        for i in (1, 2)
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    code, out, err = run(env, "import", "--appid", appid, "--quiet", str(path))
    assert (code, err) == (0, "")
    assert out.startswith("2 lines: 2 new messages")


def test_csv_and_json_lines_of_the_same_records_give_the_same_statistics(
    env: dict[str, str], tmp_path: Path
) -> None:
    by_csv, by_jsonl = add(env), add(env)
    csv_path, jsonl_path = tmp_path / "in.csv", tmp_path / "in.jsonl"
    ids = range(1, 1501)
    csv_path.write_bytes(HEADER.encode() + b"\r\n" + b"\r\n".join(good(i) for i in ids) + b"\r\n")
    kinds = ("text", "image", "voice", "video", "link")
    jsonl_path.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "FromUserName": f"o{i % 41}",
                    "CreateTime": T0 + i * 97,
                    "MsgType": kinds[i % 5],
                    "Content": "x",
                    "MsgId": 1000 + i,
                }
            )
            for i in ids
        )
    )
    assert run(env, "import", "--appid", by_csv, "--quiet", str(csv_path))[0] == 0
    assert run(env, "import", "--appid", by_jsonl, "--quiet", str(jsonl_path))[0] == 0
    for ep in ENDPOINTS:
        span = ep.max_span("classic")
        begin, end = ("2026-03-05", "2026-03-05") if span == 1 else ("2026-03-02", "2026-03-08")
        answers = [run(env, "stats", ep.name, "--appid", a, begin, end) for a in (by_csv, by_jsonl)]
        assert answers[0][0] == 0, answers[0]
        assert answers[0][1] == answers[1][1], ep.name
        if ep.name == "getupstreammsg":
            assert sum(r["msg_count"] for r in json.loads(answers[0][1])) > 0
