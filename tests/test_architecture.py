"""The layering rules of the README's architecture section, enforced by reading imports.

No module is executed: every ``import`` and ``from … import`` of ``src/msgcube`` is
resolved to the absolute module names it can load — relative imports (``from ..storage
import db``, ``from . import x``) and package imports (``from msgcube import storage``)
included — and checked against what its layer may use:

    cli, web, client  →  ingest, rollup, auth  →  storage  →  domain, wechat (pure)

The pure core does no I/O and keeps no hidden state: besides the import list, its code
calls no ``open``/``print``, no wall clock and no module-level ``random``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "msgcube"

PURE = ("domain", "wechat")
# What pure code may import: computation only. ``os`` is here for ``os.urandom`` (the AES
# envelope's random prefix); the call check below keeps it from doing anything else.
PURE_ALLOWED = (
    "__future__",
    "array",
    "base64",
    "binascii",
    "bisect",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "math",
    "operator",
    "random",
    "re",
    "secrets",
    "string",
    "struct",
    "typing",
    "unicodedata",
    "urllib.parse",
    "zoneinfo",
    "cryptography",
    "xml.parsers.expat",
    "xml.etree.ElementTree",
    "os",
    "msgcube.domain",
    "msgcube.wechat",
    "msgcube.errors",
)
UPPER = ("msgcube.web", "msgcube.cli", "msgcube.client")
MIDDLE = ("msgcube.ingest", "msgcube.rollup", "msgcube.auth", "msgcube.relay")
# Layer → what it must not import (nothing below imports anything above).
FORBIDDEN = {
    "storage": (*UPPER, *MIDDLE, "msgcube.settings"),
    # The ClickHouse side sits beside storage: the middle layers dispatch to it.
    "analytics": (*UPPER, *MIDDLE, "msgcube.settings"),
    "ingest": UPPER,
    "rollup": UPPER,
    "auth": UPPER,
    "relay": UPPER,
    # The client runs on machines with no msgcube server: only the pure core below it.
    "client": (*MIDDLE, "msgcube.storage", "msgcube.web", "msgcube.cli", "msgcube.settings"),
    "web": ("msgcube.cli", "msgcube.client"),
}


def module_name(path: Path) -> str:
    parts = ["msgcube", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, me: str | None = None) -> set[str]:
    """Absolute names of every module (or package attribute) ``path`` (module ``me``) imports."""
    me = me or module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            # ``from msgcube import storage`` imports the package msgcube.storage.
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def impure_calls(path: Path) -> set[str]:
    """Calls that reach outside a pure function: files, the terminal, the clock, global RNG."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("open", "print", "input"):
            found.add(f"{func.id}()")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner, attr = func.value.id, func.attr
            if attr in ("now", "today", "utcnow") or owner == "time":
                found.add(f"{owner}.{attr}()")
            elif owner == "random" and attr != "Random":
                found.add(f"{owner}.{attr}() (module-level random state)")
            elif owner == "os" and attr != "urandom":
                found.add(f"{owner}.{attr}()")
    return found


@pytest.mark.parametrize("package", PURE)
def test_pure_core_does_no_io(package: str) -> None:
    files = modules(package)
    assert files, f"no modules found in {package}"
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in imports_of(path)
        if not within(name, PURE_ALLOWED)
    } | {f"{path.relative_to(SRC)} calls {call}" for path in files for call in impure_calls(path)}
    assert not offenders, sorted(offenders)


def test_traffic_generator_is_in_the_pure_core() -> None:
    """The synthetic traffic generator claims purity; living in domain/ makes the test hold it."""
    assert SRC / "domain" / "traffic.py" in modules("domain")
    assert not (SRC / "traffic.py").exists()


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_upwards(layer: str) -> None:
    files = modules(layer)
    assert files, f"no modules found in {layer}"
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in imports_of(path)
        if within(name, FORBIDDEN[layer])
    }
    assert not offenders, sorted(offenders)


def test_no_loose_modules_at_the_root() -> None:
    """The root holds only what every layer shares; everything else lives in its layer."""
    root = {p.name for p in SRC.glob("*.py")}
    assert root <= {"__init__.py", "errors.py", "settings.py"}, sorted(root)


def test_cli_helpers_do_not_import_the_command_group() -> None:
    """main → sub-command modules → common, one way: no sub-command imports cli.main."""
    offenders = {
        str(path.relative_to(SRC))
        for path in modules("cli")
        if path.name not in ("main.py", "__main__.py") and "msgcube.cli.main" in imports_of(path)
    }
    assert not offenders, sorted(offenders)


def test_the_rules_catch_every_import_form(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "from msgcube.storage.db import open_store\nimport sqlalchemy\n"
        "from ..storage import db\nfrom .. import web\nfrom msgcube import cli\n"
        "from . import periods\nimport time\nnow = time.time()\nprint(open('x').read())\n"
        "import random\nrandom.random()\n"
    )
    found = imports_of(bad, "msgcube.domain.probe")
    calls = impure_calls(bad)
    assert {
        "msgcube.storage.db",
        "sqlalchemy",
        "msgcube.storage",
        "msgcube.web",
        "msgcube.cli",
        "msgcube.domain.periods",
    } <= found
    assert not within("msgcube.domain.periods", FORBIDDEN["storage"])
    assert {n for n in found if not within(n, PURE_ALLOWED)} >= {
        "msgcube.storage",
        "msgcube.web",
        "msgcube.cli",
        "sqlalchemy",
        "time",
    }
    assert {"time.time()", "print()", "open()"} <= calls
    assert any(c.startswith("random.random()") for c in calls)
