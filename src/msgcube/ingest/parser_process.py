"""The import's parser in a process of its own, one batch ahead of the writer.

``python -m msgcube.ingest.parser_process FMT TZ BATCH`` reads the import's input on its
standard input — the importing process hands over its file descriptor, a file or a pipe
— and writes each ``ParsedBlock`` to its standard output as a length-prefixed pickle;
the importer writes block k to the database while this process parses block k+1, so
parsing and SQLite use both cores. The pipe bounds the work in flight: a finished block
waits in this process until the writer asks for it, so at most two are held at once.

A failure here (an exception, or the process killed) reaches the importer as
``ImportStopped`` after the blocks sent before it: those are written, the rest is not,
and the process is always reaped. Ctrl-C is the importer's to handle: this process
ignores SIGINT and ends when its pipe closes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from msgcube.errors import ImportStopped
from msgcube.ingest.parsing import ParsedBlock, parse_blocks
from msgcube.settings import use_packaged_rules

_HEADER = struct.Struct("<Q")


@contextlib.contextmanager
def parsed_elsewhere(
    stream: IO[bytes], fmt: str, tz: str, batch: int, source: str
) -> Iterator[Iterator[ParsedBlock]]:
    """The blocks of ``stream``, parsed by a child process (reaped on leaving)."""
    # The child imports this very msgcube, wherever it was loaded from.
    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    child = subprocess.Popen(  # noqa: S603 - this interpreter, our module, no shell
        [sys.executable, "-m", __name__, fmt, tz, str(batch), source],
        stdin=stream.fileno(),
        stdout=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": path},
    )
    assert child.stdout is not None
    try:
        yield _receive(child, child.stdout, source)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def _receive(child: subprocess.Popen[bytes], pipe: IO[bytes], source: str) -> Iterator[ParsedBlock]:
    while True:
        header = pipe.read(_HEADER.size)
        size = _HEADER.unpack(header)[0] if len(header) == _HEADER.size else 0
        frame = pipe.read(size) if size else b""
        if not frame or len(frame) < size:  # died, maybe mid-frame
            code = child.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise ImportStopped(f"{source}: the parser process ended unexpectedly ({how})")
        kind, value = pickle.loads(frame)  # noqa: S301 - our own child's frames
        if kind == "block":
            yield value
        elif kind == "error":
            raise ImportStopped(value)
        else:
            child.wait()
            return


def _send(out: IO[bytes], kind: str, value: Any) -> None:
    data = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def main(argv: list[str]) -> int:
    fmt, tz, batch, source = argv
    use_packaged_rules()  # the importer's rules (a process of its own starts afresh)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    try:
        try:
            blocks = parse_blocks(sys.stdin.buffer, fmt, tz, batch=int(batch), source=source)
            for block in blocks:
                _send(out, "block", block)
        except ImportStopped as exc:
            _send(out, "error", exc.reason)
            return 1
        except Exception as exc:  # a bug: still one line for the importer
            _send(out, "error", f"{source}: the parser failed: {type(exc).__name__}: {exc}")
            return 1
        _send(out, "end", None)
    except BrokenPipeError:
        return 1  # the importer is gone
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
