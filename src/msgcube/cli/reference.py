"""The reference tables of README.md and docs/contract.md, generated from the code's tables.

Each generated table sits in its document between two markers::

    <!-- generated: endpoints -->
    …
    <!-- end: endpoints -->

``msgcube docs --write README.md docs/contract.md`` rewrites what is between them, and
``tests/test_docs.py`` fails when a document differs from its regenerated self, so the
documents cannot drift from the endpoint, settings, message-type, errcode and command
tables they describe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import click

from msgcube.domain.endpoints import ENDPOINTS
from msgcube.domain.messages import COUNTED_TYPES, MSG_TYPE_CODES, MSG_TYPE_NAMES_ZH
from msgcube.errors import ERRMSG
from msgcube.settings import SETTINGS
from msgcube.web.api_table import errcode_markdown

CHECKS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("the method is not POST", (43002,)),
    ("no `access_token` parameter", (41001,)),
    ("the token is unknown, malformed, or superseded and past its overlap", (40001,)),
    ("the token is known but expired", (42001,)),
    ("the account's own token comes from an address outside its IP whitelist", (40164,)),
    ("the token's account or platform may not call this API", (48001, 61007)),
    ("the daily quota of this API is used up", (45009,)),
    ("the body is over 64 KiB (refused without being read)", (47001,)),
    ("the body is empty", (44002,)),
    ("the body is not a JSON object with string `begin_date` and `end_date`", (47001,)),
    ("a date is not strictly `YYYY-MM-DD` or not a calendar date", (61500,)),
    (
        "`begin_date` > `end_date`, `end_date` is not before today, or the span is too long",
        (61501,),
    ),
    ("a requested closed period is not ready yet", (61503,)),
)
"""The datacube checks in the order they run; the first that fails answers."""


def endpoints_markdown() -> str:
    """The endpoint table, from ``domain.endpoints.ENDPOINTS``."""
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
    """The settings reference, from the settings table."""
    lines = ["| setting | flag | environment | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.text(s.default)}`" if s.text(s.default) else "—"
        lines.append(f"| `{s.name}` | `{s.flag}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(lines)


def msg_types_markdown() -> str:
    """Push ``MsgType`` → ``msg_type``, from ``domain.messages``."""
    lines = ["| push `MsgType` | msg_type | 中文 |", "|---|---|---|"]
    for code in COUNTED_TYPES:
        names = ", ".join(f"`{n}`" for n, c in MSG_TYPE_CODES.items() if c == code)
        lines.append(f"| {names} | {code} | {MSG_TYPE_NAMES_ZH[code]} |")
    return "\n".join(lines)


def checks_markdown() -> str:
    """The datacube checks in order, with WeChat's errcodes and texts from ``errors.ERRMSG``."""
    lines = ["| # | when | errcode | errmsg |", "|---|---|---|---|"]
    for number, (when, codes) in enumerate(CHECKS, start=1):
        texts = " / ".join(f"`{ERRMSG[c]}`" for c in codes)
        lines.append(f"| {number} | {when} | {' / '.join(map(str, codes))} | {texts} |")
    return "\n".join(lines)


def _commands(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)  # listed the way ``--help`` lists them (lazy ones loaded)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def commands_markdown(group: click.Group) -> str:
    """The command reference, from the click commands themselves (arguments and options)."""
    lines = ["| command | does |", "|---|---|"]
    for path, command in _commands(group, "msgcube"):
        pieces = [_usage(p) for p in command.params if not _is_setting_flag(p)]
        usage = " ".join([path, *pieces]).replace("|", "\\|")
        help_text = (command.help or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        lines.append(f"| `{usage}` | {help_text} |")
    return "\n".join(lines)


def _is_setting_flag(param: click.Parameter) -> bool:
    """The per-setting flags every command takes: listed once, in the settings table."""
    help_text = getattr(param, "help", None) or ""
    return any(help_text.endswith(f"[env {s.env}]") for s in SETTINGS)


def _usage(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        name = param.human_readable_name.upper()
        text = f"{name}..." if param.nargs == -1 else name
        return text if param.required else f"[{text}]"
    assert isinstance(param, click.Option)
    flag = max(param.opts, key=len)
    if param.is_flag:
        text = "/".join([flag, *param.secondary_opts])
    else:
        value = param.metavar or (param.name or "x").upper()
        if isinstance(param.type, click.Choice):
            value = "|".join(map(str, param.type.choices))
        text = f"{flag} {value}"
    return text if param.required else f"[{text}]"


GENERATORS: dict[str, Callable[[click.Group], str]] = {
    "endpoints": lambda _cli: endpoints_markdown(),
    "settings": lambda _cli: settings_markdown(),
    "msg-types": lambda _cli: msg_types_markdown(),
    "checks": lambda _cli: checks_markdown(),
    "route-errcodes": lambda _cli: errcode_markdown().rstrip("\n"),
    "commands": commands_markdown,
}

_BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(?:.*?\n)?(<!-- end: \2 -->)", re.DOTALL)


def regenerate(text: str, cli: click.Group) -> str:
    """``text`` with every generated block rewritten from the code's tables."""

    def block(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
        return match.group(1) + GENERATORS[name](cli) + "\n" + match.group(3)

    return _BLOCK.sub(block, text)


def all_tables(cli: click.Group) -> str:
    """Every generated table, one after the other (``msgcube docs``)."""
    return "\n\n".join(f"<!-- {name} -->\n{make(cli)}" for name, make in GENERATORS.items())
