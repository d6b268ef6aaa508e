"""The ClickHouse SQL spellings msgcube uses, in one place, for both forms it runs on.

Two forms of ``analytics_db`` exist: a real server or cluster (Debian ships release 18.16,
from 2018) and embedded chdb (a current release, 26.x). Every statement here is spelled
so that 18.16 accepts it, and the same text (minus ``ON CLUSTER`` and the replicated
engines) runs on chdb, so one set of queries serves both. What 18.16 lacks, and so what
never appears here or in the queries built on it:

- ``LowCardinality(String)``: plain ``String`` (msg_type_name and friends are short).
- ``DateTime64``: ``DateTime`` (whole seconds; WeChat's CreateTime is seconds anyway).
- ``WITH name AS (SELECT …)``: 18.16's WITH binds expressions only; use a subquery in FROM.
- window functions: aggregate in a subquery instead.
- server-side ``{name:Type}`` parameters: values are bound client-side (clickhouse-driver
  renders ``%(name)s`` itself) or rendered with :func:`quote_string`.
- ``insert_deduplication_token`` (22.x): replicated tables deduplicate a retried insert by
  the hash of its block instead, so a retry must resend the same rows in the same order.
- ``DROP TABLE … SYNC`` (later releases): plain ``DROP TABLE``.

Measured on 18.16 with 2 replicas per shard (tests/test_clickhouse_cluster.py): a
synchronous insert through the Distributed table opens *every* shard, so one shard down
fails inserts for all; and with ``insert_quorum=2`` a shard with a dead replica accepts
no insert (319 after the quorum timeout while ZooKeeper still counts the dead replica,
then 286/285) until the replica is back. A backend that must keep ingesting through one
dead replica therefore inserts into the shard's local table directly and needs either a
third replica per shard (quorum 2 of 3 was measured not to stall on one dead replica) or
a durable spool for the refused batches.

Nothing here does I/O: these functions return SQL text (and settings) for the backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Engine = Literal["MergeTree", "ReplacingMergeTree"]

#: The type of text columns: ``LowCardinality(String)`` does not exist in 18.16.
STRING = "String"
#: The type of timestamps: ``DateTime64`` does not exist in 18.16; seconds suffice.
DATETIME = "DateTime"

#: The sender key: 16 bytes in both releases (18.16 has no ``UInt128``).
USER_KEY_TYPE = "FixedString(16)"

LOCAL_SUFFIX = "_local"
"""In the cluster form, the replicated table on each server is ``<table>_local``; the
name without the suffix is the Distributed table that spreads rows and gathers answers."""


@dataclass(frozen=True)
class Target:
    """Where tables live: a database, and the ``remote_servers`` cluster or None (chdb)."""

    database: str
    cluster: str | None = None


def quote_ident(name: str) -> str:
    """NAME as a back-quoted identifier (backslash and back-quote escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """VALUE as a single-quoted string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _on_cluster(target: Target) -> str:
    return "" if target.cluster is None else f" ON CLUSTER {quote_ident(target.cluster)}"


def qualified(target: Target, table: str) -> str:
    """``db.table`` — the name queries and inserts use in either form.

    In the cluster form this is the Distributed table, so reads gather all shards and
    writes are routed by the sharding key; on chdb it is the table itself.
    """
    return f"{quote_ident(target.database)}.{quote_ident(table)}"


def local_table(target: Target, table: str) -> str:
    """The table that holds the rows on one server: ``db.table_local`` on a cluster."""
    suffix = LOCAL_SUFFIX if target.cluster is not None else ""
    return qualified(target, table + suffix)


def create_database(target: Target) -> str:
    """CREATE DATABASE on every server of the cluster (or in chdb)."""
    return f"CREATE DATABASE IF NOT EXISTS {quote_ident(target.database)}{_on_cluster(target)}"


def zookeeper_path(target: Target, table: str) -> str:
    """The replication path of TABLE's local table; ``{shard}`` is each server's macro.

    Replicas of one shard share a path (and so replicate each other); shards differ.
    """
    return f"/clickhouse/tables/{{shard}}/{target.database}/{table}{LOCAL_SUFFIX}"


def _engine(target: Target, table: str, engine: Engine, version: str | None) -> str:
    args: list[str] = []
    if target.cluster is not None:
        args += [quote_string(zookeeper_path(target, table)), quote_string("{replica}")]
    if version is not None:
        if engine != "ReplacingMergeTree":
            raise ValueError("a version column only applies to ReplacingMergeTree")
        args.append(quote_ident(version))
    prefix = "Replicated" if target.cluster is not None else ""
    # 18.16 accepts ``MergeTree()`` and ``MergeTree``; the parenthesised form is uniform.
    return f"{prefix}{engine}({', '.join(args)})"


def create_table(
    target: Target,
    table: str,
    columns: Sequence[tuple[str, str]],
    order_by: Sequence[str],
    *,
    engine: Engine = "MergeTree",
    version: str | None = None,
    partition_by: str | None = None,
    shard_key: str = "account_id",
) -> list[str]:
    """The statements that create TABLE, in order.

    On chdb: one ``(Replacing)MergeTree`` table. On a cluster: the replicated table
    ``<table>_local`` on every server (``ON CLUSTER``, path per ``{shard}``, ``{replica}``
    macro), then the Distributed table ``<table>`` over it, sharded by
    ``sipHash64(shard_key)`` so all rows of one account land on one shard (its exact
    distinct counts never need another shard) and sequential account ids still spread.
    ``ReplacingMergeTree`` collapses rows with equal ORDER BY keys at merge time (and
    under ``FINAL``); VERSION, when given, keeps the row with the largest version.
    """
    if not columns or not order_by:
        raise ValueError("a table needs columns and an ORDER BY key")
    cols = ", ".join(f"{quote_ident(name)} {type_}" for name, type_ in columns)
    keys = ", ".join(quote_ident(k) for k in order_by)
    partition = "" if partition_by is None else f" PARTITION BY {partition_by}"
    create = (
        f"CREATE TABLE IF NOT EXISTS {local_table(target, table)}{_on_cluster(target)}"
        f" ({cols}) ENGINE = {_engine(target, table, engine, version)}"
        f"{partition} ORDER BY ({keys})"
    )
    if target.cluster is None:
        return [create]
    return [create, create_distributed(target, table, shard_key)]


def create_distributed(target: Target, table: str, shard_key: str = "account_id") -> str:
    """The Distributed table over TABLE's local tables (cluster form only); it takes the
    local table's columns as they are when it is created."""
    if target.cluster is None:
        raise ValueError("a Distributed table needs a cluster")
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(target, table)}{_on_cluster(target)}"
        f" AS {local_table(target, table)}"
        f" ENGINE = Distributed({quote_ident(target.cluster)}, {quote_ident(target.database)},"
        f" {quote_ident(table + LOCAL_SUFFIX)}, sipHash64({quote_ident(shard_key)}))"
    )


