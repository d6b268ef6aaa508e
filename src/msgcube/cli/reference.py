"""The reference tables of the README and docs/contract.md, generated from the code's tables.

``msgcube docs`` prints them; ``tests/test_docs.py`` checks that the documents contain
them verbatim, so the documents cannot drift from the endpoint and settings tables.
"""

from __future__ import annotations

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.settings import SETTINGS


def endpoints_markdown() -> str:
    """The endpoint table, generated from ``domain.endpoints.ENDPOINTS``."""
    lines = [
        "| endpoint | 中文 | rows per | row fields | max span classic / current |",
        "|---|---|---|---|---|",
    ]
    for e in ENDPOINTS:
        lines.append(
            f"| `{e.path}` | {e.title_zh} | {e.period.value} | {', '.join(e.fields)} "
            f"| {e.span_classic} / {e.span_current} |"
        )
    return "\n".join(lines)


def settings_markdown() -> str:
    """The settings reference, generated from the settings table."""
    lines = ["| setting | flag | environment | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default not in ("", None) else "—"
        lines.append(f"| `{s.name}` | `{s.flag}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(lines)
