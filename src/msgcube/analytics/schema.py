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
ALTER DELETE, which is an asynchronous mutation in ClickHouse. The user-day layer replaces
by version in the background (it is the big one); the finished statistics are small and
keep old versions (readers never see them).

Senders are grouped and counted by ``user_key``, the 16-byte ``sipHash128(openid)`` that
ClickHouse computes on insert (clickhouse_dialect.user_key says why that is as exact as
``uniqExact`` over the strings): the rollup's big GROUP BYs hash fixed-width keys instead
of 28-byte strings (measured in bench/RESULTS.md, "Rollup").

``schema_version`` records what was created; a later msgcube adds its steps here (version
2: ``user_key``, ``user_day`` → ``user_day_keyed``). Its row is written last, so opening
checks it (one query) and skips the DDL when current.
"""

from __future__ import annotations

from msgcube.analytics.client import Analytics, literal
from msgcube.errors import AnalyticsError
from msgcube.storage import clickhouse_dialect as ch

SCHEMA_VERSION = 2

_S, _D = ch.STRING, "Date"
_USER_KEY = f"{ch.USER_KEY_TYPE} DEFAULT {ch.user_key('openid')}"

USER_DAY = "user_day_keyed"
"""The user-day layer: one row per account, day and sender key (schema version 2; version
1 kept the openid strings in ``user_day``, which :func:`migrate` copies over and drops)."""

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
            # Computed by ClickHouse from openid on insert (and on read in parts older
            # than the column): what the rollup groups senders by.
            ("user_key", _USER_KEY),
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
        USER_DAY,
        [
            ("account_id", "UInt32"),
            ("day", _D),
            ("user_key", ch.USER_KEY_TYPE),
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
        ["account_id", "day", "user_key"],
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
    out = [ch.create_database(analytics.target)]
    for name, *_ in TABLES:
        out += _create_table(analytics.target, name)
    return out


def _spec(name: str) -> tuple[str, list[tuple[str, str]], list[str], dict[str, str]]:
    return next(t for t in TABLES if t[0] == name)


def _create_table(target: ch.Target, name: str) -> list[str]:
    _, columns, order_by, options = _spec(name)
    return ch.create_table(
        target,
        name,
        columns,
        order_by,
        engine="ReplacingMergeTree" if options.get("engine") else "MergeTree",
        version=options.get("version"),
        partition_by=options.get("partition_by"),
    )


def is_current(analytics: Analytics) -> bool:
    """Whether the schema is created and current: one query, where running every
    ``CREATE … ON CLUSTER`` again costs seconds on each ``msgcube`` command."""
    try:
        found = analytics.scalar(f"SELECT max(version) FROM {analytics.table('schema_version')}")
    except AnalyticsError:
        return False  # not created yet (or unreachable: the DDL then says why)
    return bool(found) and int(found) >= SCHEMA_VERSION


def migrate(analytics: Analytics) -> None:
    """Create what is missing, bring an older schema up to date; record the schema version
    (idempotent, safe to repeat).

    The version row is written after every step, so a current version means nothing is
    missing and the statements are skipped.
    """
    if is_current(analytics):
        return
    for statement in create_statements(analytics):
        analytics.ddl(statement)
    _add_user_key(analytics)
    _copy_old_user_day(analytics)
    found = analytics.scalar(f"SELECT max(version) FROM {analytics.table('schema_version')}")
    if not found or int(found) < SCHEMA_VERSION:
        analytics.insert("schema_version", ["account_id", "version"], [(0, SCHEMA_VERSION)])


def _exists(analytics: Analytics, table: str, column: str | None = None) -> bool:
    """Whether TABLE (its local table, on the server we talk to) has COLUMN, or exists."""
    name = table + (ch.LOCAL_SUFFIX if analytics.target.cluster is not None else "")
    where = f"database = {literal(analytics.target.database)} AND "
    if column is None:
        sql = f"SELECT count() FROM system.tables WHERE {where}name = {literal(name)}"
    else:
        where += f"table = {literal(name)} AND name = {literal(column)}"
        sql = f"SELECT count() FROM system.columns WHERE {where}"
    return bool(analytics.scalar(sql))


def _add_user_key(analytics: Analytics) -> None:
    """Version 1 → 2: ``messages`` gains ``user_key``. Adding it rewrites nothing: parts
    written before compute it from openid when read."""
    if _exists(analytics, "messages", "user_key"):
        return
    for statement in ch.add_column(analytics.target, "messages", "user_key", _USER_KEY):
        analytics.ddl(statement)


def _copy_old_user_day(analytics: Analytics) -> None:
    """Version 1 → 2: the rows of ``user_day`` (keyed by openid) copied into
    :data:`USER_DAY` with their sender keys, versions unchanged, inside ClickHouse; then
    the old table is dropped. An interrupted copy is started again from an emptied
    target, since the old table is dropped only after the copy is complete."""
    if not _exists(analytics, "user_day"):
        return
    target = analytics.target
    if analytics.scalar(f"SELECT count() FROM {analytics.table(USER_DAY)}"):
        for statement in ch.drop_table(target, USER_DAY) + _create_table(target, USER_DAY):
            analytics.ddl(statement)
    names = [c for c, _ in _spec(USER_DAY)[1]]
    old = [ch.user_key("openid") if c == "user_key" else c for c in names]
    analytics.command(
        f"INSERT INTO {analytics.table(USER_DAY)} ({', '.join(names)})"
        f" SELECT {', '.join(old)} FROM {analytics.table('user_day')}"
    )
    for statement in ch.drop_table(target, "user_day"):
        analytics.ddl(statement)
