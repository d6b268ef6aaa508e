"""One small client for both forms of ``analytics_db``: chdb in-process, or a server.

chdb is reached through clickhouse-connect's ``chdb://DIR`` DSN; a server or cluster
through clickhouse-driver's native protocol, the one client that speaks to every
ClickHouse release from Debian's 18.16 to today's (clickhouse-connect's HTTP client
cannot talk to 18.16). Both are wrapped behind ``command``/``rows``/``insert`` so the
rest of the package is one SQL text for both. Values are rendered into the SQL by
``literal`` (18.16 has no server-side parameters), never by string formatting of input.

Every failure — refused, unreachable, timed out — becomes :class:`AnalyticsError`, which
the callback answers with HTTP 500 (WeChat retries) and the API with errcode -1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from msgcube.analytics.url import AnalyticsUrl
from msgcube.errors import AnalyticsError
from msgcube.storage import clickhouse_dialect as ch

Settings = Mapping[str, int]


class _Backend(Protocol):
    def command(self, sql: str, settings: Settings) -> None: ...
    def rows(self, sql: str, settings: Settings) -> list[tuple[Any, ...]]: ...
    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Settings
    ) -> None: ...
    def close(self) -> None: ...


class _Chdb:
    """Embedded chdb: one engine per process (and per data directory), used under a lock."""

    def __init__(self, path: str) -> None:
        import clickhouse_connect

        directory = Path(path).expanduser().absolute()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")

    def command(self, sql: str, settings: Settings) -> None:
        with self._lock:
            self._client.command(sql, settings=dict(settings))

    def rows(self, sql: str, settings: Settings) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._client.query(sql, settings=dict(settings)).result_rows]

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Settings
    ) -> None:
        # As SQL text: clickhouse-connect's native insert into chdb costs ~100 ms per call
        # and ~0.2 ms per row (measured), the VALUES text about a tenth of both.
        cols = ", ".join(ch.quote_ident(c) for c in columns)
        values = ", ".join("(" + ", ".join(map(_value, row)) + ")" for row in rows)
        with self._lock:
            self._client.command(
                f"INSERT INTO {table} ({cols}) VALUES {values}", settings=dict(settings)
            )

    def close(self) -> None:
        self._client.close()


_PREVIOUS_QUORUM_PENDING = 286  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE


def _quorum_pauses() -> Iterator[float | None]:
    """Pauses between attempts of a refused quorum insert: short at first (a quorum
    insert takes tens of ms), ≈ 10 s in all; None after the last attempt."""
    pause = 0.002
    for _ in range(520):
        yield pause
        pause = min(pause * 1.5, 0.02)
    yield None


class _Native:
    """A server over the native protocol: one connection per thread, further hosts as failover."""

    def __init__(self, url: AnalyticsUrl) -> None:
        self._url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from clickhouse_driver import Client  # type: ignore[import-untyped]

            (host, port), *rest = self._url.hosts
            client = Client(
                host=host,
                port=port,
                user=self._url.user,
                password=self._url.password,
                alt_hosts=",".join(f"{h}:{p}" for h, p in rest) or None,
                connect_timeout=5,
                send_receive_timeout=60,
                sync_request_timeout=5,
            )
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def command(self, sql: str, settings: Settings) -> None:
        self._client().execute(sql, settings=dict(settings))

    def rows(self, sql: str, settings: Settings) -> list[tuple[Any, ...]]:
        """Read; a connection the server dropped (it restarted) is replaced once.

        A read is idempotent, so asking again on a fresh connection (to the next live
        host) is safe, and the API does not answer -1 just because a replica restarted.
        """
        from clickhouse_driver.errors import NetworkError  # type: ignore[import-untyped]

        try:
            return [tuple(r) for r in self._client().execute(sql, settings=dict(settings))]
        except (NetworkError, EOFError, ConnectionError):
            self._client().disconnect()
            return [tuple(r) for r in self._client().execute(sql, settings=dict(settings))]

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Settings
    ) -> None:
        """Insert, waiting out another writer's quorum insert into the same table.

        Before 20.10 a replicated table takes one quorum insert at a time and refuses the
        next (code 286) while the previous one has not reached its quorum; two workers
        committing at once hit that constantly. The refused insert wrote nothing (and a
        repeated block would be deduplicated anyway), so it is sent again after a pause,
        for at most about the quorum timeout.
        """
        from clickhouse_driver.errors import ServerException

        cols = ", ".join(ch.quote_ident(c) for c in columns)
        data = list(rows)
        for pause in _quorum_pauses():
            try:
                self._client().execute(
                    f"INSERT INTO {table} ({cols}) VALUES", data, settings=dict(settings)
                )
                return
            except ServerException as exc:
                if exc.code != _PREVIOUS_QUORUM_PENDING or pause is None:
                    raise
                time.sleep(pause)

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                client.disconnect()
            self._all.clear()


class Analytics:
    """The analytics database: where its tables are (``target``) and how to reach it."""

    def __init__(self, url: AnalyticsUrl) -> None:
        self.url = url
        self.target = ch.Target(url.database, url.cluster)
        try:
            self._backend: _Backend = _Chdb(url.path) if url.kind == "chdb" else _Native(url)
        except Exception as exc:
            hint = " (chdb opens a directory in one process only)" if url.kind == "chdb" else ""
            raise AnalyticsError(f"cannot open {url.shown}{hint}: {_short(exc)}") from exc
        # Reads that must see every acknowledged (quorum) insert, on a replicated cluster.
        self._read_settings: Settings = (
            {"select_sequential_consistency": 1} if url.cluster is not None else {}
        )
        self._insert_settings = ch.insert_settings(self.target)
        self._command_settings: Settings = {
            **self._insert_settings,
            **self._read_settings,
            **ch.bulk_insert_settings(url.kind == "chdb"),
        }

    def table(self, name: str) -> str:
        """The qualified name of table NAME (the Distributed table on a cluster)."""
        return ch.qualified(self.target, name)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except AnalyticsError:
            raise
        except Exception as exc:
            raise AnalyticsError(f"ClickHouse {what} failed: {_short(exc)}") from exc

    def command(self, sql: str) -> None:
        """Run an ``INSERT … SELECT``: it reads what was acknowledged and writes acknowledged."""
        with self._translated("statement"):
            self._backend.command(sql, self._command_settings)

    def ddl(self, sql: str, settings: Settings | None = None) -> None:
        """Run a schema statement or mutation."""
        with self._translated("schema change"):
            self._backend.command(sql, settings or {})

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self._translated("query"):
            return self._backend.rows(sql, self._read_settings)

    def scalar(self, sql: str) -> Any:
        found = self.rows(sql)
        return found[0][0] if found else None

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ROWS into TABLE; returns once ClickHouse acknowledged them (a quorum of
        replicas on a cluster)."""
        if not rows:
            return
        with self._translated("insert"):
            self._backend.insert(self.table(table), columns, rows, self._insert_settings)

    def close(self) -> None:
        self._backend.close()


def literal(value: int | str | date) -> str:
    """VALUE as a ClickHouse literal (ints as digits, strings quoted, dates as toDate)."""
    if isinstance(value, bool):
        raise TypeError("no booleans in analytics SQL")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return f"toDate('{value.isoformat()}')"
    return ch.quote_string(value)


def in_list(values: Iterable[int | str | date]) -> str:
    """``(v1, v2, …)`` for an IN clause (never empty: callers check)."""
    return "(" + ", ".join(literal(v) for v in values) + ")"


def _value(value: int | str | date) -> str:
    """VALUE in an INSERT's VALUES list: a date as plain text, which the fast path parses."""
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    return literal(value)


def tuple_set(tuples: Sequence[Sequence[int | str | date]]) -> str:
    """``((a, b), (c, d), …)``, the right side of a tuple IN (never empty: callers check).

    A single tuple is listed twice: ``IN ((a, b))`` would read as the set {a, b}.
    """
    items = [f"({', '.join(literal(v) for v in t)})" for t in tuples]
    if len(items) == 1:
        items *= 2
    return f"({', '.join(items)})"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]
