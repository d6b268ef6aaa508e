"""An analytics schema of version 1 (senders as openid strings) brought to version 2 on open.

Version 2 keys senders by ``sipHash128(openid)``: ``messages`` gains a ``user_key`` column
(old parts compute it when read) and the user-day layer moves from ``user_day`` to
``user_day_keyed``, its rows copied with their versions. The week rolled up after the
upgrade from the copied rows must equal what version 1's rows say, and what a fresh
rollup of the same messages says.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from msgcube.analytics import rollup
from msgcube.analytics.client import Analytics
from msgcube.analytics.schema import SCHEMA_VERSION, TABLES, USER_DAY, create_statements, migrate
from msgcube.analytics.url import parse_analytics_url
from msgcube.domain.endpoints import Period
from msgcube.domain.periods import period_end_timestamp
from msgcube.storage import clickhouse_dialect as ch
from support.clickhouse_cluster import ClickHouseCluster

TZ = "Asia/Shanghai"
MONDAY = date(2026, 3, 2)
V1_MESSAGES = [
    ("account_id", "UInt32"),
    ("create_time", "UInt32"),
    ("msg_id", "UInt64"),
    ("openid", "String"),
    ("msg_type", "UInt8"),
    ("msg_type_name", "String"),
    ("received_at", "Int64"),
]
V1_USER_DAY = [
    ("account_id", "UInt32"),
    ("day", "Date"),
    ("openid", "String"),
    ("version", "UInt64"),
    ("week", "Date"),
    ("month", "Date"),
    *((f"c{t}", "UInt64") for t in (1, 2, 3, 4, 6)),
    ("total", "UInt64"),
]


def _version_1(an: Analytics) -> None:
    """The tables as msgcube's schema version 1 created them (either form)."""
    t = an.target
    changed = [f"`{n}{suffix}`" for n in ("messages", USER_DAY) for suffix in ("", "_local")]
    for statement in create_statements(an):
        if not any(name in statement for name in changed):
            an.ddl(statement)
    v1 = [
        (
            "messages",
            V1_MESSAGES,
            ["account_id", "create_time", "msg_id"],
            None,
            "intDiv(create_time, 2592000)",
        ),
        ("user_day", V1_USER_DAY, ["account_id", "day", "openid"], "version", "toYYYYMM(day)"),
    ]
    for name, columns, order_by, version, partition_by in v1:
        for statement in ch.create_table(
            t,
            name,
            columns,
            order_by,
            engine="ReplacingMergeTree",
            version=version,
            partition_by=partition_by,
        ):
            an.ddl(statement)
    an.insert("schema_version", ["account_id", "version"], [(0, 1)])


def _week(an: Analytics, account: int) -> list[tuple[int, int, int]]:
    version = an.scalar(
        f"SELECT max(version) FROM {an.table('rollup_runs')} WHERE account_id = {account}"
        " AND period = 'week' AND done = 1"
    )
    return sorted(
        an.rows(
            f"SELECT msg_type, msg_user, msg_count FROM {an.table('stat_summary')}"
            f" WHERE account_id = {account} AND period = 'week' AND version = {version}"
        )
    )


def test_version_1_is_upgraded_on_open_and_its_user_days_still_count(
    chdb_dir: Path,
) -> None:
    check_upgrade(f"chdb://{chdb_dir}?database=upgrade_v1")


@pytest.mark.clickhouse_cluster
@pytest.mark.slow
def test_version_1_is_upgraded_on_the_cluster(ch_cluster: ClickHouseCluster) -> None:
    """On 18.16: the local tables altered ON CLUSTER, the Distributed table made again."""
    check_upgrade(ch_cluster.url(f"msgcube_upgrade_{os.getpid()}"))


def check_upgrade(analytics_db: str) -> None:
    url = parse_analytics_url(analytics_db)
    assert url is not None
    an = Analytics(url)
    try:
        upgraded_and_counted(an)
    finally:
        an.close()


