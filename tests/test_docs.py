"""One table drives the docs: the reference tables of README.md and docs/contract.md are
generated from the code's tables, the README's sample answer from a real demo, and the
repository's documents stand alone (no reference to a specification it does not ship)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, time
from pathlib import Path

import click
import pytest

from msgcube.cli.demo import DEMO_APPID
from msgcube.cli.main import cli
from msgcube.cli.reference import (
    CHECKS,
    GENERATORS,
    endpoints_markdown,
    regenerate,
    settings_markdown,
)
from msgcube.domain.endpoints import ENDPOINTS, SpanProfile
from msgcube.errors import ERRMSG, ConfigError
from msgcube.settings import SETTINGS, AccessPolicy, Settings
from msgcube.web.api_table import API, BY_PATH
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
    assert (s.port, s.span_profile, s.ready_at, s.tz) == (9003, "current", time(8, 0), "UTC")
    assert Settings.load({}, env=env).port == 9002


def test_config_keys_count_at_top_level_and_under_msgcube(tmp_path: Path) -> None:
    """The README: "keys at top level or under [msgcube]" — both, never one silently dropped."""
    toml = tmp_path / "msgcube.toml"
    toml.write_text('port = 9001\n[msgcube]\ntz = "UTC"\n')
    s = Settings.load({}, env={"MSGCUBE_CONFIG": str(toml)})
    assert (s.port, s.tz) == (9001, "UTC")
    toml.write_text("port = 9001\n[msgcube]\nport = 9002\n")
    with pytest.raises(ConfigError, match="'port' is set both at top level and in \\[msgcube\\]"):
        Settings.load({}, env={"MSGCUBE_CONFIG": str(toml)})
    toml.write_text("msgcube = 1\n")
    with pytest.raises(ConfigError, match="must be a table"):
        Settings.load({}, env={"MSGCUBE_CONFIG": str(toml)})


def test_bad_settings_say_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MSGCUBE_SPAN_PROFILE: invalid value 'x'"):
        Settings.load({}, env={"MSGCUBE_SPAN_PROFILE": "x"})
    with pytest.raises(ConfigError, match="needs a UTC offset"):
        Settings.load({"now": "2026-01-01T00:00:00"}, env={})
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        Settings.load({"tz": "Mars/Olympus"}, env={})
    bad = tmp_path / "m.toml"
    bad.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings.load({}, env={"MSGCUBE_CONFIG": str(bad)})
    assert Settings(admin_token="hunter2").public()["admin_token"] == "***"
    assert "hunter2" not in repr(Settings(admin_token="hunter2"))


def test_settings_are_typed_once() -> None:
    """Values are parsed when the settings are built, never again per use."""
    s = Settings.load(
        {"now": "2026-01-02T09:00:00+08:00", "trusted_proxies": "10.0.0.0/8, 1.2.3.4"},
        env={"MSGCUBE_ACCESS_POLICY": "third_party_only", "MSGCUBE_READY_AT": "08:30"},
    )
    assert s.now == datetime(2026, 1, 2, 1, 0, tzinfo=UTC)
    assert s.clock() is s.now
    assert s.ready_at == time(8, 30)
    assert s.access_policy is AccessPolicy.THIRD_PARTY_ONLY
    assert s.span_profile is SpanProfile.CLASSIC and s.span_profile == "classic"
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "1.2.3.4/32"]
    # What worker processes receive parses back to the same settings.
    assert Settings.load({}, env=s.environment()) == s


PG = "postgresql://msgcube:s3cret-pw@db.example/msgcube"


def test_printed_settings_mask_the_database_password(tmp_path: Path) -> None:
    shown = Settings(db=PG).public()
    assert shown["db"] == "postgresql://msgcube:***@db.example/msgcube"
    assert "s3cret-pw" not in repr(Settings(db=PG))
    query = Settings(db="postgresql://db.example/m?user=u&password=pw1&sslmode=require").public()
    assert query["db"] == "postgresql://db.example/m?user=u&password=***&sslmode=require"
    out = _msgcube(tmp_path, "settings", "--db", PG)
    assert out.returncode == 0, out.stderr
    assert "s3cret-pw" not in out.stdout
    assert '"db": "postgresql://msgcube:***@db.example/msgcube"' in out.stdout


def test_printed_settings_show_the_database_in_use(tmp_path: Path) -> None:
    out = _msgcube(tmp_path, "settings")
    assert f'"db": "{tmp_path / "msgcube.db"}"' in out.stdout


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="MSGCUBE_CONFIG: no such file"):
        Settings.load({}, env={"MSGCUBE_CONFIG": str(missing)})
    out = _msgcube(tmp_path, "settings", MSGCUBE_CONFIG=str(missing))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"Error: MSGCUBE_CONFIG: no such file '{missing}'"]


def _msgcube(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCUBE_")}
    return subprocess.run(
        [sys.executable, "-m", "msgcube.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_readme_module_table_matches_the_tree() -> None:
    """Every module is in the README's module table once, and every path there exists."""
    src = ROOT / "src" / "msgcube"
    table = README[README.index("| module | holds |") : README.index("### The statistics")]
    named = [
        p
        for row in table.splitlines()[2:]
        for p in re.findall(r"`([\w/]+(?:\.py|/))`", row.split(" | ")[0])
    ]
    assert len(named) == len(set(named)), "a module listed twice"
    missing_paths = [p for p in named if not (src / p).exists()]
    assert not missing_paths, f"listed but not in the tree: {missing_paths}"
    packages = [p for p in named if p.endswith("/")]
    unlisted = [
        rel
        for path in sorted(src.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and (rel := path.relative_to(src).as_posix()) not in named
        and not any(rel.startswith(package) for package in packages)
    ]
    assert not unlisted, f"modules missing from the README's table: {unlisted}"


def _readme_module_rows() -> list[tuple[list[str], str]]:
    table = README[README.index("| module | holds |") : README.index("### The statistics")]
    rows = []
    for row in table.splitlines()[2:]:
        first, _, rest = row.strip("|").partition(" | ")
        rows.append((re.findall(r"`([\w/]+(?:\.py|/))`", first), rest))
    return rows


def test_a_package_row_names_every_module_of_its_package() -> None:
    """A row for a whole package (``relay/``) names each of its modules, and only real ones."""
    src = ROOT / "src" / "msgcube"
    for modules, holds in _readme_module_rows():
        for package in (m for m in modules if m.endswith("/") and m != "storage/migrations/"):
            named = set(re.findall(r"`(\w+\.py|\w+/)`", holds))
            present = {
                p.name + ("/" if p.is_dir() else "")
                for p in (src / package).iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py")
                or (p.is_dir() and p.name != "__pycache__")
            }
            assert named == present, f"{package}: README names {sorted(named ^ present)} wrongly"


def test_the_errors_row_names_every_exception() -> None:
    tree = ast.parse((ROOT / "src" / "msgcube" / "errors.py").read_text(encoding="utf-8"))
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    holds = next(h for modules, h in _readme_module_rows() if modules == ["errors.py"])
    assert classes <= set(re.findall(r"`(\w+)", holds)), classes


def test_the_checks_table_covers_every_datacube_errcode() -> None:
    """The contract's checks in order name every errcode a datacube route can answer (but -1)."""
    checked = {code for _, codes in CHECKS for code in codes}
    for ep in ENDPOINTS:
        assert checked == set(BY_PATH[ep.path].answerable) - {-1}, ep.name


def test_the_errcode_table_lists_every_errcode() -> None:
    """The route table's errcode list is the docs' only one: every errcode is in it."""
    answered = {code for route in API for code in route.answerable}
    assert {code for code in ERRMSG if code} == answered


def _commands(group: click.Group, prefix: str = "msgcube") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None and command.name == name  # a lazy entry names its command
        if isinstance(command, click.Group):
            found |= _commands(command, f"{prefix} {name}")
        elif not command.hidden:
            found[f"{prefix} {name}"] = command
    return found


def test_the_readme_command_table_matches_the_commands() -> None:
    """Every command has a row in the README's table, with exactly its own options."""
    section = README[README.index("## Command line") : README.index("### Settings")]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(msgcube [a-z ]+?)(?= -|`| [A-Z\[(])(.*?)` \|", section, re.M)
    }
    commands = _commands(cli)
    assert set(rows) == set(commands)
    settings_flags = {s.flag for s in SETTINGS}
    for path, command in commands.items():
        options = {
            opt
            for param in command.params
            if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--") and opt != "--help"
        }
        if path != "msgcube sync":
            options -= settings_flags
        shown = set(re.findall(r"--[a-z][a-z-]*", rows[path]))
        assert shown == options, f"{path}: README {sorted(shown)} vs {sorted(options)}"


def test_every_documented_choice_is_accepted() -> None:
    """The choices the docs print (``classic|current``) are what the option accepts."""
    for path, command in _commands(cli).items():
        context = click.Context(command)
        for param in command.params:
            if isinstance(param.type, click.Choice):
                for choice in param.type.choices:
                    param.type.convert(str(choice), param, context)  # raises if refused
                assert path


def test_settings_help_lists_the_settings_in_table_order() -> None:
    command = cli.commands["settings"]
    flags = [p.opts[0] for p in command.params if p.opts[0] in {s.flag for s in SETTINGS}]
    assert flags == [s.flag for s in SETTINGS]
