"""The server freezes its startup objects out of the garbage collector's reach.

A full collection walks every tracked object; the ≈ 90,000 built at startup (modules,
SQLAlchemy's metadata, the app) live as long as the worker, so walking them is a pause
of several milliseconds on the event loop for nothing (bench/RESULTS.md, API p99). Checked
in a fresh interpreter, as a ``serve --workers N`` worker builds its app.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.server import msgcube_env

PROBE = """
import gc
from msgcube.web.server import app_from_env

app = app_from_env()
print(gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_worker_app_leaves_startup_objects_to_no_collection(tmp_path: Path) -> None:
    env = msgcube_env(tmp_path / "msgcube.db")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    frozen, tracked = map(int, proc.stdout.split())
    # Everything built so far is frozen; what a collection still walks is a sliver of it.
    assert frozen > 20_000
    assert tracked < frozen // 20
