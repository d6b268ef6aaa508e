"""Lines of an import file → batches ready to write (``ParsedBlock``), with every reject.

This is the import's parsing half, with no database: it runs in the importing process
for small inputs and in a process of its own (``ingest.parser_process``) for large
ones, so it imports nothing heavier than orjson and the pure core. Each batch carries
its bad lines with their numbers, counted from the start of the stream.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import re
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from msgcube.domain.message_block import BlockBuilder, MessageBlock, Senders
from msgcube.domain.messages import Event, fast_message, parse_record
from msgcube.errors import ImportStopped, IngestError

BATCH = 100_000  # lines per transaction, as the plain loader of bench/import.py
FIRST = 10_000
"""Records in the first batch: the writer waits for it, so it is small (a tenth of a
second of parsing, not a second's); the batches after it are parsed while it is written."""


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    reason: str
    raw: bytes


@dataclass(slots=True)
class ParsedBlock:
    """One batch of an import: what to store, and what was rejected."""

    lines: int
    position: int | None
    """Bytes of the stream read so far (for the progress bar), when known."""
    messages: MessageBlock
    events: list[Event] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    uncounted: Counter[str] = field(default_factory=Counter)
    """Stored messages per ``MsgType`` that no statistic counts (a typo such as ``txt``)."""
    header: bytes | None = None
    """A CSV stream's header row, which its rejects file starts with (so it can be fixed
    and imported again with ``--format csv``); None for JSON Lines."""


def parse_blocks(
    stream: IO[bytes], fmt: str, tz: str, *, batch: int = BATCH, source: str = "-"
) -> Generator[ParsedBlock, None, None]:
    """Parse ``stream`` (``jsonl`` or ``csv``) into blocks of at most ``batch`` records.

    A bad line is a ``Reject``; a line that makes the parser itself fail (a bug) stops
    the import with ``ImportStopped`` naming ``source`` and the line.
    """
    header: list[bytes] = []
    rows = _csv(stream, header) if fmt == "csv" else _jsonl(stream)
    builder = BlockBuilder(tz, Senders())
    add = builder.add
    valid_openids: set[str] = set()
    events: list[Event] = []
    rejects: list[Reject] = []
    uncounted: Counter[str] = Counter()
    lines = 0
    limit = min(batch, FIRST)

    def block() -> ParsedBlock:
        nonlocal lines, events, rejects, uncounted, limit
        limit = batch
        done = ParsedBlock(
            lines,
            _position(stream),
            builder.finish(),
            events,
            rejects,
            uncounted,
            header[0] if header else None,
        )
        events, rejects, uncounted, lines = [], [], Counter(), 0
        return done

    with _no_cycle_collection():
        for number, raw, value in rows:
            lines += 1
            try:
                # The common line takes the fast path; everything else gets parse_record's
                # full checks and reasons.
                fast = fast_message(value, valid_openids) if type(value) is dict else None
                if fast is not None:
                    add(*fast)
                else:
                    if isinstance(value, IngestError):
                        raise value
                    if not isinstance(value, dict):
                        raise IngestError("a line must be a JSON object")
                    record = parse_record(value)
                    if isinstance(record, Event):
                        events.append(record)
                    else:
                        if record.msg_type is None:
                            uncounted[record.msg_type_name] += 1
                        add(*record)
            except IngestError as exc:
                rejects.append(Reject(number, exc.reason, _as_line(raw)))
                continue
            except Exception as exc:
                reason = f"the parser failed: {type(exc).__name__}: {exc}"
                raise ImportStopped(f"{source}:{number}: {reason}") from exc
            if builder.count + len(events) >= limit:
                yield block()
        if lines:
            yield block()


def _position(stream: IO[bytes]) -> int | None:
    try:
        return stream.tell()
    except (OSError, ValueError):
        return None  # a pipe


_BOM = b"\xef\xbb\xbf"


def _jsonl(stream: IO[bytes]) -> Iterator[tuple[int, bytes, Any]]:
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]  # Windows editors start UTF-8 files with one, as for CSV
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


_NOT_UTF8 = re.compile("[\udc80-\udcff]")
"""Bytes that are not UTF-8, as ``surrogateescape`` decodes them."""


def _csv(stream: IO[bytes], header: list[bytes]) -> Iterator[tuple[int, bytes | list[str], Any]]:
    """The records of a CSV stream; its header row, re-quoted, is appended to ``header``.

    Bytes that are not UTF-8 are decoded as lone surrogates (``surrogateescape``) and
    the record holding them is rejected: a strict decoder would fail on a whole chunk
    of the stream and drop every record in it.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text), header)
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


def _as_line(raw: bytes | list[str]) -> bytes:
    """A record as the rejects file holds it: a JSON line as read, a CSV record quoted
    back into one (only rejects pay for that)."""
    if isinstance(raw, bytes):
        return raw
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(raw)
    return out.getvalue().encode("utf-8", "surrogateescape")


def _csv_rows(reader: Any, header_out: list[bytes]) -> Iterator[tuple[int, bytes | list[str], Any]]:
    """``(first line of the record, the record (its cells), its fields | IngestError)``.

    A record may span lines (a quoted newline in ``Content``): its number is the line
    it starts on.
    """
    try:
        first_row = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, b"", IngestError(f"unreadable CSV header: {exc}")
        return
    if any(_NOT_UTF8.search(cell) for cell in first_row):
        yield 1, first_row, IngestError("the CSV header is not UTF-8")
        return
    header_out.append(_as_line(first_row))
    header = [h.strip() for h in first_row]
    ended = reader.line_num
    while True:
        number = ended + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            ended = reader.line_num
            yield number, b"", IngestError(f"unreadable CSV row: {exc}")
            continue
        ended = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if any(_NOT_UTF8.search(cell) for cell in row):
            yield number, row, IngestError("not UTF-8")
        elif len(row) != len(header):
            yield number, row, IngestError(f"expected {len(header)} columns, found {len(row)}")
        else:
            yield number, row, {k: v for k, v in zip(header, row, strict=True) if v != ""}


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
