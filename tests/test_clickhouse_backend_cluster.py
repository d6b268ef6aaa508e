"""msgcube on the real ClickHouse cluster: the oracle, duplicates, a dead replica, a dead shard.

Every test drives msgcube as a user does — ``msgcube --analytics-db clickhouse://…?cluster=…``
commands and a real ``msgcube serve --workers 2`` — over its own database on the cluster
(tests/support/clickhouse_cluster.py), with accounts in a SQLite ``db``:

- the seven getupstreammsg* endpoints equal the brute-force oracle (tests/oracle.py) for
  accounts spread over both shards, and equal what msgcube answers on SQLite alone for the
  same data — moved from SQLite with the README's export, generated, or the demo's;
- concurrent and retried duplicate pushes through two workers are stored once;
- a replica SIGKILLed mid-stream (2 shards × 3 replicas: a quorum of 2 of 3 survives one
  dead replica) stops nothing and loses nothing acknowledged; the replica catches up;
- a whole shard down: the callback answers 500 (WeChat retries), the API errcode -1 with
  a rid, never ``success`` for a push not stored nor a wrong number; both recover.

The tests look into the cluster through the backend's contract: ``messages_local`` is the
replicated table under the Distributed ``messages``, ``account_id`` the account's id in
``db`` and ``msg_id`` WeChat's MsgId.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from clickhouse_driver import Client

from msgcube.analytics.client import Analytics
from msgcube.analytics.schema import migrate as migrate_analytics
from msgcube.analytics.url import parse_analytics_url
from msgcube.analytics.writes import MESSAGE_ID_COLUMNS
from msgcube.domain.traffic import generate_traffic, initial_followers
from msgcube.errors import AnalyticsError
from support.clickhouse_cluster import (
    ClickHouseCluster,
    Replica,
    clickhouse_cluster,
    require_binaries,
)
from support.deployment import (
    Deployment,
    datacube,
    oracle_answers,
    served,
    token_of,
)
from support.wechat_push import ACK, Pusher

from oracle import OracleAccount

pytestmark = [pytest.mark.clickhouse_cluster, pytest.mark.slow]

NOW = "2026-03-10T09:00:00+08:00"
NOW_DT = datetime.fromisoformat(NOW)
TZ = "Asia/Shanghai"
LAST = date(2026, 3, 8)
DAYS = 21
FIRST = LAST - timedelta(days=DAYS - 1)  # Monday 2026-02-16: three whole weeks and February
ASKED = (FIRST - timedelta(days=1), LAST + timedelta(days=1))
"""The range every comparison asks for: one empty day on each side of the data."""
SECRET = "chcluster-secret-0123456789abcdef"
TOKEN = "chcluster-token"
DEMO_APPID = "wx5d3c0be1a2f40001"
"""The demo's account (README: after ``make demo``)."""
RID = re.compile(r"^system error rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")

Record = dict[str, Any]
_databases = itertools.count(1)


def fresh_database() -> str:
    """A database name no other test (or concurrent run) on the cluster uses."""
    return f"msgcube_{os.getpid()}_{next(_databases)}"


def appid_of(tag: str, n: int) -> str:
    return f"wx{tag}{os.getpid()}x{n}"


def traffic(appid: str, seed: int, users: int, per_day: int) -> list[Record]:
    """DAYS days of realistic pushes (messages and follow events) ending on LAST."""
    return list(
        generate_traffic(
            appid=appid,
            original_id=f"gh_{appid[-12:]}",
            days=DAYS,
            users=users,
            seed=seed,
            end=LAST,
            tz=TZ,
            messages_per_day=per_day,
        )
    )


def oracle_of(records: Sequence[Record], followers: Sequence[str] | None = None) -> OracleAccount:
    oracle = OracleAccount(TZ)
    oracle.store(records)
    if followers is not None:
        oracle.import_followers(followers)
    return oracle


