"""The real cluster the ClickHouse backend runs on: 2 shards × 2 replicas + ZooKeeper.

These tests prove the infrastructure, not msgcube's storage: the tables the dialect
module spells are created ON CLUSTER, quorum inserts reach both replicas of the right
shard, and the two faults the backend must handle behave as measured here:

- one replica SIGKILLed: a quorum insert for its shard waits ``insert_quorum_timeout``
  and fails with 319 (status unknown: the block *is* on the live replica and reaches
  the other when it rejoins); later ones fail with 286 (previous quorum unsatisfied) or
  285 (too few live replicas, once ZooKeeper expired the dead session) until it is back.
  No acknowledged block is lost, and a retried block is deduplicated. With three
  replicas per shard and a quorum of two, one dead replica does not stall inserts.
- a whole shard down: reads and inserts through the Distributed table fail with 279
  (all connection tries failed) — never a partial answer. In 18.16 a synchronous
  Distributed insert contacts *every* shard, so it fails even for rows of live shards.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from msgcube.storage import clickhouse_dialect as ch
from support.clickhouse_cluster import (
    CLUSTER,
    REPLICAS,
    SHARDS,
    ClickHouseCluster,
    Replica,
    clickhouse_cluster,
    require_binaries,
)
from support.clickhouse_tables import COLUMN_NAMES, create_messages

pytestmark = pytest.mark.clickhouse_cluster

INSERT_COLUMNS = ", ".join(COLUMN_NAMES)
Row = tuple[int, int, int, int, str, int]

#: ClickHouse error codes this module asserts on (ErrorCodes.cpp of 18.16).
ALL_CONNECTION_TRIES_FAILED = 279
TOO_FEW_LIVE_REPLICAS = 285
UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE = 286
UNKNOWN_STATUS_OF_INSERT = 319
QUORUM_FAILURES = {
    TOO_FEW_LIVE_REPLICAS,
    UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE,
    UNKNOWN_STATUS_OF_INSERT,
}

_databases = itertools.count(1)
_clients: list[Client] = []


@pytest.fixture
def cluster(ch_cluster: ClickHouseCluster) -> ClickHouseCluster:
    return ch_cluster


@pytest.fixture(autouse=True)
def _disconnect() -> Iterator[None]:
    """Close every client a test opened (an open socket is a warning, so an error)."""
    yield
    while _clients:
        _clients.pop().disconnect()


def client(rep: Replica) -> Client:
    """A native-protocol client of one server (short timeouts: a dead one fails fast)."""
    conn = Client("127.0.0.1", port=rep.tcp_port, connect_timeout=2, send_receive_timeout=60)
    _clients.append(conn)
    return conn


def make_tables(cluster: ClickHouseCluster) -> ch.Target:
    """A fresh database holding ``messages`` (ReplicatedReplacingMergeTree + Distributed)."""
    target = ch.Target(f"t{next(_databases)}", CLUSTER)
    first = client(cluster.replicas[0])
    first.execute(ch.create_database(target))
    for statement in create_messages(target):
        hosts = first.execute(statement)
        # An ON CLUSTER statement answers one row per server: (host, port, status, error, …).
        assert sorted((port, status) for _, port, status, *_ in hosts) == sorted(
            (port, 0) for port in cluster.tcp_ports
        )
    return target


def rows_for(account: int, keys: range, version: int = 1) -> list[Row]:
    return [(account, key, key % 7, 1_700_000_000 + key, "text", version) for key in keys]


def insert(conn: Client, table: str, rows: list[Row], **settings: int) -> None:
    conn.execute(f"INSERT INTO {table} ({INSERT_COLUMNS}) VALUES", rows, settings=settings)


def insert_retrying(conn: Client, table: str, rows: list[Row], **settings: int) -> None:
    """INSERT until acknowledged, retrying the quorum failures ("client must retry")."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return insert(conn, table, rows, **settings)
        except ServerException as exc:
            if exc.code not in QUORUM_FAILURES or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def local_rows(conn: Client, target: ch.Target) -> list[tuple[int, int]]:
    return sorted(
        conn.execute(f"SELECT account_id, msg_id FROM {ch.local_table(target, 'messages')}")
    )


