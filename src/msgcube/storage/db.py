"""Opening a database: engines tuned per backend, transactions, migrations.

SQLite is the embedded default (one file, WAL, ``synchronous=FULL`` because a push is
acknowledged only once it is durable). Write transactions on SQLite start with
``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of deadlocking when a
reader upgrades; read transactions use a plain ``BEGIN`` and see one WAL snapshot.
PostgreSQL uses psycopg 3 with its default READ COMMITTED isolation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from msgcube.analytics.client import Analytics
from msgcube.analytics.schema import migrate as migrate_analytics
from msgcube.analytics.url import AnalyticsUrl
from msgcube.storage.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

_ANALYTICS_OPTION = "msgcube_analytics"
_WAL_AUTOCHECKPOINT = 1000  # SQLite's default, in pages


class Store:
    """A database: an engine plus the transaction styles msgcube uses.

    ``read()`` is a consistent snapshot; ``write()`` is a serialised write transaction.
    ``analytics``, when set (the ``analytics_db`` setting), holds messages, events,
    followers and the statistics; every connection of the store carries it too
    (``analytics_of``), so code handed only a connection dispatches on it.
    """

    def __init__(self, engine: Engine, analytics: Analytics | None = None) -> None:
        self.engine = engine
        self.analytics = analytics
        if analytics is not None:
            engine.update_execution_options(**{_ANALYTICS_OPTION: analytics})
        self.dialect: str = engine.dialect.name
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._held = threading.local()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self, *, checkpoint: bool = True) -> Iterator[Connection]:
        """A write transaction, committed on success, rolled back on error.

        On SQLite one process-wide lock keeps this process's writers from competing for
        the file lock (other processes still queue on ``busy_timeout``). With
        ``checkpoint=False`` this commit never runs SQLite's automatic WAL checkpoint
        (copying the log back into the database and an fsync of it, every ~1000 pages),
        so its caller — the push committer, whose acknowledgements wait on the commit —
        must checkpoint elsewhere (``checkpoint_wal``). Ignored on PostgreSQL.
        """
        if self._write_lock is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with self._write_lock, self.engine.connect() as raw:
            dbapi: Any = None if checkpoint else raw.connection.dbapi_connection
            if dbapi is not None:
                dbapi.execute("PRAGMA wal_autocheckpoint=0")
            try:
                conn = raw.execution_options(sqlite_immediate=True)
                with conn.begin():
                    yield conn
            finally:
                if dbapi is not None:
                    # Back to SQLite's default before the connection returns to the pool.
                    dbapi.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT}")

    def checkpoint_wal(self) -> None:
        """Copy committed WAL pages back into a SQLite database file, without waiting.

        ``PASSIVE``: it never takes the write lock and runs beside writers; what a reader
        still needs stays for the next call. Nothing to do on PostgreSQL.
        """
        if not self.is_sqlite:
            return
        with self.engine.connect() as raw:
            raw.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchall()

    def hot_reader(self) -> Connection:
        """A connection held by the calling thread, in autocommit mode, for the request path.

        Checking a connection out of the pool and wrapping one SELECT in BEGIN/COMMIT
        costs several times the SELECT itself; the API's per-request reads (token,
        account, authorization) are single statements that need no snapshot, so they
        run here. Each statement sees the latest committed data. Statements on the
        driver's own cursor go through ``driver_cursor``, which invalidates this
        connection on a driver error, so a dead one (a PostgreSQL restart) is replaced
        on the next call; while the database is down, connecting raises.
        """
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT", msgcube_hot=True
            )
            self._held.conn = conn
        return conn

    def dispose(self) -> None:
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is not None:
            conn.close()
        self.engine.dispose()
        if self.analytics is not None:
            self.analytics.close()


def analytics_of(conn: Connection) -> Analytics | None:
    """The analytics database of the store ``conn`` belongs to (None: all data in ``db``)."""
    found = conn.get_execution_options().get(_ANALYTICS_OPTION)
    return found if isinstance(found, Analytics) else None


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[Any]:
    """The DB-API cursor of ``conn`` (a ``Store.hot_reader``), for statements whose
    SQLAlchemy compilation would cost more than the statement itself.

    SQLAlchemy never sees these statements, so it cannot notice a dead connection: any
    driver error invalidates ``conn`` here, and the next ``hot_reader`` connects anew.
    """
    try:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    except Exception:
        conn.invalidate()
        raise
    try:
        yield cursor
    except Exception:
        with suppress(Exception):
            conn.invalidate()
        raise
    finally:
        with suppress(Exception):
            cursor.close()


def fetch_one(conn: Connection, sql: str, params: tuple[Any, ...]) -> Any:
    """The first row of one statement run on the driver's connection itself.

    ``driver_cursor``'s cheaper sibling for a single-row read on the request path: both
    drivers (sqlite3, psycopg 3) run ``execute`` on the connection without a cursor to
    open and close. A driver error invalidates ``conn`` the same way.
    """
    try:
        dbapi: Any = conn.connection.dbapi_connection
        return dbapi.execute(sql, params).fetchone()
    except Exception:
        with suppress(Exception):
            conn.invalidate()
        raise


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, not the sqlite3 module.
        # No mmap: mapped pages count as the process's RSS, and a bulk import touching a
        # few hundred MB of file would look (and be budgeted) like that much memory.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "busy_timeout=30000",
            "cache_size=-65536",
            "temp_store=MEMORY",
            "foreign_keys=OFF",
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("msgcube_hot"):
            return  # autocommit reader: every statement stands alone
        # On the driver: through SQLAlchemy this BEGIN cost a push batch ~30 µs.
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.execute("BEGIN IMMEDIATE" if options.get("sqlite_immediate") else "BEGIN")

    return engine


def create_store_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # pre_ping: a pooled connection that died with the server is replaced on checkout;
    # connect_timeout: while the server is unreachable a request fails in seconds.
    return create_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


SCHEMA_REVISION = "0013"
"""The newest migration's revision (``tests/test_migrations.py`` checks it is alembic's
head): a database already there is opened without loading alembic at all, which is most
of what every CLI command and worker would spend starting up."""


def _alembic_config(conn: Connection) -> Config:
    from alembic.config import Config  # only to migrate: see SCHEMA_REVISION

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("msgcube.storage") / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(store: Store) -> None:
    """Bring the schema to the newest revision (idempotent; safe on an existing database)."""
    if _revision(store) == SCHEMA_REVISION:
        return
    from alembic import command

    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            # Two processes starting at once must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7400263)")
        command.upgrade(_alembic_config(conn), "head")


def _revision(store: Store) -> str | None:
    """The database's schema revision; None before the first migration."""
    with store.engine.connect() as conn:
        try:
            found = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except DBAPIError:
            return None  # no such table yet (the connection's transaction rolls back)
    return None if found is None else str(found)


def open_store(
    url: str, *, migrate_schema: bool = True, analytics: AnalyticsUrl | None = None
) -> Store:
    """Open (and by default migrate) the database at ``url``, and the analytics database."""
    side = None if analytics is None else Analytics(analytics)
    try:
        if side is not None and migrate_schema:
            migrate_analytics(side)
        store = Store(create_store_engine(url), side)
        if migrate_schema:
            migrate(store)
    except BaseException:
        if side is not None:
            side.close()
        raise
    return store


def table_names(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names())


__all__ = [
    "Store",
    "analytics_of",
    "driver_cursor",
    "fetch_one",
    "metadata",
    "migrate",
    "open_store",
    "table_names",
]
