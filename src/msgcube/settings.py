"""The settings, declared once, and the clock.

Every setting ``x`` is read, lowest precedence first, from its default, ``msgcube.toml``
(in the working directory, or the file named by ``MSGCUBE_CONFIG``), the environment
variable ``MSGCUBE_X`` and the command-line flag ``--x``. Each is ONE field of ``Settings``
whose metadata (``setting(...)``) holds its parser, text form and help; the flags, the
environment names, the CLI's ``--help`` and the README's settings reference are all
derived from those fields, so a setting is added in one place (as Datasette does).

Values are parsed once, when ``Settings`` is built, into typed values (enums, a time, a
datetime, networks); nothing re-parses a setting per request.

``now`` pins the clock (``MSGCUBE_NOW=2026-01-02T09:00:00+08:00``) for tests and demos;
everything that asks "what time is it" asks ``Settings.clock()``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any

import tzdata  # type: ignore[import-untyped]

from msgcube.analytics.url import AnalyticsUrl, mask_analytics, parse_analytics_url
from msgcube.domain.endpoints import SpanProfile
from msgcube.domain.identifiers import COUNT_MAX
from msgcube.domain.periods import DEFAULT_TZ, check_tz, zone
from msgcube.errors import ConfigError

DEFAULT_DB_FILE = "msgcube.db"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccessPolicy(StrEnum):
    """Who may call datacube: every verified account, or only through a third-party platform."""

    OPEN = "open"
    THIRD_PARTY_ONLY = "third_party_only"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AccessLog(StrEnum):
    """Which requests get a log line: those that failed, or all."""

    ERRORS = "errors"
    ALL = "all"


class ImportParser(StrEnum):
    """Where ``msgcube import`` parses lines: beside the writer in a process of its own
    (``process``), in the importing process (``inline``), or ``auto``: a process for a file
    of 8 MiB or more and for a pipe."""

    AUTO = "auto"
    PROCESS = "process"
    INLINE = "inline"


# --------------------------------------------------------------------------- parsers


def _choice(enum: type[StrEnum]) -> Callable[[str], Any]:
    def parse(value: str) -> StrEnum:
        try:
            return enum(value)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(enum)}") from None

    return parse


def _hhmm(value: str) -> time:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("expected HH:MM (00:00–23:59)")
    return time.fromisoformat(value)


def _now(value: str) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-01-02T09:00:00+08:00")
    return parsed


DB_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
"""The database URLs msgcube can open: SQLite (the driver in Python) and PostgreSQL
through psycopg 3 (the driver it installs)."""


def _db(value: str) -> str:
    """A SQLite file path, or a URL of a database msgcube can open (``DB_SCHEMES``): any
    other URL would fail deep in SQLAlchemy, importing a driver that is not there."""
    scheme, separator, _ = value.partition("://")
    if separator and scheme.lower() not in DB_SCHEMES:
        raise ValueError(
            "expected a SQLite file path or postgresql://user:pass@host/db "
            f"(msgcube cannot open {scheme}:// databases)"
        )
    return value


def _count(value: str) -> int:
    """A count (workers, quotas, quarantine bounds): ``0..COUNT_MAX``, so every count a
    setting gives fits a database column and a JSON answer (``quota/get``'s
    ``daily_limit``) on every backend."""
    number = int(value)
    if not 0 <= number <= COUNT_MAX:
        raise ValueError(f"must be 0 to {COUNT_MAX}")
    return number


def parse_networks(value: str) -> tuple[Network, ...]:
    """Comma-separated IP addresses or CIDR networks (``ValueError`` names a bad one)."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in value.split(",")
        if part.strip()
    )


def _seconds(value: str) -> float:
    number = float(value)
    if not 0 < number <= 60:
        raise ValueError("must be more than 0 and at most 60 seconds")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be 0–65535")
    return number


# --------------------------------------------------------------------------- text forms


def _text(value: Any) -> str:
    """A parsed value back as the text its parser reads (for workers' environment, docs)."""
    if value is None:
        return ""
    if isinstance(value, time):
        return f"{value:%H:%M}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask_db(value: str) -> str:
    """The database that will be used, with any password replaced by ``***``."""
    raw = value or DEFAULT_DB_FILE
    if "://" not in raw:
        return str(Path(raw).expanduser().absolute())
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", raw))


