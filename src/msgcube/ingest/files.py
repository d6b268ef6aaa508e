"""Bulk import of JSON Lines and CSV files with WeChat's field names.

Reading is streamed in batches (memory stays flat whatever the file size). A bad line
never stops the import: it is reported with its line number and written, verbatim, to
a rejects file, and every good line is stored. Format is chosen by the file name
(``.csv`` → CSV, anything else → JSON Lines) or explicitly.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from msgcube.domain.identifiers import OPENID_MAX, text_field
from msgcube.domain.periods import local_today
from msgcube.errors import IngestError
from msgcube.ingest.batch import BlockSenders, write_block
from msgcube.ingest.parser_process import parsed_elsewhere
from msgcube.ingest.parsing import BATCH, Reject, parse_blocks
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store
from msgcube.storage.records import SenderIds, WriteResult


@dataclass(frozen=True, slots=True)
class BadLine:
    source: str
    line: int
    reason: str
    text: str


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    written: WriteResult = field(default_factory=WriteResult)
    bad: list[BadLine] = field(default_factory=list)
    bad_count: int = 0
    uncounted: Counter[str] = field(default_factory=Counter)
    """Lines per ``MsgType`` that is stored but in no statistic (a typo such as ``txt``)."""

    MAX_KEPT = 1000  # bad lines kept in memory for the report; all go to the rejects file

    def reject(self, source: str, bad: Reject, rejects: IO[bytes] | None) -> None:
        self.bad_count += 1
        if len(self.bad) < ImportReport.MAX_KEPT:
            text = bad.raw.decode("utf-8", "replace").rstrip("\n")
            self.bad.append(BadLine(source, bad.line, bad.reason, text[:200]))
        if rejects is not None:
            rejects.write(bad.raw if bad.raw.endswith(b"\n") else bad.raw + b"\n")


def import_stream(
    store: Store,
    account: Account,
    stream: IO[bytes],
    now: datetime,
    *,
    source: str = "-",
    fmt: str = "jsonl",
    rejects: IO[bytes] | None = None,
    report: ImportReport | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    sender_ids: SenderIds | None = None,
    parser: str = "inline",
    batch: int = BATCH,
) -> ImportReport:
    """Import one stream at ``now``, one transaction per ``batch`` records.

    ``progress`` is called after each batch with its line count and the bytes read so
    far. ``parser`` says where lines are parsed: ``inline`` here, ``process`` in a
    process of its own (``ingest.parser_process``) while this one writes the batch
    before — the two halves then run on two cores — whenever the input is a file or a
    pipe, or ``auto``: a process for a large file or a pipe.
    """
    today, received_at = local_today(now, account.tz), int(now.timestamp())
    report = report or ImportReport()
    senders = BlockSenders(sender_ids or SenderIds(account.id))
    with contextlib.ExitStack() as stack:
        if _use_process(parser, stream):
            blocks = stack.enter_context(parsed_elsewhere(stream, fmt, account.tz, batch, source))
        else:
            blocks = stack.enter_context(
                contextlib.closing(
                    parse_blocks(stream, fmt, account.tz, batch=batch, source=source)
                )
            )
        header_written = False
        for block in blocks:
            if block.rejects and block.header is not None and not header_written:
                if rejects is not None:
                    rejects.write(block.header)
                header_written = True
            for bad in block.rejects:
                report.reject(source, bad, rejects)
            report.uncounted.update(block.uncounted)
            report.lines += block.lines
            if block.messages.messages or block.events:
                with store.write() as conn:
                    report.written.add(
                        write_block(
                            conn,
                            account,
                            block.messages,
                            block.events,
                            today,
                            senders,
                            received_at=received_at,
                        )
                    )
            if progress:
                progress(block.lines, block.position)
    return report


PROCESS_FROM = 8 << 20
"""``auto`` parses a regular file of at least this many bytes (≈ 45k lines) in a process
of its own: below, starting one costs more than it saves."""


def _use_process(parser: str, stream: IO[bytes]) -> bool:
    """Whether to parse in a process of its own (see ``import_stream``): only an input
    with a file descriptor (a file, a pipe) can be handed over."""
    if parser == "inline":
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return parser == "process" or not stat.S_ISREG(info.st_mode) or info.st_size >= PROCESS_FROM


def detect_format(path: str) -> str:
    return "csv" if Path(path).suffix.lower() == ".csv" else "jsonl"


def follower_openids(lines: Iterable[bytes], source: str) -> list[str]:
    """The openids of a follower file (one per line, blank lines skipped).

    Unlike a message import, a follower list replaces the whole base, so a bad line
    stops it before anything changes: ``IngestError`` naming ``source:LINE`` and why
    (not UTF-8, or not an openid by the sender rule every edge applies).
    """
    openids: list[str] = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8").strip()
            if line:
                openids.append(text_field(line, "openid", OPENID_MAX))
        except UnicodeDecodeError:
            raise IngestError(f"{source}:{number}: not UTF-8") from None
        except IngestError as exc:
            raise IngestError(f"{source}:{number}: {exc.reason}") from None
    return openids
