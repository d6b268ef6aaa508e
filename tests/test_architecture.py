"""The layering rules of DESIGN.md, enforced by reading imports (no module is executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "msgcube"

PURE = ("domain", "wechat")
FORBIDDEN_IN_PURE = (
    "msgcube.storage", "msgcube.web", "msgcube.ingest", "msgcube.rollup", "msgcube.auth",
    "msgcube.client", "msgcube.cli", "sqlalchemy", "psycopg", "sqlite3", "httpx", "starlette",
    "uvicorn", "socket", "requests",
)  # fmt: skip
# Nothing below imports anything above: storage never reaches up into the layers that use it.
FORBIDDEN_IN_STORAGE = ("msgcube.web", "msgcube.cli", "msgcube.client", "msgcube.ingest",
                        "msgcube.rollup", "msgcube.auth")  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", PURE)
def test_pure_core_does_no_io(package: str) -> None:
    files = modules(package)
    assert files, f"no modules found in {package}"
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_PURE)
    }
    assert not offenders, sorted(offenders)


def test_storage_does_not_import_upper_layers() -> None:
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in modules("storage")
        for name in imports_of(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_STORAGE)
    }
    assert not offenders, sorted(offenders)


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from msgcube.storage.db import open_store\nimport sqlalchemy\n")
    assert {"msgcube.storage.db", "sqlalchemy"} <= imports_of(bad)