def wait_for_rows(rep: Replica, target: ch.Target, expected: list[tuple[int, int]]) -> None:
    """Wait until REP's local table holds exactly EXPECTED (a rejoined replica catches up)."""
    conn = client(rep)
    deadline = time.monotonic() + 90
    while True:
        conn.execute(ch.sync_replica(target, "messages"))
        got = local_rows(conn, target)
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == expected, rep.name


def shard_of(conn: Client, account: int) -> int:
    """The shard (1-based) the Distributed table sends ACCOUNT's rows to."""
    [(index,)] = conn.execute(f"SELECT sipHash64(toUInt32({account})) % {SHARDS}")
    return int(index) + 1


def sync(cluster: ClickHouseCluster, target: ch.Target) -> None:
    for rep in cluster.replicas:
        client(rep).execute(ch.sync_replica(target, "messages"))


def test_cluster_is_two_shards_of_two_replicas_of_18_16(cluster: ClickHouseCluster) -> None:
    conn = client(cluster.replicas[0])
    rows = conn.execute(
        "SELECT shard_num, replica_num, port FROM system.clusters WHERE cluster = %(c)s",
        {"c": CLUSTER},
    )
    assert sorted(rows) == sorted((r.shard, r.replica, r.tcp_port) for r in cluster.replicas)
    assert len(rows) == SHARDS * REPLICAS
    for rep in cluster.replicas:
        macros = dict(client(rep).execute("SELECT macro, substitution FROM system.macros"))
        assert macros["shard"] == str(rep.shard)
        assert macros["replica"] == rep.name
    [(version,)] = conn.execute("SELECT version()")
    assert version.startswith("18.16.")


def test_quorum_insert_reaches_both_replicas_of_one_shard(cluster: ClickHouseCluster) -> None:
    target = make_tables(cluster)
    conn = client(cluster.replicas[0])
    accounts = range(1, 9)
    rows = [
        row
        for account in accounts
        for row in rows_for(account, range(account * 100, account * 100 + 25))
    ]
    table = ch.qualified(target, "messages")
    insert(conn, table, rows, **ch.insert_settings(target))
    sync(cluster, target)

    expected_by_shard = {
        shard: sorted((a, k) for a, k, *_ in rows if shard_of(conn, a) == shard)
        for shard in range(1, SHARDS + 1)
    }
    # Both shards hold some accounts, and each replica holds exactly its shard's rows.
    assert all(expected_by_shard.values())
    for rep in cluster.replicas:
        assert local_rows(client(rep), target) == expected_by_shard[rep.shard], rep.name
    got = conn.execute(f"SELECT account_id, msg_id FROM {table} ORDER BY account_id, msg_id")
    assert got == sorted((a, k) for a, k, *_ in rows)

    # Exact distinct counts per account, gathered from both shards.
    by_account = conn.execute(
        f"SELECT account_id, uniqExact(user_id), count() FROM {table}"
        " GROUP BY account_id ORDER BY account_id"
    )
    assert by_account == [(a, 7, 25) for a in accounts]

    # The same block again (a retried insert) is dropped by block deduplication; a row
    # with an existing key and a newer version replaces the old one under FINAL.
    insert(client(cluster.replicas[3]), table, rows, **ch.insert_settings(target))
    insert(conn, table, rows_for(1, range(100, 101), version=2), **ch.insert_settings(target))
    sync(cluster, target)
    [(total,)] = conn.execute(f"SELECT count() FROM {table}")
    assert total == len(rows) + 1
    final = conn.execute(
        f"SELECT account_id, msg_id, version FROM {table} FINAL"
        " WHERE account_id = 1 ORDER BY msg_id LIMIT 2"
    )
    assert final == [(1, 100, 2), (1, 101, 1)]


