"""The analytics tables, created by msgcube on open (idempotent, both forms).

``messages`` is ordered by (account, CreateTime, MsgId): a rollup reads one local day of
one account as one key range, and ``ReplacingMergeTree`` collapses redelivered copies of
a message. Rows keep the Unix time only: the local day and hour are derived in the
account's zone when rolling up, so changing an account's zone rewrites nothing here.
Whether a MsgId was stored already is asked of ``message_ids``, a narrow table keyed by
(account, MsgId) — so a later copy with another CreateTime (another day) is
found and dropped, first stored wins, as on SQL. ``events`` is keyed by WeChat's event
key itself. Followers are versioned lists (``follower_lists`` names the current one).

The computed layers carry the ``version`` of the rollup run that wrote them, and
``rollup_runs`` records each run: a claim (``done = 0``) before its rows, a completion
(``done = 1``) after. Readers take, per period, the rows of its latest completed run —
a recompute replaces the old rows exactly (also when a period drops to no rows) without
ALTER DELETE, which is an asynchronous mutation in ClickHouse. ``user_day`` replaces by
version in the background (it is the big one); the finished statistics are small and
keep old versions (readers never see them).

``schema_version`` records what was created; a later msgcube adds its steps here. Its row
is written last, so opening checks it (one query) and skips the DDL when current.
"""

from __future__ import annotations

from msgcube.analytics.client import Analytics
from msgcube.errors import AnalyticsError
from msgcube.storage import clickhouse_dialect as ch

SCHEMA_VERSION = 1

_S, _D = ch.STRING, "Date"

TABLES: list[tuple[str, list[tuple[str, str]], list[str], dict[str, str]]] = [
    (
        "messages",
        [
            ("account_id", "UInt32"),
            ("create_time", "UInt32"),
            ("msg_id", "UInt64"),
            ("openid", _S),
            ("msg_type", "UInt8"),  # 0: stored, not counted
            ("msg_type_name", _S),
            ("received_at", "Int64"),
        ],
        ["account_id", "create_time", "msg_id"],
        # 30-day partitions of Unix time: whole parts age out together.
        {"engine": "ReplacingMergeTree", "partition_by": "intDiv(create_time, 2592000)"},
    ),
    (
        "message_ids",
        [
            ("account_id", "UInt32"),
            ("msg_id", "UInt64"),
            # When the stored copy came and whether it counts: a retry of a push whose
            # dirty mark was lost (db failed after ClickHouse acknowledged) restores it.
            ("create_time", "UInt32"),
            ("counted", "UInt8"),
            ("received_at", "Int64"),
        ],
        ["account_id", "msg_id"],
        {"engine": "ReplacingMergeTree"},
    ),
    (
        "events",
        [
            ("account_id", "UInt32"),
            ("openid", _S),
            ("create_time", "UInt32"),
            ("event", _S),
            ("received_at", "Int64"),
        ],
        ["account_id", "openid", "create_time", "event"],
        {"engine": "ReplacingMergeTree"},
    ),
    (
        "followers",
        [("account_id", "UInt32"), ("version", "UInt64"), ("openid", _S)],
        ["account_id", "version", "openid"],
        {},
    ),
    (
        "follower_lists",
        [("account_id", "UInt32"), ("version", "UInt64"), ("size", "UInt64")],
        ["account_id", "version"],
        {},
    ),
    (
        "user_day",
        [
            ("account_id", "UInt32"),
            ("day", _D),
            ("openid", _S),
            ("version", "UInt64"),
            ("week", _D),
            ("month", _D),
            ("c1", "UInt64"),
            ("c2", "UInt64"),
            ("c3", "UInt64"),
            ("c4", "UInt64"),
            ("c6", "UInt64"),
            ("total", "UInt64"),
        ],
        ["account_id", "day", "openid"],
        {"engine": "ReplacingMergeTree", "version": "version", "partition_by": "toYYYYMM(day)"},
    ),
    (
        "stat_summary",
        [
            ("account_id", "UInt32"),
            ("period", _S),
            ("ref_date", _D),
            ("ref_hour", "UInt16"),
            ("msg_type", "UInt8"),
            ("msg_user", "UInt64"),
            ("msg_count", "UInt64"),
            ("version", "UInt64"),
        ],
        ["account_id", "period", "ref_date", "version", "ref_hour", "msg_type"],
        {},
    ),
    (
        "stat_dist",
        [
            ("account_id", "UInt32"),
            ("period", _S),
            ("ref_date", _D),
            ("count_interval", "UInt8"),
            ("msg_user", "UInt64"),
            ("version", "UInt64"),
        ],
        ["account_id", "period", "ref_date", "version", "count_interval"],
        {},
    ),
    (
        "rollup_runs",
        [
            ("account_id", "UInt32"),
            ("period", _S),
            ("start", _D),
            ("version", "UInt64"),
            ("done", "UInt8"),
        ],
        ["account_id", "period", "start", "version"],
        {},
    ),
    (
        "schema_version",
        [("account_id", "UInt32"), ("version", "UInt32")],
        ["account_id", "version"],
        {},
    ),
]


def create_statements(analytics: Analytics) -> list[str]:
    """Every statement that creates the schema, in order (all ``IF NOT EXISTS``)."""
    target = analytics.target
    out = [ch.create_database(target)]
    for name, columns, order_by, options in TABLES:
        out += ch.create_table(
            target,
            name,
            columns,
            order_by,
            engine="ReplacingMergeTree" if options.get("engine") else "MergeTree",
            version=options.get("version"),
            partition_by=options.get("partition_by"),
        )
    return out


def is_current(analytics: Analytics) -> bool:
    """Whether the schema is created and current: one query, where running every
    ``CREATE … ON CLUSTER`` again costs seconds on each ``msgcube`` command."""
    try:
        found = analytics.scalar(f"SELECT max(version) FROM {analytics.table('schema_version')}")
    except AnalyticsError:
        return False  # not created yet (or unreachable: the DDL then says why)
    return bool(found) and int(found) >= SCHEMA_VERSION


def migrate(analytics: Analytics) -> None:
    """Create what is missing; record the schema version (idempotent, safe to repeat).

    The version row is written after every table exists, so a current version means
    nothing is missing and the statements are skipped.
    """
    if is_current(analytics):
        return
    for statement in create_statements(analytics):
        analytics.ddl(statement)
    found = analytics.scalar(f"SELECT max(version) FROM {analytics.table('schema_version')}")
    if not found or int(found) < SCHEMA_VERSION:
        analytics.insert("schema_version", ["account_id", "version"], [(0, SCHEMA_VERSION)])
