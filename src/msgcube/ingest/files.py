"""Bulk import of JSON Lines and CSV files with WeChat's field names.

Reading is streamed in batches (memory stays flat whatever the file size). A bad line
never stops the import: it is reported with its line number and written, verbatim, to
a rejects file, and every good line is stored. Format is chosen by the file name
(``.csv`` → CSV, anything else → JSON Lines) or explicitly.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from msgcube.domain.messages import Message, Record, fast_message, parse_record
from msgcube.domain.periods import local_today
from msgcube.errors import IngestError
from msgcube.ingest.batch import write_batch
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store
from msgcube.storage.records import SenderIds, WriteResult

BATCH = 100_000  # lines per transaction, as the plain loader of bench/import.py


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


def _jsonl(stream: IO[bytes]) -> Iterator[tuple[int, bytes, Any]]:
    for number, raw in enumerate(stream, start=1):
        try:
            value = orjson.loads(raw)  # JSON allows the line's own whitespace: no strip
        except orjson.JSONDecodeError:
            line = raw.strip()  # blank, or padded with what JSON calls no whitespace
            if not line:
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                value = IngestError(f"invalid JSON: {exc}")
        yield number, raw, value


def _csv(stream: IO[bytes]) -> Iterator[tuple[int, bytes, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


def _csv_rows(reader: Any) -> Iterator[tuple[int, bytes, Any]]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except (csv.Error, UnicodeDecodeError) as exc:
        yield 1, b"", IngestError(f"unreadable CSV header: {exc}")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield reader.line_num, b"", IngestError(f"unreadable CSV row: {exc}")
            continue
        raw = (",".join(row) + "\n").encode()
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield (
                reader.line_num,
                raw,
                IngestError(f"expected {len(header)} columns, found {len(row)}"),
            )
            continue
        yield reader.line_num, raw, {k: v for k, v in zip(header, row, strict=True) if v != ""}


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
    progress: Callable[[int], None] | None = None,
    sender_ids: SenderIds | None = None,
) -> ImportReport:
    """Import one stream at ``now``; ``progress`` is called with each batch's line count."""
    today, received_at = local_today(now, account.tz), int(now.timestamp())
    report = report or ImportReport()
    sender_ids = sender_ids or SenderIds(account.id)
    rows = _csv(stream) if fmt == "csv" else _jsonl(stream)
    batch: list[Record] = []
    seen_lines = 0
    valid_openids: set[str] = set()

    def flush() -> None:
        nonlocal seen_lines
        report.lines += seen_lines
        if batch:
            with store.write() as conn:
                report.written.add(
                    write_batch(conn, account, batch, today, sender_ids, received_at=received_at)
                )
            batch.clear()
        if progress and seen_lines:
            progress(seen_lines)
        seen_lines = 0

    def reject(number: int, raw: bytes, exc: IngestError) -> None:
        report.bad_count += 1
        if len(report.bad) < ImportReport.MAX_KEPT:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            report.bad.append(BadLine(source, number, exc.reason, text[:200]))
        if rejects is not None:
            rejects.write(raw if raw.endswith(b"\n") else raw + b"\n")

    with _no_cycle_collection():
        for number, raw, value in rows:
            seen_lines += 1
            # The common line takes the fast path; everything else gets parse_record's
            # full checks and reasons.
            fast = fast_message(value, valid_openids) if type(value) is dict else None
            if fast is not None:
                batch.append(fast)
            else:
                try:
                    if isinstance(value, IngestError):
                        raise value
                    if not isinstance(value, dict):
                        raise IngestError("a line must be a JSON object")
                    record = parse_record(value)
                    if isinstance(record, Message) and record.msg_type is None:
                        report.uncounted[record.msg_type_name] += 1
                    batch.append(record)
                except IngestError as exc:
                    reject(number, raw, exc)
            if len(batch) >= BATCH:
                flush()
        flush()
    return report


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a batch of 100k records is built.

    Every record survives until its batch is written, so each collection would rescan the
    whole batch for cycles it cannot have (records are flat tuples): a quarter of the
    import's CPU. Reference counting still frees everything; the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def detect_format(path: str) -> str:
    return "csv" if Path(path).suffix.lower() == ".csv" else "jsonl"