def upgraded_and_counted(an: Analytics) -> None:
    _version_1(an)
    start = period_end_timestamp(Period.DAY, MONDAY - timedelta(days=1), TZ)
    # o1: 3 texts on Monday, 1 image on Tuesday; o2: 2 texts on Tuesday (one copy twice).
    rows = [(7, start + 60 * i, 100 + i, "o1", 1, "text", 0) for i in range(3)] + [
        (7, start + 86400 + 60, 200, "o1", 2, "image", 0),
        (7, start + 86400 + 120, 201, "o2", 1, "text", 0),
        (7, start + 86400 + 180, 202, "o2", 1, "text", 0),
    ]
    an.insert("messages", [c for c, _ in V1_MESSAGES], rows)
    an.insert("messages", [c for c, _ in V1_MESSAGES], rows[-1:])  # a concurrent copy
    tuesday = MONDAY + timedelta(days=1)
    v1_rows = [
        (7, MONDAY, "o1", 1, MONDAY, MONDAY.replace(day=1), 3, 0, 0, 0, 0, 3),
        (7, tuesday, "o1", 1, MONDAY, MONDAY.replace(day=1), 0, 1, 0, 0, 0, 1),
        (7, tuesday, "o2", 1, MONDAY, MONDAY.replace(day=1), 2, 0, 0, 0, 0, 2),
        (7, tuesday, "o3", 0, MONDAY, MONDAY.replace(day=1), 9, 0, 0, 0, 0, 9),  # superseded
    ]
    an.insert("user_day", [c for c, _ in V1_USER_DAY], v1_rows)
    an.insert(
        "rollup_runs",
        ["account_id", "period", "start", "version", "done"],
        [(7, "day", d, 1, 1) for d in (MONDAY, tuesday)],
    )

    migrate(an)
    migrate(an)  # idempotent: the version row says current

    assert an.rows(f"SELECT max(version) FROM {an.table('schema_version')}") == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in an.rows(f"SHOW TABLES FROM {an.target.database}")}
    assert not {"user_day", "user_day_local"} & tables and USER_DAY in tables
    assert {name for name, *_ in TABLES} <= tables
    # Parts written before the column compute it when read; the copy is keyed the same.
    assert an.rows(
        f"SELECT count(), countIf(user_key = sipHash128(openid)) FROM {an.table('messages')}"
    ) == [(7, 7)]
    copied = an.rows(
        f"SELECT day, hex(user_key), version, total FROM {an.table(USER_DAY)} ORDER BY day, total"
    )
    assert copied == [
        (MONDAY, key(an, "o1"), 1, 3),
        (tuesday, key(an, "o1"), 1, 1),
        (tuesday, key(an, "o2"), 1, 2),
        (tuesday, key(an, "o3"), 0, 9),
    ]
    # The week from the copied rows (no day recomputed): o1 texts 3 + image 1, o2 texts 2.
    rollup.compute_periods(an, 7, TZ, False, Period.WEEK, [MONDAY])
    expected = [(1, 2, 5), (2, 1, 1)]
    assert _week(an, 7) == expected
    # Recomputing the days from the messages after the upgrade says the same (the
    # concurrent copy counts once), and new messages get their key on insert.
    rollup.compute_days(an, 7, TZ, False, [MONDAY, tuesday])
    rollup.compute_periods(an, 7, TZ, False, Period.WEEK, [MONDAY])
    assert _week(an, 7) == expected
    an.insert("messages", [c for c, _ in V1_MESSAGES], [(7, start + 7200, 300, "o3", 1, "text", 0)])
    rollup.compute_days(an, 7, TZ, False, [MONDAY])
    rollup.compute_periods(an, 7, TZ, False, Period.WEEK, [MONDAY])
    assert _week(an, 7) == [(1, 3, 6), (2, 1, 1)]


def key(an: Analytics, openid: str) -> str:
    """The hex sender key ClickHouse computes for OPENID."""
    return str(an.scalar(f"SELECT hex({ch.user_key(ch.quote_string(openid))})"))
