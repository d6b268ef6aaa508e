"""``msgcube replay``: pushes signed and sealed the way WeChat does, checked by wechatpy,
then sent to a real ``msgcube serve`` from a ``msgcube generate`` file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from sqlalchemy import func, select
from wechatpy.crypto import WeChatCrypto  # type: ignore[import-untyped]
from wechatpy.utils import check_signature as wechatpy_check_signature  # type: ignore[import-untyped]

from msgcube.client.replay import PushSigner, callback_url, push_fields
from msgcube.storage.accounts import get_account
from msgcube.storage.db import open_store
from msgcube.storage.schema import events, messages
from msgcube.wechat import AESKey
from support.server import ServerProcess, msgcube_env, run_msgcube

APPID = "wxreplay0000000001"
TOKEN = "replay-token"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
NOW = "2026-03-10T09:00:00+08:00"
RECORD: dict[str, Any] = {
    "ToUserName": "gh_abc",
    "FromUserName": "oUser1",
    "CreateTime": 1773000000,
    "MsgType": "location",
    "Location_X": 23.134521,
    "Location_Y": 113.358803,
    "Scale": 20,
    "Label": "广州 <&> ]]>",
    "MsgId": 1234567890123456,
}


def fields_of(xml: bytes | str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(xml)}


def test_plain_push_is_signed_as_wechatpy_expects() -> None:
    query, body = PushSigner(APPID, TOKEN).request(RECORD)
    wechatpy_check_signature(TOKEN, query["signature"], query["timestamp"], query["nonce"])
    assert "encrypt_type" not in query
    got = fields_of(body)
    assert got["Label"] == RECORD["Label"]
    assert got["Location_X"] == "23.134521"
    assert got["MsgId"] == "1234567890123456"
    assert b"<MsgId>1234567890123456</MsgId>" in body  # numbers bare, as WeChat writes them


@pytest.mark.parametrize("mode", ["compat", "safe"])
def test_encrypted_push_opens_with_wechatpy(mode: str) -> None:
    signer = PushSigner(APPID, TOKEN, mode, AESKey(KEY))  # type: ignore[arg-type]
    query, body = signer.request(RECORD)
    assert query["encrypt_type"] == "aes"
    wechatpy_check_signature(TOKEN, query["signature"], query["timestamp"], query["nonce"])
    inner = WeChatCrypto(TOKEN, KEY, APPID).decrypt_message(
        body.decode(), query["msg_signature"], query["timestamp"], query["nonce"]
    )
    assert fields_of(inner)["Label"] == RECORD["Label"]
    outer = fields_of(body)
    if mode == "compat":  # plaintext fields beside the ciphertext
        assert outer["MsgId"] == str(RECORD["MsgId"])
    else:
        assert set(outer) == {"ToUserName", "Encrypt"}


def test_signer_needs_a_key_outside_plain_mode() -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        PushSigner(APPID, TOKEN, "safe")


def test_push_fields_and_urls() -> None:
    assert push_fields({"a": None, "b": True, "c": 1.5, "d": [1], "e": "x", "f": 2}) == {
        "b": "true",
        "c": "1.5",
        "d": "[1]",
        "e": "x",
        "f": 2,
    }
    assert callback_url("http://h:1", "wxa") == "http://h:1/wechat/callback/wxa"
    assert callback_url("http://h:1/", "wxa") == "http://h:1/wechat/callback/wxa"
    assert callback_url("https://h/cb?x=1", "wxa") == "https://h/cb?x=1"


def test_replay_a_generated_file_into_a_real_server(tmp_path: Path) -> None:
    db = tmp_path / "msgcube.db"
    env = msgcube_env(db, NOW)
    run_msgcube("account", "add", "--appid", APPID, "--token", TOKEN, "--aes-key", KEY, env=env)
    pushes = tmp_path / "pushes.jsonl"
    run_msgcube(
        "generate", "--appid", APPID, "--days", "3", "--users", "40", "--out", str(pushes), env=env
    )
    records = [orjson.loads(line) for line in pushes.read_bytes().splitlines()]
    kinds = Counter(r["MsgType"] for r in records)
    assert kinds["event"] > 0
    assert kinds["text"] > 0
    with_bad_line = tmp_path / "with-bad-line.jsonl"
    with_bad_line.write_bytes(pushes.read_bytes() + b"not json\n")

    with ServerProcess(db, tmp_path, now=NOW) as server:
        out = run_msgcube_failing(
            "replay",
            str(with_bad_line),
            "--url",
            server.base_url,
            "--appid",
            APPID,
            "--mode",
            "safe",
            "--concurrency",
            "8",
            env=env,
        )
        assert f"{len(records)} pushes: {len(records)} answered 200, 0 failed" in out
        assert "1 bad lines" in out
        # Again in plaintext, with the token from the database: every push a duplicate.
        again = run_msgcube(
            "replay",
            str(pushes),
            "--url",
            f"{server.base_url}/wechat/callback/{APPID}",
            "--appid",
            APPID,
            env=env,
        )
        assert f"{len(records)} answered 200, 0 failed" in again
        # A wrong token: 403 three times per push, reported and exit status 1.
        wrong = run_msgcube_failing(
            "replay",
            str(pushes),
            "--url",
            server.base_url,
            "--appid",
            APPID,
            "--token",
            "nope",
            "--tries",
            "3",
            env=env,
        )
        assert f"{len(records)} failed" in wrong
        assert f"403: {3 * len(records)}" in wrong

    store = open_store(f"sqlite:///{db}")
    try:
        with store.read() as conn:
            account = get_account(conn, APPID)
            assert account is not None
            n_messages = conn.execute(
                select(func.count()).where(messages.c.account_id == account.id)
            ).scalar_one()
            n_events = conn.execute(
                select(func.count()).where(events.c.account_id == account.id)
            ).scalar_one()
    finally:
        store.dispose()
    assert n_messages == len({r["MsgId"] for r in records if "MsgId" in r})
    assert n_events == len(
        {
            (r["FromUserName"], r["CreateTime"], r["Event"])
            for r in records
            if r["MsgType"] == "event"
        }
    )


def run_msgcube_failing(*args: str, env: dict[str, str]) -> str:
    """Run a command expected to exit 1; its combined output."""
    with pytest.raises(RuntimeError, match="exited 1") as failed:
        run_msgcube(*args, env=env)
    return str(failed.value)
