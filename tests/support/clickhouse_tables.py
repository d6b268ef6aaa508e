"""The messages-like table the ClickHouse tests create through the dialect module."""

from __future__ import annotations

from msgcube.storage import clickhouse_dialect as ch

COLUMNS = [
    ("account_id", "UInt32"),
    ("msg_id", "UInt64"),
    ("user_id", "UInt64"),
    ("create_time", ch.DATETIME),
    ("msg_type_name", ch.STRING),
    ("version", "UInt64"),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]


def create_messages(target: ch.Target) -> list[str]:
    """CREATE ``messages``: one row per (account, MsgId), the newest version kept."""
    return ch.create_table(
        target,
        "messages",
        COLUMNS,
        ["account_id", "msg_id"],
        engine="ReplacingMergeTree",
        version="version",
        partition_by="toYYYYMM(create_time)",
    )
