"""One declared table of settings, and the clock.

Every setting ``x`` is read, lowest precedence first, from its default, ``msgcube.toml``
(in the working directory, or the file named by ``MSGCUBE_CONFIG``), the environment
variable ``MSGCUBE_X`` and the command-line flag ``--x``. The table drives all three, the
CLI's ``--help`` and the README's settings reference, so a setting is added in one place.

``now`` pins the clock (``MSGCUBE_NOW=2026-01-02T09:00:00+08:00``) for tests and demos;
everything that asks "what time is it" asks ``Settings.clock()``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from msgcube.domain.endpoints import SPAN_PROFILES
from msgcube.domain.periods import DEFAULT_TZ, zone
from msgcube.errors import ConfigError

DEFAULT_DB_FILE = "msgcube.db"


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _hhmm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("expected HH:MM (00:00–23:59)")
    return value


def _tz(value: str) -> str:
    zone(value)  # raises KeyError for an unknown zone
    return value


def _now(value: str) -> str:
    if value:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-01-02T09:00:00+08:00")
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or more")
    return number


def _networks(value: str) -> str:
    """Comma-separated IP addresses or CIDR networks, checked here and kept as text."""
    for part in value.split(","):
        if part.strip():
            ipaddress.ip_network(part.strip(), strict=False)  # ValueError when malformed
    return value


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


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "MSGCUBE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("db", "", str,
            "Database URL or SQLite file path; default msgcube.db in the working directory. "
            "postgresql://user:pass@host/db for PostgreSQL."),
    Setting("host", "127.0.0.1", str, "Address the server listens on."),
    Setting("port", 8000, _port, "Port the server listens on."),
    Setting("workers", 1, _positive_int, "Server worker processes."),
    Setting("span_profile", "classic", _choice(*SPAN_PROFILES),
            "Max-span table: classic (7/1/30/30/15/30/30) or current (7/1/1/1/15/15/15)."),
    Setting("access_policy", "open", _choice("open", "third_party_only"),
            "Who may call datacube: open (verified accounts' own tokens) or third_party_only."),
    Setting("ready_at", "00:00", _hhmm,
            "Local time after which yesterday's data is served (08:00 mimics WeChat)."),
    Setting("tz", DEFAULT_TZ, _tz, "Default time zone of new accounts."),
    Setting("quota_datacube", 5000, _positive_int, "Daily calls per account per datacube API."),
    Setting("quota_token", 2000, _positive_int, "Daily /cgi-bin/token calls per account."),
    Setting("admin_token", "", str, "Bearer token of the admin API and dashboard; unset disables.",
            secret=True),
    Setting("trusted_proxies", "", _networks,
            "Comma-separated proxy addresses/networks whose X-Forwarded-For gives the client "
            "address (for IP whitelists); unset: the direct peer is the client."),
    Setting("relay_timeout", 4.5, _seconds,
            "Seconds an upstream (an account's own server) has to answer a relayed push, "
            "counted from the push's arrival; keep it under WeChat's 5 s."),
    Setting("relay_concurrency", 100, _positive_int,
            "Concurrent calls per upstream server and worker; more pushes wait their turn."),
    Setting("now", "", _now, "Pin the clock (ISO 8601 with offset), for tests and demos."),
    Setting("log_level", "info", _choice("debug", "info", "warning", "error"), "Log level."),
    Setting("access_log", "errors", _choice("errors", "all"),
            "Request log lines: errors (every errcode or HTTP error, with its rid) or all."),
)  # fmt: skip

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings. Build with ``Settings.load()``; tests may pass values directly."""

    db: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    span_profile: str = "classic"
    access_policy: str = "open"
    ready_at: str = "00:00"
    tz: str = DEFAULT_TZ
    quota_datacube: int = 5000
    quota_token: int = 2000
    admin_token: str = field(default="", repr=False)
    trusted_proxies: str = ""
    relay_timeout: float = 4.5
    relay_concurrency: int = 100
    now: str = ""
    log_level: str = "info"
    access_log: str = "errors"

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Defaults < toml < environment < flags. ``None`` flag values are "not given"."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or Path(env.get("MSGCUBE_CONFIG", "msgcube.toml"))
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            section = data.get("msgcube", data)
            for key, value in section.items():
                if key not in BY_NAME:
                    raise ConfigError(f"{path}: unknown setting {key!r}")
                values[key] = _coerce(BY_NAME[key], value, str(path))
        for setting in SETTINGS:
            if setting.env in env:
                values[setting.name] = _coerce(setting, env[setting.env], setting.env)
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
    def ready_time(self) -> time:
        return time.fromisoformat(self.ready_at)

    def clock(self) -> datetime:
        """Now, as an aware datetime: the pinned ``now`` if set, else the real UTC time."""
        if self.now:
            return datetime.fromisoformat(self.now)
        return datetime.now(UTC)

    def public(self) -> dict[str, Any]:
        """Settings with secrets masked, for logs and ``msgcube settings``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if BY_NAME[f.name].secret and value else value
        return out


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    try:
        if isinstance(value, str):
            return setting.parse(value)
        if isinstance(value, bool):
            raise ValueError("booleans are not accepted here")
        return setting.parse(str(value))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r} for {setting.name}: {exc}") from exc
