"""Shared fixtures: real databases.

``store`` runs a test on SQLite (a file) and on PostgreSQL (a real server named by
``MSGCUBE_TEST_PG``, default ``postgresql://msgcube:msgcube@localhost/msgcube_test``).
Locally an unreachable PostgreSQL skips those runs; in CI (``CI`` set) it fails them,
so a broken database setup can never pass as green. ``chdb_store`` is SQLite for ``db``
with embedded ClickHouse (chdb) as ``analytics_db``: chdb runs one data directory per
process, so the whole session shares ``chdb_dir`` (tests isolate by fresh appids, and
other chdb tests use their own database inside it).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from msgcube.analytics.url import parse_analytics_url
from msgcube.settings import use_packaged_rules
from msgcube.storage.db import Store, open_store
from msgcube.storage.schema import metadata
from support.clickhouse_cluster import ClickHouseCluster, clickhouse_cluster, require_binaries

PG_URL = os.environ.get(
    "MSGCUBE_TEST_PG", "postgresql+psycopg://msgcube:msgcube@localhost/msgcube_test"
)
# The oracles compute local days with the rules msgcube's entry points use.
use_packaged_rules()

_appids = itertools.count(1)

STAMP = 1_773_100_800
"""2026-03-10T00:00:00Z: the clock reading for audit stamps (``created_at``,
``received_at``) in tests that store rows directly and never look at those columns."""


_run_id = secrets.token_hex(3)


def fresh_appid(prefix: str = "wxtest") -> str:
    """A new appid per call, unique across runs: tests sharing a database stay isolated."""
    return f"{prefix}{_run_id}x{next(_appids)}"


def _pg_store() -> Store:
    try:
        store = open_store(PG_URL)
        with store.read() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable ({exc.__class__.__name__}); set MSGCUBE_TEST_PG")
    return store


def _truncate(store: Store) -> None:
    with store.write() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(scope="session")
def pg_store() -> Iterator[Store]:
    store = _pg_store()
    if os.environ.get("CI"):
        # Only in CI, where this is the only run: locally, concurrent runs share the
        # database and isolate themselves by appid instead.
        _truncate(store)
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("db") / "msgcube.db"
    store = open_store(f"sqlite:///{path}")
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chdb data directory of this test process."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_store(tmp_path_factory: pytest.TempPathFactory, chdb_dir: Path) -> Iterator[Store]:
    """``db`` on a SQLite file, messages and statistics in chdb (``analytics_db``)."""
    path: Path = tmp_path_factory.mktemp("db") / "msgcube.db"
    store = open_store(f"sqlite:///{path}", analytics=parse_analytics_url(f"chdb://{chdb_dir}"))
    yield store
    store.dispose()


STORE_FIXTURES = {"sqlite": "sqlite_store", "postgres": "pg_store", "chdb": "chdb_store"}
"""Backend name → its session store fixture."""
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "chdb"]
"""Every backend a store test runs on."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Store:
    """One database per backend for the whole session; isolate tests with ``fresh_appid``."""
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def ch_cluster() -> Iterator[ClickHouseCluster]:
    """The real ClickHouse cluster (2 shards x 2 replicas + ZooKeeper), started once per run.

    Skipped locally when Debian's clickhouse-server/zookeeper are missing; failed in CI.
    A test that kills servers starts them again before it ends (support/clickhouse_cluster).
    """
    require_binaries()
    with clickhouse_cluster() as cluster:
        yield cluster
