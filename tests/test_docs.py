"""One table drives the docs: the reference tables of README.md and docs/contract.md are
generated from the code's tables, the README's sample answer from a real demo, and the
repository's documents stand alone (no reference to a specification it does not ship)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from msgcube.cli.demo import DEMO_APPID
from msgcube.cli.main import cli
from msgcube.cli.reference import GENERATORS, endpoints_markdown, regenerate, settings_markdown
from msgcube.errors import ConfigError
from msgcube.settings import SETTINGS, Settings
from support.server import msgcube_env, run_msgcube

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONTRACT = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["README.md", "docs/contract.md"])
def test_generated_blocks_are_current(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert regenerate(text, cli) == text, f"run: msgcube docs --write {name}"


def test_the_tables_are_where_the_documents_say() -> None:
    assert endpoints_markdown() in README and settings_markdown() in README
    for name in GENERATORS:
        assert f"<!-- generated: {name} -->" in CONTRACT, name


def test_no_reference_to_an_absent_specification() -> None:
    """The repository stands alone: no "SPEC §…" in its documents, code or tests."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for pattern in ("*.md", "src/**/*.py", "src/**/*.html", "tests/**/*.py", "bench/*.py")
        for path in ROOT.glob(pattern)
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bSPEC\b", line)
    ]
    assert not offenders, offenders


def test_links_into_the_contract_resolve() -> None:
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", CONTRACT, flags=re.MULTILINE)
    }
    for text in (README, CONTRACT):
        for anchor in re.findall(r"contract\.md#([\w-]+)|\]\(#([\w-]+)\)", text):
            target = anchor[0] or anchor[1]
            assert target in anchors, target


SAMPLE_NOW = "2026-11-08T09:00:00+08:00"


@pytest.mark.slow
def test_readme_sample_answer_is_the_demo_of_its_day(tmp_path: Path) -> None:
    match = re.search(r"-d '(\{\"begin_date\".*?\})'\n# (\{\"list\":\[.*\]\})", README)
    assert match, "the README's sample call and answer"
    body, shown = json.loads(match.group(1)), match.group(2)
    env = msgcube_env(tmp_path / "demo.db", now=SAMPLE_NOW)
    run_msgcube("demo", "--no-serve", env=env)
    rows = json.loads(
        run_msgcube(
            "stats",
            "getupstreammsg",
            "--appid",
            DEMO_APPID,
            body["begin_date"],
            body["end_date"],
            env=env,
        )
    )
    first = json.dumps(rows[0], separators=(",", ":"), ensure_ascii=False)
    assert shown == f'{{"list":[{first}, …]}}'


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
