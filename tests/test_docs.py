"""One table drives the docs: the README's reference tables are generated, never hand-kept."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from msgcube.cli.reference import endpoints_markdown, settings_markdown
from msgcube.errors import ConfigError
from msgcube.settings import SETTINGS, Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_endpoint_table_is_generated() -> None:
    assert endpoints_markdown() in README


def test_readme_settings_table_is_generated() -> None:
    assert settings_markdown() in README


def test_settings_dataclass_matches_the_table() -> None:
    declared = {s.name: s.default for s in SETTINGS}
    assert {f.name: f.default for f in fields(Settings)} == declared


def test_settings_precedence(tmp_path: Path) -> None:
    toml = tmp_path / "msgcube.toml"
    toml.write_text('[msgcube]\nport = 9001\nspan_profile = "current"\nready_at = "08:00"\n')
    env = {"MSGCUBE_CONFIG": str(toml), "MSGCUBE_PORT": "9002", "MSGCUBE_TZ": "UTC"}
    s = Settings.load({"port": "9003", "tz": None}, env=env)
    assert (s.port, s.span_profile, s.ready_at, s.tz) == (9003, "current", "08:00", "UTC")
    assert Settings.load({}, env=env).port == 9002


def test_bad_settings_say_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MSGCUBE_SPAN_PROFILE: invalid value 'x'"):
        Settings.load({}, env={"MSGCUBE_SPAN_PROFILE": "x", "MSGCUBE_CONFIG": "/none"})
    with pytest.raises(ConfigError, match="needs a UTC offset"):
        Settings.load({"now": "2026-01-01T00:00:00"}, env={"MSGCUBE_CONFIG": "/none"})
    bad = tmp_path / "m.toml"
    bad.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings.load({}, env={"MSGCUBE_CONFIG": str(bad)})
    assert Settings(admin_token="hunter2").public()["admin_token"] == "***"
    assert "hunter2" not in repr(Settings(admin_token="hunter2"))