def _secret(value: str) -> str:
    return "***" if value else ""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as declared by the metadata of its ``Settings`` field."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    shown: Callable[[Any], Any] | None = None  # how ``public()`` shows it (masking)

    @property
    def env(self) -> str:
        return "MSGCUBE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def text(self, value: Any) -> str:
        return _text(value)

    def public(self, value: Any) -> Any:
        """The value for logs and ``msgcube settings``: secrets and passwords masked."""
        if self.secret:
            return _secret(_text(value))
        if self.shown is not None:
            return self.shown(value)
        return value if isinstance(value, int) else _text(value)


def setting(
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    secret: bool = False,
    shown: Callable[[Any], Any] | None = None,
) -> Any:
    """A ``Settings`` field declaring one setting (its name is the field's name)."""
    spec = Setting("", default, parse, help, secret, shown)
    return field(default=default, repr=not secret, metadata={"setting": spec})


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved, typed settings. Build with ``Settings.load()``.

    Tests may pass values directly; a value given as text is parsed by the setting's own
    parser (``Settings(now="2026-01-02T09:00:00+08:00")``), so the fields are always typed.
    """

    db: str = setting(
        "",
        _db,
        "Database URL or SQLite file path; default msgcube.db in the working directory. "
        "postgresql://user:pass@host/db for PostgreSQL.",
        shown=mask_db,
    )
    analytics_db: AnalyticsUrl | None = setting(
        None,
        parse_analytics_url,
        "ClickHouse for messages, events, followers and statistics: chdb://DIR (embedded) or "
        "clickhouse://user:pass@host:9000/db[?cluster=NAME]; unset: everything in db.",
        shown=mask_analytics,
    )
    host: str = setting("127.0.0.1", str, "Address the server listens on.")
    port: int = setting(8000, _port, "Port the server listens on.")
    workers: int = setting(1, _count, "Server worker processes.")
    span_profile: SpanProfile = setting(
        SpanProfile.CLASSIC,
        _choice(SpanProfile),
        "Max-span table: classic (7/1/30/30/15/30/30) or current (7/1/1/1/15/15/15).",
    )
    access_policy: AccessPolicy = setting(
        AccessPolicy.OPEN,
        _choice(AccessPolicy),
        "Who may call datacube: open (verified accounts' own tokens) or third_party_only.",
    )
    ready_at: time = setting(
        time(0, 0),
        _hhmm,
        "Local time after which yesterday's data is served (08:00 mimics WeChat).",
    )
    tz: str = setting(DEFAULT_TZ, check_tz, "Default time zone of new accounts.")
    quota_datacube: int = setting(5000, _count, "Daily calls per account per datacube API.")
    quota_token: int = setting(2000, _count, "Daily /cgi-bin/token calls per account.")
    admin_token: str = setting(
        "", str, "Bearer token of the admin API and dashboard; unset disables.", secret=True
    )
    trusted_proxies: tuple[Network, ...] = setting(
        (),
        parse_networks,
        "Comma-separated proxy addresses/networks whose X-Forwarded-For gives the client "
        "address (for IP whitelists); unset: the direct peer is the client.",
    )
    relay_timeout: float = setting(
        4.5,
        _seconds,
        "Seconds an upstream (an account's own server) has to answer a relayed push, "
        "counted from the push's arrival; keep it under WeChat's 5 s.",
    )
    relay_concurrency: int = setting(
        100,
        _count,
        "Concurrent calls per upstream server and worker; more pushes wait their turn.",
    )
    quarantine_max_entries: int = setting(
        1000,
        _count,
        "Quarantined pushes kept per account; when reached, new ones are refused (503). "
        "0: no limit.",
    )
    quarantine_max_bytes: int = setting(
        16 * 2**20,
        _count,
        "Bytes of quarantined bodies kept per account; when reached, new ones are refused "
        "(503). 0: no limit.",
    )
    quarantine_retention_days: int = setting(
        30, _count, "Days a quarantined push is kept before it is pruned automatically. 0: forever."
    )
    import_parser: ImportParser = setting(
        ImportParser.AUTO,
        _choice(ImportParser),
        "Where `msgcube import` parses: process (a second process parses the next batch while "
        "this one writes; two cores), inline, or auto (process for files from 8 MiB and pipes).",
    )
    now: datetime | None = setting(
        None, _now, "Pin the clock (ISO 8601 with offset), for tests and demos."
    )
    log_level: LogLevel = setting(LogLevel.INFO, _choice(LogLevel), "Log level.")
    access_log: AccessLog = setting(
        AccessLog.ERRORS,
        _choice(AccessLog),
        "Request log lines: errors (every errcode or HTTP error, with its rid) or all.",
    )

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.name)
            if isinstance(value, str):
                object.__setattr__(self, s.name, _coerce(s, value, s.name))

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Defaults < toml < environment < flags. ``None`` flag values are "not given".

        A config file named (by ``config_file`` or ``MSGCUBE_CONFIG``) must exist; the
        default ``msgcube.toml`` is read only when present.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        named = config_file or (Path(env["MSGCUBE_CONFIG"]) if env.get("MSGCUBE_CONFIG") else None)
        path = named or Path("msgcube.toml")
        if named is not None and not path.is_file() and str(path) != os.devnull:
            raise ConfigError(f"MSGCUBE_CONFIG: no such file {str(path)!r}")
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            # Keys at top level and under [msgcube] both count; one key set in both places
            # is refused rather than one of them silently ignored.
            nested = data.pop("msgcube", {})
            if not isinstance(nested, dict):
                raise ConfigError(f"{path}: 'msgcube' must be a table ([msgcube])")
            if twice := sorted(data.keys() & nested.keys()):
                raise ConfigError(f"{path}: {twice[0]!r} is set both at top level and in [msgcube]")
            for key, value in {**data, **nested}.items():
                if key not in BY_NAME:
                    raise ConfigError(f"{path}: unknown setting {key!r}")
                values[key] = _coerce(BY_NAME[key], value, str(path))
        for s in SETTINGS:
            if s.env in env:
                values[s.name] = _coerce(s, env[s.env], s.env)
        for key, value in (flags or {}).items():
            if value is not None and key in BY_NAME:
                values[key] = _coerce(BY_NAME[key], value, BY_NAME[key].flag)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def db_url(self) -> str:
        """A SQLAlchemy URL: ``postgresql://`` URLs use psycopg 3; plain paths are SQLite files."""
        raw = self.db or DEFAULT_DB_FILE
        if raw.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + raw.split("://", 1)[1]
        if "://" in raw:
            return raw
        return "sqlite:///" + str(Path(raw).expanduser())

    @property
    def db_shown(self) -> str:
        """The database in use, fit for messages and logs (any password as ``***``)."""
        return mask_db(self.db)

    @property
    def ready_time(self) -> time:
        """``ready_at`` (kept under its former name for callers that used it)."""
        return self.ready_at

    def clock(self) -> datetime:
        """Now, as an aware datetime: the pinned ``now`` if set, else the real UTC time."""
        return self.now if self.now is not None else datetime.now(UTC)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public().items())
        return f"Settings({shown})"

    def public(self) -> dict[str, Any]:
        """Settings as shown by ``msgcube settings`` and logs: secrets and passwords masked."""
        return {s.name: s.public(getattr(self, s.name)) for s in SETTINGS}

    def environment(self) -> dict[str, str]:
        """Every setting as its ``MSGCUBE_*`` variable (for worker processes; unmasked)."""
        return {s.env: s.text(getattr(self, s.name)) for s in SETTINGS}


SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], name=f.name) for f in fields(Settings)
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _coerce(s: Setting, value: Any, where: str) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError("booleans are not accepted here")
        return s.parse(value if isinstance(value, str) else str(value))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r} for {s.name}: {exc}") from exc


def use_packaged_rules() -> str:
    """Make ``zoneinfo`` read the installed ``tzdata`` package, never the system's files;
    returns the package's IANA release (e.g. ``2026f``). Zones made before are forgotten.

    Python's ``zoneinfo`` prefers the system's files and uses the package only where there
    are none. The system's release is whatever the machine was built with (Debian 12 ships
    2025b), so two hosts — or a host and its upgraded self — could put one message on
    different local days (America/Vancouver from November 2026 is one such case). The
    package's release is pinned by the install, upgraded with ``pip``, and the same on every
    machine and every backend (ClickHouse is handed Python's offsets). Every entry point
    (the command line, the server's workers, the import's parser process) calls
    :func:`use_packaged_rules` before it makes a zone.
    """
    zoneinfo.reset_tzpath(to=())
    zoneinfo.ZoneInfo.clear_cache()
    zone.cache_clear()
    return str(tzdata.IANA_VERSION)
