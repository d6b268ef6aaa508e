from __future__ import annotations

from datetime import UTC, date, datetime

from msgcube.domain.endpoints import BY_NAME
from msgcube.domain.messages import parse_record
from msgcube.ingest.batch import write_batch
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import add_account
from msgcube.storage.db import Store

from conftest import STAMP, fresh_appid


def test_store_and_serve_one_day(store: Store) -> None:
    with store.write() as conn:
        account = add_account(conn, appid=fresh_appid(), secret="s", tz="Asia/Shanghai", now=STAMP)
    # 2026-03-01 23:30 UTC is 2026-03-02 07:30 in Shanghai.
    t = int(datetime(2026, 3, 1, 23, 30, tzinfo=UTC).timestamp())
    records = [
        parse_record({"FromUserName": "a", "CreateTime": t, "MsgType": "text", "MsgId": 1}),
        parse_record({"FromUserName": "a", "CreateTime": t + 1, "MsgType": "text", "MsgId": 2}),
        parse_record({"FromUserName": "b", "CreateTime": t + 2, "MsgType": "image", "MsgId": 3}),
        parse_record({"FromUserName": "b", "CreateTime": t + 2, "MsgType": "image", "MsgId": 3}),
    ]
    with store.write() as conn:
        result = write_batch(conn, account, records, date(2026, 3, 10), received_at=STAMP)
    assert (result.messages_new, result.messages_duplicate) == (3, 1)
    now = datetime(2026, 3, 10, tzinfo=UTC)
    rows = served_list(store, account, BY_NAME["getupstreammsg"], "2026-03-01", "2026-03-02", now)
    assert rows == [
        {"ref_date": "2026-03-02", "msg_type": 1, "msg_user": 1, "msg_count": 2},
        {"ref_date": "2026-03-02", "msg_type": 2, "msg_user": 1, "msg_count": 1},
    ]
    hours = served_list(
        store, account, BY_NAME["getupstreammsghour"], "2026-03-02", "2026-03-02", now
    )
    assert [(r["ref_hour"], r["msg_type"], r["msg_count"]) for r in hours] == [
        (700, 1, 2),
        (700, 2, 1),
    ]