def add_column(target: Target, table: str, name: str, type_: str) -> list[str]:
    """The statements that add column NAME to TABLE on every server.

    18.16 knows no ``ADD COLUMN IF NOT EXISTS`` (callers ask ``system.columns`` first)
    and refuses ``ALTER … ON CLUSTER`` on a Distributed table (code 371): on a cluster
    the local tables are altered and the Distributed table is created again over them
    (until then the table is missing for a moment: inserts fail, and are retried).
    """
    alter = f"ALTER TABLE {local_table(target, table)}{_on_cluster(target)} ADD COLUMN"
    alter += f" {quote_ident(name)} {type_}"
    if target.cluster is None:
        return [alter]
    return [alter, drop_table(target, table)[0], create_distributed(target, table)]


def drop_table(target: Target, table: str) -> list[str]:
    """The statements that drop TABLE (the Distributed table first, then the local one)."""
    if target.cluster is None:
        return [f"DROP TABLE IF EXISTS {qualified(target, table)}"]
    return [
        f"DROP TABLE IF EXISTS {qualified(target, table)}{_on_cluster(target)}",
        f"DROP TABLE IF EXISTS {local_table(target, table)}{_on_cluster(target)}",
    ]


def delete_where(target: Target, table: str, condition: str) -> str:
    """Delete TABLE's rows matching CONDITION on every server: an asynchronous mutation of
    the local tables (``ALTER … DELETE``; the Distributed table takes none)."""
    return f"ALTER TABLE {local_table(target, table)}{_on_cluster(target)} DELETE WHERE {condition}"