def write_jsonl(path: Path, records: Sequence[Record]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


EXPORT_SQL = """
SELECT json_object('FromUserName', s.openid, 'CreateTime', m.create_time,
                   'MsgType', m.msg_type_name, 'MsgId', m.msg_id)
FROM messages m JOIN senders s ON s.id = m.user_id
WHERE m.account_id = (SELECT id FROM accounts WHERE appid = :appid)
UNION ALL
SELECT json_object('FromUserName', openid, 'CreateTime', create_time,
                   'MsgType', 'event', 'Event', event)
FROM events WHERE account_id = (SELECT id FROM accounts WHERE appid = :appid)
"""
"""An account's messages and events as import lines: the README's migration query."""
FOLLOWERS_SQL = """
SELECT openid FROM followers WHERE account_id = (SELECT id FROM accounts WHERE appid = :appid)
"""


def export_from_sqlite(db: Path, appid: str, workdir: Path) -> tuple[Path, Path]:
    """The README's export of one account: (JSON Lines of its pushes, its follower list)."""
    conn = sqlite3.connect(db)
    try:
        lines = [line for (line,) in conn.execute(EXPORT_SQL, {"appid": appid})]
        fans = [openid for (openid,) in conn.execute(FOLLOWERS_SQL, {"appid": appid})]
    finally:
        conn.close()
    pushes, followers = workdir / f"{appid}.export.jsonl", workdir / f"{appid}.export.fans"
    pushes.write_text("".join(f"{line}\n" for line in lines))
    followers.write_text("".join(f"{openid}\n" for openid in fans))
    return pushes, followers


# --------------------------------------------------------------------------- ClickHouse


def query(rep: Replica, sql: str) -> list[tuple[Any, ...]]:
    """SQL on one server, over a connection of its own (closed again: no stray sockets)."""
    conn = Client("127.0.0.1", port=rep.tcp_port, connect_timeout=2, send_receive_timeout=60)
    try:
        return conn.execute(sql)  # type: ignore[no-any-return]
    finally:
        conn.disconnect()


def wait_rejoined(rep: Replica, timeout: float = 90.0) -> None:
    """Wait until a restarted replica's tables take quorum writes again.

    A quorum insert needs the replica's ``is_active`` node in ZooKeeper, and only the
    new process's node counts. After a SIGKILL the old session's node can outlive the
    restart by up to ZooKeeper's session timeout: meanwhile the replica looks active,
    then the node vanishes, and 18.16 creates its own only on its next try (every ~10 s).
    In that window a write that Distributed routes to it is refused (Code 164, "Replica
    is not active right now"): a push gets 500 (WeChat retries), an API call whose
    rollup writes there gets -1 — an errcode, never a wrong answer. So this waits for
    every replicated table's ``is_active`` created since the restart, not for
    ``system.replicas`` alone (which can read "active" on the old node).
    """
    deadline = time.monotonic() + timeout
    since = int(rep.started_at)  # ZooKeeper's ctime has whole seconds here
    paths = [p for (p,) in query(rep, "SELECT replica_path FROM system.replicas")]
    assert paths, f"{rep.name} has no replicated tables"

    def rejoined() -> bool:
        busy = "SELECT count() FROM system.replicas WHERE is_readonly OR is_session_expired"
        if query(rep, busy)[0][0]:
            return False
        for path in paths:
            node = query(
                rep,
                "SELECT toUInt32(ctime) FROM system.zookeeper"
                f" WHERE path = '{path}' AND name = 'is_active'",
            )
            if not node or node[0][0] < since:
                return False
        return True

    while not rejoined():
        assert time.monotonic() < deadline, f"{rep.name} did not rejoin within {timeout:.0f}s"
        time.sleep(0.2)


def stored_ids(rep: Replica, database: str) -> list[tuple[int, int]]:
    """(account_id, msg_id) of every message in REP's replica, after it caught up, deduplicated.

    FINAL collapses rows the ReplacingMergeTree has not merged yet; the count of raw rows
    per key is checked separately by :func:`duplicated_ids`.
    """
    query(rep, f"SYSTEM SYNC REPLICA `{database}`.messages_local")
    rows = query(rep, f"SELECT account_id, msg_id FROM `{database}`.messages_local FINAL")
    return sorted((int(a), int(m)) for a, m in rows)


def duplicated_ids(rep: Replica, database: str) -> list[tuple[Any, ...]]:
    """MsgIds held under two keys (e.g. two days) even after FINAL: should be none.

    Two copies under one key are allowed until the engine merges them (FINAL collapses
    them, and the rollup counts a MsgId once); two surviving copies would count twice
    in anything that does not deduplicate.
    """
    return query(
        rep,
        f"SELECT account_id, msg_id, count() FROM `{database}`.messages_local FINAL"
        " GROUP BY account_id, msg_id HAVING count() > 1 LIMIT 10",
    )


def shard_accounts(cluster: ClickHouseCluster, database: str) -> dict[int, set[int]]:
    """Shard (1-based) → the account ids whose messages it holds (asked of a live replica)."""
    out: dict[int, set[int]] = {}
    for shard in range(1, cluster.shards + 1):
        rep = next(r for r in cluster.shard(shard) if r.alive)
        rows = query(rep, f"SELECT DISTINCT account_id FROM `{database}`.messages_local")
        out[shard] = {int(a) for (a,) in rows}
    return out


def wait_until_stored(
    cluster: ClickHouseCluster, database: str, expected: dict[int, list[tuple[int, int]]]
) -> None:
    """Every replica of every shard holds exactly EXPECTED[shard] (a rejoined one catches up)."""
    for rep in cluster.replicas:
        deadline = time.monotonic() + 120
        while True:
            got = stored_ids(rep, database)
            if got == expected[rep.shard] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        missing = sorted(set(expected[rep.shard]) - set(got))
        extra = sorted(set(got) - set(expected[rep.shard]))
        assert not missing and not extra, (rep.name, missing[:10], extra[:10])


def expected_by_shard(
    placement: dict[int, set[int]], ids: dict[int, set[int]]
) -> dict[int, list[tuple[int, int]]]:
    """Shard → sorted (account_id, msg_id) it must hold, from each account's MsgIds."""
    return {
        shard: sorted((a, m) for a in accounts for m in ids.get(a, set()))
        for shard, accounts in placement.items()
    }


def msg_ids(records: Sequence[Record]) -> set[int]:
    return {int(r["MsgId"]) for r in records if "MsgId" in r}


def assert_spread(placement: dict[int, set[int]], accounts: set[int]) -> None:
    """Both shards hold accounts, no account is on two shards, none is missing."""
    assert all(placement.values()), placement
    assert set.union(*placement.values()) == accounts, placement
    assert sum(len(a) for a in placement.values()) == len(accounts), placement


def assert_answers_match(base_url: str, records: dict[str, list[Record]]) -> None:
    """Each account's seven endpoints over ASKED equal the oracle of all its records."""
    for appid, rs in records.items():
        want = oracle_answers(oracle_of(rs), NOW_DT, *ASKED)
        assert served(base_url, appid, SECRET, *ASKED) == want, appid


def assert_stored_once(
    cluster: ClickHouseCluster, database: str, side: Deployment, records: dict[str, list[Record]]
) -> dict[int, set[int]]:
    """Every MsgId of RECORDS on every replica of its account's shard; the accounts' placement."""
    ids = {side.account_id(a): msg_ids(rs) for a, rs in records.items()}
    placement = shard_accounts(cluster, database)
    assert_spread(placement, set(ids))
    wait_until_stored(cluster, database, expected_by_shard(placement, ids))
    return placement


# --------------------------------------------------------------------------- pushing


async def push_all(
    pushers: dict[str, Pusher], items: Sequence[tuple[str, Record]], concurrency: int = 24
) -> None:
    """Send every (appid, record) until acknowledged, CONCURRENCY at a time."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(appid: str, record: Record) -> None:
            async with sem:
                await pushers[appid].until_acked(client, record)

        await asyncio.gather(*(one(a, r) for a, r in items))


def acks(pushers: dict[str, Pusher]) -> int:
    """How many pushes were acknowledged so far (each push is sent until its first one)."""
    return sum(p.outcomes.count(ACK) for p in pushers.values())


def wait_for_acks(pushers: dict[str, Pusher], count: int, stream: threading.Thread) -> None:
    """Wait until COUNT pushes were acknowledged; AssertionError if the stream stalls."""
    deadline = time.monotonic() + 180
    while acks(pushers) < count:
        assert stream.is_alive(), "the push stream ended early"
        assert time.monotonic() < deadline, f"ingestion stalled at {acks(pushers)} of {count}"
        time.sleep(0.05)


def with_duplicates(items: Sequence[tuple[str, Record]]) -> list[tuple[str, Record]]:
    """Every push twice side by side (concurrent duplicates), every fifth once more later."""
    out: list[tuple[str, Record]] = []
    for i, item in enumerate(items):
        out += [item, item]
        if i % 5 == 0:
            out.insert(len(out) // 2, item)  # a late retry, long after the first two
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ch_cluster_3x(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseCluster]:
    """2 shards × 3 replicas: with a quorum of 2, one replica per shard may die."""
    require_binaries()
    with clickhouse_cluster(tmp_path_factory.mktemp("ch3"), shards=2, replicas=3) as cluster:
        yield cluster


# --------------------------------------------------------------------------- tests


def test_seven_endpoints_equal_the_oracle_and_sqlite(
    ch_cluster: ClickHouseCluster, tmp_path: Path
) -> None:
    database = fresh_database()
    on_cluster = Deployment(tmp_path / "ch", NOW, ch_cluster.url(database))
    on_sqlite = Deployment(tmp_path / "sqlite", NOW)
    oracles: dict[str, OracleAccount] = {}
    ids: dict[int, set[int]] = {}
    for n in range(4):
        appid = appid_of("chora", n)
        records = traffic(appid, seed=n, users=40, per_day=60 + 20 * n)
        jsonl = write_jsonl(tmp_path / f"{appid}.jsonl", records)
        followers = initial_followers(appid=appid, users=40, days=DAYS, seed=n) if n % 2 else None
        on_sqlite.add_account(appid, SECRET)
        on_sqlite.run("import", "--appid", appid, "--quiet", str(jsonl))
        if followers is not None:
            fans = tmp_path / f"{appid}.fans"
            fans.write_text("".join(f"{openid}\n" for openid in followers))
            on_sqlite.run("followers", "import", "--appid", appid, str(fans))
        # Onto the cluster the way the README moves an existing database: its messages,
        # events and followers exported with SQL, then imported with --analytics-db.
        on_cluster.add_account(appid, SECRET)
        exported, fans_exported = export_from_sqlite(on_sqlite.db, appid, tmp_path)
        on_cluster.run("import", "--appid", appid, "--quiet", str(exported))
        if followers is not None:
            on_cluster.run("followers", "import", "--appid", appid, str(fans_exported))
        if n == 0:  # the original file too: all of it stored already, nothing changes
            on_cluster.run("import", "--appid", appid, "--quiet", str(jsonl))
        oracles[appid] = oracle_of(records, followers)
        ids[on_cluster.account_id(appid)] = msg_ids(records)
    # One more account's traffic generated straight into each backend: no oracle, but
    # both backends must answer the same.
    generated = appid_of("chgen", 0)
    for side in (on_cluster, on_sqlite):
        side.add_account(generated, SECRET)
        days = ["--days", str(DAYS), "--end", LAST.isoformat()]
        side.run("generate", "--appid", generated, *days, "--users", "30", "--seed", "7")
        side.run("rollup")

    placement = shard_accounts(ch_cluster, database)
    generated_id = on_cluster.account_id(generated)
    assert_spread(placement, {*ids, generated_id})
    # Each replica holds its shard's accounts' messages, once (the generated ones aside).
    expected = expected_by_shard(placement, ids)
    for rep in ch_cluster.replicas:
        got = [key for key in stored_ids(rep, database) if key[0] != generated_id]
        assert got == expected[rep.shard], rep.name
        assert duplicated_ids(rep, database) == [], rep.name

    with on_cluster.server(workers=2) as ch_server, on_sqlite.server() as sqlite_server:
        for appid, oracle in oracles.items():
            want = oracle_answers(oracle, NOW_DT, *ASKED)
            assert served(ch_server.base_url, appid, SECRET, *ASKED) == want, appid
            assert served(sqlite_server.base_url, appid, SECRET, *ASKED) == want, appid
        on_ch = served(ch_server.base_url, generated, SECRET, *ASKED)
        assert on_ch == served(sqlite_server.base_url, generated, SECRET, *ASKED)
        assert any(on_ch.values())

    # ``msgcube stats`` reads the same rows (here with the flag rather than the variable).
    appid, oracle = next(iter(oracles.items()))
    flag = ["--analytics-db", ch_cluster.url(database)]
    plain = Deployment(on_cluster.workdir, NOW)  # db only; the flag adds the cluster
    for endpoint in ("getupstreammsgweek", "getupstreammsgdistmonth"):
        args = ["stats", endpoint, "--appid", appid, "2026-02-01", "2026-02-28", *flag]
        got = orjson.loads(plain.run(*args))
        assert got == oracle.served(endpoint, "2026-02-01", "2026-02-28", NOW_DT), endpoint


def test_demo_builds_on_the_cluster_as_on_sqlite(
    ch_cluster: ClickHouseCluster, tmp_path: Path
) -> None:
    on_cluster = Deployment(tmp_path / "ch", NOW, ch_cluster.url(fresh_database()))
    on_sqlite = Deployment(tmp_path / "sqlite", NOW)
    demo = ["demo", "--no-serve", "--days", "14", "--users", "40"]
    on_cluster.run(*demo)
    on_cluster.run(*demo)  # idempotent: the second run reuses the account and its data
    on_sqlite.run(*demo)
    for endpoint in ("getupstreammsg", "getupstreammsgdist", "getupstreammsgweek"):
        args = ["stats", endpoint, "--appid", DEMO_APPID, "2026-03-02", "2026-03-08"]
        got = orjson.loads(on_cluster.run(*args))
        assert got == orjson.loads(on_sqlite.run(*args)), endpoint
        assert got, endpoint


def test_concurrent_quorum_inserts_wait_for_each_other_instead_of_failing(
    ch_cluster: ClickHouseCluster,
) -> None:
    """18.16 refuses a quorum insert while another one into the same table awaits its
    quorum (code 286); the committers of two workers, inserting outside any lock, do that
    constantly. Each insert waits its turn: none fails, every row is stored once."""
    url = parse_analytics_url(ch_cluster.url(fresh_database()))
    assert url is not None
    analytics = Analytics(url)
    errors: list[AnalyticsError] = []

    def writer(account: int) -> None:
        for msg_id in range(12):
            try:
                analytics.insert(
                    "message_ids", MESSAGE_ID_COLUMNS, [(account, msg_id, 1772400000, 1, 0)]
                )
            except AnalyticsError as exc:
                errors.append(exc)

    try:
        migrate_analytics(analytics)
        threads = [threading.Thread(target=writer, args=(a,)) for a in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stored = analytics.rows(
            f"SELECT account_id, uniqExact(msg_id), count() FROM {analytics.table('message_ids')}"
            " GROUP BY account_id ORDER BY account_id"
        )
        assert stored == [(1, 12, 12), (2, 12, 12), (3, 12, 12)]
    finally:
        analytics.close()


def test_two_workers_store_duplicate_pushes_once(
    ch_cluster: ClickHouseCluster, tmp_path: Path
) -> None:
    database = fresh_database()
    side = Deployment(tmp_path, NOW, ch_cluster.url(database))
    records: dict[str, list[Record]] = {}
    for n in range(4):
        appid = appid_of("chdup", n)
        side.add_account(appid, SECRET, TOKEN)
        records[appid] = traffic(appid, seed=100 + n, users=12, per_day=8)
    items = [(a, r) for a, rs in records.items() for r in rs]
    with side.server(workers=2) as server:
        pushers = {a: Pusher(server.base_url, a, TOKEN) for a in records}
        asyncio.run(push_all(pushers, with_duplicates(items)))
        # Every push answered success at least twice; one acknowledgement is enough to
        # require it stored, and storing it twice would count it twice below.
        for pusher in pushers.values():
            assert pusher.outcomes.count(ACK) >= 2 * len(records[pusher.appid])
        assert_answers_match(server.base_url, records)

    assert_stored_once(ch_cluster, database, side, records)
    for rep in ch_cluster.replicas:
        assert duplicated_ids(rep, database) == [], rep.name


def test_a_replica_killed_mid_stream_loses_nothing_acknowledged(
    ch_cluster_3x: ClickHouseCluster, tmp_path: Path
) -> None:
    cluster = ch_cluster_3x
    database = fresh_database()
    # The victim: the first replica of shard 2 — msgcube's first entry to the cluster and
    # the replica of its shard that the Distributed tables prefer.
    victim = cluster.replica(2, 1)
    side = Deployment(tmp_path, NOW, cluster.url(database, (2, 1), (1, 1)))
    records: dict[str, list[Record]] = {}
    for n in range(4):
        appid = appid_of("chkill", n)
        side.add_account(appid, SECRET, TOKEN)
        records[appid] = traffic(appid, seed=200 + n, users=10, per_day=6)
    # Interleave the accounts (both shards) in CreateTime order: a stream, not batches.
    items = sorted(
        ((a, r) for a, rs in records.items() for r in rs), key=lambda i: i[1]["CreateTime"]
    )
    third = len(items) // 3

    with side.server(workers=2) as server:
        pushers = {a: Pusher(server.base_url, a, TOKEN) for a in records}
        tokens = {a: token_of(server.base_url, a, SECRET) for a in records}
        stream = threading.Thread(
            target=asyncio.run, args=(push_all(pushers, items, concurrency=8),), daemon=True
        )
        stream.start()
        try:
            wait_for_acks(pushers, third, stream)
            cluster.kill_replica(victim.shard, victim.replica)  # SIGKILL, pushes in flight
            dead_at = acks(pushers)
            try:
                # Ingestion goes on: another third is acknowledged while the replica is dead
                # (with 2 replicas per shard and a quorum of 2 it could not be).
                wait_for_acks(pushers, dead_at + third, stream)
                for appid in records:  # and the API answers, for accounts of both shards
                    answer = datacube(
                        server.base_url, tokens[appid], "getupstreammsg", "2026-02-20", "2026-02-26"
                    )
                    assert "list" in answer, answer
            finally:
                cluster.start_replica(victim.shard, victim.replica)
        finally:
            stream.join(timeout=600)
        assert not stream.is_alive()
        assert acks(pushers) == len(items)  # every push acknowledged once, none lost
        wait_rejoined(victim)  # until then a rollup routed to it answers -1 (see there)
        assert_answers_match(server.base_url, records)

    # Every acknowledged push is on every replica of its shard, the killed one included.
    placement = assert_stored_once(cluster, database, side, records)
    # Accounts of the victim's shard were pushed to throughout (the stream interleaves them).
    assert placement[victim.shard]


def test_a_whole_shard_down_is_a_500_and_an_errcode_never_a_wrong_answer(
    ch_cluster: ClickHouseCluster, tmp_path: Path
) -> None:
    database = fresh_database()
    side = Deployment(tmp_path, NOW, ch_cluster.url(database))  # entered through s1r1
    records: dict[str, list[Record]] = {}
    for n in range(4):
        appid = appid_of("chshard", n)
        side.add_account(appid, SECRET, TOKEN)
        records[appid] = traffic(appid, seed=300 + n, users=10, per_day=6)
    before = {a: rs[: len(rs) // 2] for a, rs in records.items()}
    during = {a: rs[len(rs) // 2 :] for a, rs in records.items()}

    with side.server(workers=2) as server:
        pushers = {a: Pusher(server.base_url, a, TOKEN) for a in records}
        asyncio.run(push_all(pushers, [(a, r) for a, rs in before.items() for r in rs]))
        placement = shard_accounts(ch_cluster, database)
        ids_of = {a: side.account_id(a) for a in records}
        assert_spread(placement, set(ids_of.values()))
        down = 2  # the shard the URL's server is not on
        on_down = {a for a, i in ids_of.items() if i in placement[down]}
        assert_answers_match(server.base_url, before)  # before the fault: the oracle's

        # The remaining pushes are late data: they make earlier answers pending again, so
        # no cached answer may stand in for them while the shard is away.
        tokens = {a: token_of(server.base_url, a, SECRET) for a in records}
        ch_cluster.stop_shard(down)
        try:
            sent = asyncio.run(send_once(pushers, {a: rs[:5] for a, rs in during.items()}))
            for appid, _, outcome in sent:
                if appid in on_down:  # never acknowledged: its shard cannot store it
                    assert outcome == "HTTP 500", (appid, outcome)
            for appid in on_down:
                body = datacube(
                    server.base_url, tokens[appid], "getupstreammsg", "2026-02-17", "2026-02-23"
                )
                assert set(body) == {"errcode", "errmsg"}, body
                assert body["errcode"] == -1, body
                assert RID.match(str(body["errmsg"])), body
        finally:
            ch_cluster.start_shard(down)
        # Whatever was acknowledged during the fault (pushes of the live shard, if the
        # backend could store them) is stored, before any retry.
        acked = [(ids_of[a], int(r["MsgId"])) for a, r, o in sent if o == ACK and "MsgId" in r]
        for rep in ch_cluster.shard(1):
            assert set(acked) <= set(stored_ids(rep, database)), rep.name

        # Back: the pushes retried (as WeChat would) are stored, the answers are right.
        asyncio.run(push_all(pushers, [(a, r) for a, rs in during.items() for r in rs]))
        assert_answers_match(server.base_url, records)
    assert assert_stored_once(ch_cluster, database, side, records) == placement


async def send_once(
    pushers: dict[str, Pusher], items: dict[str, list[Record]]
) -> list[tuple[str, Record, str]]:
    """Send each record once, no retry: (appid, record, outcome) of each."""
    out: list[tuple[str, Record, str]] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for appid, rs in items.items():
            for record in rs:
                out.append((appid, record, await pushers[appid].once(client, record)))
    return out
