"""The tables ``sync`` keeps in the *user's* database (not msgcube's own storage).

One table per endpoint, ``wechat_<name>`` (``wechat_getupstreammsg`` …), generated from
the endpoint table, keyed by its natural key — (appid, ref_date, [ref_hour,]
msg_type | count_interval) — never by date alone, so several accounts share the tables
and a re-sync overwrites a row instead of duplicating it. ``wechat_sync_state`` records,
per account and dataset, the contiguous range of days already mirrored.

The schema is plain (dates as DATE, counts as BIGINT) so the user's own SQL reads it
without knowing msgcube; it is created with ``CREATE TABLE IF NOT EXISTS`` (under an
advisory lock on PostgreSQL, where two concurrent creators would otherwise collide).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

from msgcube.client.call_plan import key_fields, measure_fields
from msgcube.domain.endpoints import ENDPOINTS, Endpoint

TABLE_PREFIX = "wechat_"
STATE_TABLE = "wechat_sync_state"
_PG_SCHEMA_LOCK = 7400264  # pg_advisory_xact_lock id (msgcube's own migrations use 7400263)

metadata = MetaData()

sync_state = Table(
    STATE_TABLE,
    metadata,
    Column("appid", String(64), primary_key=True),
    Column("dataset", String(64), primary_key=True),
    Column("first_day", Date, nullable=False),
    Column("last_complete_day", Date, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def table_name(ep: Endpoint) -> str:
    return f"{TABLE_PREFIX}{ep.name}"


def _dataset_table(ep: Endpoint) -> Table:
    columns: list[Column[Any]] = [Column("appid", String(64), primary_key=True)]
    for name in key_fields(ep):
        kind = Date if name == "ref_date" else Integer
        columns.append(Column(name, kind, primary_key=True, autoincrement=False))
    columns += [Column(name, BigInteger, nullable=False) for name in measure_fields(ep)]
    columns.append(Column("updated_at", DateTime(timezone=True), nullable=False))
    return Table(table_name(ep), metadata, *columns)


TABLES: dict[str, Table] = {ep.name: _dataset_table(ep) for ep in ENDPOINTS}
"""Endpoint name → its table in the user's database."""


MIRROR_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")


def normalize_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` → the psycopg 3 driver msgcube ships with;
    ``ValueError`` for a database sync cannot write to (it would fail importing a
    driver that is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    scheme = url.partition("://")[0].lower()
    if scheme not in MIRROR_SCHEMES:
        raise ValueError(f"sync writes to SQLite or PostgreSQL, not {scheme}://")
    return url


def open_database(url: str) -> Engine:
    """An engine for the user's database: a SQLite file or PostgreSQL.

    SQLite gets WAL and a busy timeout so a dashboard can read while sync writes, and two
    sync processes queue instead of failing. (An ``Engine`` passed to ``sync`` is used as
    it is.)
    """
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # Each window commits rows and state together, so NORMAL (no fsync per commit in
        # WAL mode) can lose the last windows on power loss but never desynchronise them.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create the missing tables (idempotent, safe with concurrent callers)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))


def upsert(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    update: dict[str, Callable[[Any], Any]],
) -> Any:
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` in the connection's dialect.

    ``update`` maps a column to a function of ``excluded`` (the row being inserted).
    """
    stmt: Any = (
        postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    )
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={column: value(stmt.excluded) for column, value in update.items()},
    )