def test_replica_killed_mid_insert_loses_nothing_acknowledged(cluster: ClickHouseCluster) -> None:
    target = make_tables(cluster)
    live, victim = cluster.shard(1)
    conn = client(live)
    account = next(a for a in itertools.count(1) if shard_of(conn, a) == 1)
    table = ch.local_table(target, "messages")
    settings = ch.insert_settings(target, timeout_ms=3000)
    acked: list[int] = []
    failed: dict[int, int] = {}
    stop = threading.Event()

    def batch(number: int) -> list[Row]:
        return rows_for(account, range(number * 10, number * 10 + 10))

    def writer() -> None:
        writer_conn = client(live)
        for number in itertools.count():
            if stop.is_set():
                return
            try:
                insert(writer_conn, table, batch(number), **settings)
                acked.append(number)
            except ServerException as exc:
                failed[number] = exc.code
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acked) < 5 and thread.is_alive():
            time.sleep(0.05)
        assert thread.is_alive(), "the writer died before the kill"
        cluster.kill_replica(victim.shard, victim.replica)
        deadline = time.monotonic() + 60
        while len(failed) < 3 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
        cluster.start_replica(victim.shard, victim.replica)

    assert len(failed) >= 3, "inserts kept succeeding with one of two replicas dead"
    assert set(failed.values()) <= QUORUM_FAILURES, failed
    # The first insert after the kill still counts the dead replica as active: it waits
    # for the quorum and ends in "unknown status".
    assert failed[min(failed)] == UNKNOWN_STATUS_OF_INSERT
    # Every acknowledged batch is on the replica that stayed up.
    present = {key for _, key in local_rows(conn, target)}
    for number in acked:
        assert set(range(number * 10, number * 10 + 10)) <= present, f"acked batch {number} lost"

    # Retrying every failed batch (same rows, same order) leaves each key exactly once:
    # a block already written before its "unknown status" is deduplicated. The rejoined
    # replica only counts again once ZooKeeper dropped its old session, so retries meet
    # 286 for a few seconds; a retry acknowledged with quorum 2 is on both replicas.
    for number in sorted(failed):
        insert_retrying(conn, table, batch(number), **ch.insert_settings(target, timeout_ms=30_000))
    numbers = sorted([*acked, *failed])
    expected = [(account, key) for n in numbers for key in range(n * 10, n * 10 + 10)]
    assert local_rows(conn, target) == expected
    wait_for_rows(victim, target, expected)


def test_whole_shard_down_is_an_error_never_a_partial_answer(cluster: ClickHouseCluster) -> None:
    target = make_tables(cluster)
    conn = client(cluster.shard(1)[0])
    table = ch.qualified(target, "messages")
    accounts = {shard_of(conn, a): a for a in range(1, 20)}
    rows = [row for a in accounts.values() for row in rows_for(a, range(10))]
    insert(conn, table, rows, **ch.insert_settings(target))
    [(skip,)] = conn.execute(
        "SELECT value FROM system.settings WHERE name = 'skip_unavailable_shards'"
    )
    assert skip == "0"  # the default: an unreachable shard fails the query

    cluster.stop_shard(2)
    try:
        with pytest.raises(ServerException) as read_error:
            conn.execute(f"SELECT count() FROM {table}")
        assert read_error.value.code == ALL_CONNECTION_TRIES_FAILED
        # 18.16's synchronous Distributed insert opens every shard, so rows of the live
        # shard fail too: the backend must route inserts to the shard's own replicas.
        with pytest.raises(ServerException) as write_error:
            insert(conn, table, rows_for(accounts[1], range(10, 11)), **ch.insert_settings(target))
        assert write_error.value.code == ALL_CONNECTION_TRIES_FAILED
        # The live shard's own table still answers for its accounts.
        [(own,)] = conn.execute(f"SELECT count() FROM {ch.local_table(target, 'messages')}")
        assert own == 10
    finally:
        cluster.start_shard(2)
    [(total,)] = client(cluster.shard(2)[1]).execute(f"SELECT count() FROM {table}")
    assert total == len(rows)


def test_three_replicas_with_quorum_two_ingest_through_one_dead(tmp_path: Path) -> None:
    """The way out of the two-replica dilemma above: quorum 2 of 3 never stalls on one."""
    require_binaries()
    with clickhouse_cluster(tmp_path, shards=1, replicas=3) as three:
        target = make_tables(three)
        first, _, victim = three.shard(1)
        conn = client(first)
        table = ch.local_table(target, "messages")
        settings = ch.insert_settings(target, timeout_ms=30_000)
        insert(conn, table, rows_for(1, range(0, 10)), **settings)
        three.kill_replica(victim.shard, victim.replica)
        for number in range(1, 6):  # each acknowledged by the two live replicas
            insert(conn, table, rows_for(1, range(number * 10, number * 10 + 10)), **settings)
        three.start_replica(victim.shard, victim.replica)
        for rep in three.replicas:
            wait_for_rows(rep, target, [(1, key) for key in range(60)])
