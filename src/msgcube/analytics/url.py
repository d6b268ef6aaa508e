"""The ``analytics_db`` setting, parsed once into a typed value (no I/O here).

Two forms:

- ``chdb://DIR[?database=NAME]`` (``chdb:///abs/path`` or a relative ``chdb://data/ch``):
  embedded chdb (database ``msgcube`` unless named);
- ``clickhouse://[user[:password]@]host[:port][,host2[:port]…]/database[?cluster=NAME]``:
  a server over the native protocol (port 9000 by default). Further hosts are tried in
  turn when the first is unreachable. With ``cluster=`` the tables are replicated and
  sharded over that ``remote_servers`` cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DATABASE = "msgcube"
DEFAULT_PORT = 9000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class AnalyticsUrl:
    """Where the analytics tables live. ``str()`` gives the URL back, password included."""

    kind: Literal["chdb", "clickhouse"]
    raw: str
    path: str = ""
    hosts: tuple[tuple[str, int], ...] = ()
    user: str = "default"
    password: str = ""
    database: str = DEFAULT_DATABASE
    cluster: str | None = None

    def __str__(self) -> str:
        return self.raw

    @property
    def shown(self) -> str:
        """The URL fit for logs and ``msgcube settings``: the password as ``***``."""
        if self.kind != "clickhouse":
            return self.raw
        scheme, _, rest = self.raw.partition("://")
        netloc, slash, tail = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if not at or ":" not in userinfo:
            return self.raw
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}{slash}{tail}"


def parse_analytics_url(value: str) -> AnalyticsUrl | None:
    """``value`` as an :class:`AnalyticsUrl`; empty → None. ``ValueError`` says what is wrong."""
    raw = value.strip()
    if not raw:
        return None
    if raw.startswith("chdb://"):
        path, _, options = raw[len("chdb://") :].partition("?")
        if not path:
            raise ValueError("chdb:// needs a directory, e.g. chdb://data/analytics")
        return AnalyticsUrl("chdb", raw, path=path, database=_database(options))
    if not raw.startswith("clickhouse://"):
        raise ValueError("expected chdb://DIR or clickhouse://[user[:password]@]host[:port]/db")
    parts = urlsplit(raw)
    userinfo, _, hostpart = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts = tuple(_host(h) for h in hostpart.split(","))
    database = unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
    if not _NAME.fullmatch(database):
        raise ValueError(f"database name {database!r}: letters, digits and _ only")
    query = _options(parts.query, {"cluster"})
    cluster = query.get("cluster", [None])[-1]
    if cluster is not None and not _NAME.fullmatch(cluster):
        raise ValueError(f"cluster name {cluster!r}: letters, digits and _ only")
    return AnalyticsUrl(
        "clickhouse",
        raw,
        hosts=hosts,
        user=unquote(user) or "default",
        password=unquote(password),
        database=database,
        cluster=cluster,
    )


def _options(query: str, allowed: set[str]) -> dict[str, list[str]]:
    found = parse_qs(query, keep_blank_values=True)
    unknown = set(found) - allowed
    if unknown:
        raise ValueError(
            f"unknown option {sorted(unknown)[0]!r} (only {', '.join(sorted(allowed))})"
        )
    return found


def _database(options: str) -> str:
    """The ``?database=NAME`` of a chdb URL (default ``msgcube``)."""
    database = _options(options, {"database"}).get("database", [DEFAULT_DATABASE])[-1]
    if not _NAME.fullmatch(database):
        raise ValueError(f"database name {database!r}: letters, digits and _ only")
    return database


def _host(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError("a host is missing")
    if not sep:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} of {host}: expected 1–65535")
    return host, int(port)


def mask_analytics(value: AnalyticsUrl | None) -> str:
    """How ``msgcube settings`` shows the setting."""
    return "" if value is None else value.shown
