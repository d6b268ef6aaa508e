"""A million-message import stays under 300 MB RSS (the importer and its parser process
together): both stream, whatever the file size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def msgcube(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "msgcube.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@pytest.mark.slow
def test_one_million_messages_import_in_bounded_memory(tmp_path: Path) -> None:
    env = os.environ | {
        "MSGCUBE_DB": str(tmp_path / "big.db"),
        "MSGCUBE_NOW": "2026-06-01T12:00:00+08:00",
        "MSGCUBE_CONFIG": os.devnull,
    }
    src = tmp_path / "million.jsonl"
    msgcube(env, "account", "add", "--appid", "wxbig", "--secret", "s")
    out = msgcube(
        env,
        "generate",
        "--appid",
        "wxbig",
        "--days",
        "30",
        "--users",
        "20000",
        "--per-day",
        "33334",
        "--out",
        str(src),
    )
    assert int(out.split()[0]) >= 1_000_000
    # The import runs in a process of its own that reports its own peak RSS: VmHWM of
    # /proc/self/status. Not getrusage: Linux carries ru_maxrss across fork and exec, so
    # a child of a big pytest process would inherit the parent's peak. Its parser process
    # (a file this size is parsed beside the writer) is watched from a thread: VmHWM of
    # each child, sampled until the import returns; the goal is on the sum.
    measure = (
        "import re, sys, threading, time\n"
        "from pathlib import Path\n"
        "def hwm(pid):\n"
        "    text = Path(f'/proc/{pid}/status').read_text()\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+) kB', text)[1])\n"
        "peaks = {}\n"
        "def watch():\n"
        "    while True:\n"
        "        for task in Path('/proc/self/task').iterdir():\n"
        "            for pid in (task / 'children').read_text().split():\n"
        "                try:\n"
        "                    peaks[pid] = max(peaks.get(pid, 0), hwm(pid))\n"
        "                except (OSError, TypeError):\n"
        "                    pass\n"
        "        time.sleep(0.05)\n"
        "threading.Thread(target=watch, daemon=True).start()\n"
        "from msgcube.cli.main import cli\n"
        "cli(sys.argv[1:], standalone_mode=False)\n"
        "print('peak_kb', hwm('self'), 'children', len(peaks), sum(peaks.values()))\n"
    )
    args = [sys.executable, "-c", measure, "import", "--appid", "wxbig", "--quiet", str(src)]
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    match = re.search(r"(\d+) new messages, (\d+) duplicates", done.stdout)
    assert match, done.stdout
    assert int(match[1]) >= 1_000_000 and int(match[2]) == 0
    peak = re.search(r"peak_kb (\d+) children (\d+) (\d+)", done.stdout)
    assert peak, done.stdout
    assert int(peak[2]) == 1  # the parser process ran, and was seen
    peak_mb = (int(peak[1]) + int(peak[3])) / 1024
    assert peak_mb < 300, f"import and parser peaked at {peak_mb:.0f} MB RSS in all"