def sync_replica(target: Target, table: str) -> str:
    """Wait on one server until its replica of TABLE has fetched what ZooKeeper lists."""
    return f"SYSTEM SYNC REPLICA {local_table(target, table)}"


def insert_settings(
    target: Target, *, quorum: int = 2, timeout_ms: int = 10_000
) -> Mapping[str, int]:
    """The settings of an acknowledged insert (empty on chdb: one process, one copy).

    ``insert_distributed_sync``: the Distributed table forwards the rows to their shard
    before answering; without it, it acknowledges after queueing them in a local file on
    the server it was sent to — acknowledged but not yet on any replica of their shard.
    ``insert_quorum``: the shard's replica answers only after QUORUM replicas hold the
    block, so one dead replica loses nothing acknowledged; with fewer live replicas the
    insert fails (it is never silently under-replicated). ``insert_quorum_timeout``
    bounds the wait (18.16's default is 10 minutes) when a replica dies mid-insert.
    """
    if target.cluster is None:
        return {}
    return {
        "insert_distributed_sync": 1,
        "insert_quorum": quorum,
        "insert_quorum_timeout": timeout_ms,
    }


def bulk_insert_settings(current: bool) -> Mapping[str, int]:
    """Settings of the rollup's ``INSERT … SELECT`` on a CURRENT engine (chdb), none on 18.16.

    Its SELECTs group by the target's key, so merging equal keys while inserting
    (``optimize_on_insert``) finds nothing; writing the parts on several threads
    (``max_insert_threads``) took the 1.4M user-day rows of 2M messages from ~3 s to ~2 s.
    18.16 knows neither setting and refuses a query naming an unknown one.
    """
    return {"optimize_on_insert": 0, "max_insert_threads": 2} if current else {}


def user_key(openid: str) -> str:
    """The sender key of the openid expression OPENID: its 128-bit SipHash.

    The rollup groups and counts senders by this fixed-width key instead of the 28-byte
    openid strings. It is exactly as exact as ClickHouse's own ``uniqExact`` over a
    String, which keeps the same 128-bit SipHash of each string in its set (not the
    string): ``sipHash128`` and that set's key are both ``SipHash::update`` of the bytes
    then ``get128``. 18.16 and 26.9 return the same 16 bytes (a stored key stays valid
    across an upgrade), e.g. ``B6B415A2DA966B6C685A65E54C12A353`` for ``'abc'``.
    """
    return f"sipHash128({openid})"


def local_seconds(column: str, base: int, changes: Sequence[tuple[int, int]]) -> str:
    """COLUMN (a Unix time) as seconds of local wall-clock time since 1970-01-01, given a
    zone's offset BASE and its CHANGES (instant, offset from then on; ``utc_offsets``).

    Local days and hours come from this and :func:`local_day` / :func:`local_hour`, not from
    ``toDateTime(t, zone)``: ClickHouse's bundled time-zone database is not Python's (chdb
    26.9 carries 2026c, a Debian system 2025b: America/Vancouver, Europe/Chisinau,
    Africa/Casablanca differ), and its lookup rounds an offset change that is not on a
    quarter-hour (Antarctica/Casey's 16:01 UTC in 2020–2022). Passing the offsets makes
    every backend use the one database ``db``'s ingest uses.
    """
    if not changes:
        return f"(toInt64({column}) + {base})"
    branches = []
    offset = base
    for instant, after in changes:
        branches.append(f"{column} < {instant}, {offset}")
        offset = after
    return f"(toInt64({column}) + multiIf({', '.join(branches)}, {offset}))"


def local_day(seconds: str) -> str:
    """The local date of a :func:`local_seconds` value (never negative: CreateTime ≥ 2000)."""
    return f"(toDate('1970-01-01') + intDiv({seconds}, 86400))"


def local_hour(seconds: str) -> str:
    """The local hour (0–23) of a :func:`local_seconds` value."""
    return f"intDiv({seconds} % 86400, 3600)"
