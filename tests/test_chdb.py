"""Embedded ClickHouse (chdb) through clickhouse-connect's ``chdb://DIR`` DSN.

The smoke test of the embedded form of ``analytics_db``: the dialect module's local
(non-cluster) tables are created, filled and queried in-process, on a directory that
outlives the client. chdb runs one engine per process on one directory at a time
(opening a second directory while the first is open is refused), so every chdb test of
a run must either share a directory or close its client first: this test uses the
session's ``chdb_dir`` (the one ``analytics_db`` tests use too), in a database of its own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import clickhouse_connect

from msgcube.storage import clickhouse_dialect as ch
from support.clickhouse_tables import COLUMN_NAMES, create_messages


def test_chdb_creates_inserts_and_counts_exactly(chdb_dir: Path) -> None:
    tmp_path = chdb_dir
    target = ch.Target("chdb_smoke")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        [account, account * 1000 + i, i % (account + 2), start + dt.timedelta(hours=i), "text", 1]
        for account in (1, 2, 3)
        for i in range(40)
    ]
    # A redelivered message (same account and MsgId, newer version), inserted later,
    # replaces the first one under FINAL (merges do the same in the background).
    redelivered = [[1, 1000, 99, start, "image", 2]]
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path}")
    try:
        client.command(ch.create_database(target))
        for statement in create_messages(target):
            client.command(statement)
        table = ch.qualified(target, "messages")
        client.insert(table, rows, column_names=COLUMN_NAMES)
        client.insert(table, redelivered, column_names=COLUMN_NAMES)

        result = client.query(
            f"SELECT account_id, uniqExact(user_id), count() FROM {table} FINAL"
            " GROUP BY account_id ORDER BY account_id"
        )
        # Account 1's message 1000 now belongs to user 99 while user 0 keeps other
        # messages: one more distinct user, still 40 messages.
        assert result.result_rows == [(1, 4, 40), (2, 4, 40), (3, 5, 40)]
        [(kind, user)] = client.query(
            f"SELECT msg_type_name, user_id FROM {table} FINAL"
            " WHERE account_id = 1 AND msg_id = 1000"
        ).result_rows
        assert (kind, user) == ("image", 99)
    finally:
        client.close()

    # The data lives in the directory: a new client sees it.
    reopened = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path}")
    try:
        assert (
            reopened.command(f"SELECT count() FROM {ch.qualified(target, 'messages')} FINAL") == 120
        )
    finally:
        reopened.close()
