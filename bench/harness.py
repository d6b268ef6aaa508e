"""What every benchmark shares: free ports, clean environments, servers, the ceiling, wrk.

``bench/api.py`` and ``bench/push.py`` measure msgcube next to the same ceiling
(``bench/ceiling_app.py``) with the same load generator (``wrk`` plus a Lua script that
prints one ``RESULT key=value …`` line); ``bench/sync.py`` starts the same kind of
server. Each script imports this module (the scripts run as ``python bench/x.py``, so
``bench/`` is on the path) and keeps only what it measures.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MSGCUBE = str(Path(sys.executable).with_name("msgcube"))
"""The ``msgcube`` console script of the running interpreter's environment."""


@dataclass(frozen=True)
class Load:
    """One wrk run: requests per second, latency percentiles, and the request count."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ``MSGCUBE_*`` and ``CEILING_*`` (a stray setting skews a run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSGCUBE_", "CEILING_"))}
    env["MSGCUBE_CONFIG"] = os.devnull
    return env | extra


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until something listens on ``port``, failing early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def start(cmd: Sequence[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    """A server in its own session (so its workers are signalled with it), once it listens."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    time.sleep(1.5)  # every worker up, not only the first to bind
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's session, SIGKILL what is still there after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def running(
    cmd: Sequence[str], env: dict[str, str], log: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(cmd, env, log, port)
    try:
        yield proc
    finally:
        stop(proc)


def session_cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) used so far by the processes of ``proc``'s session (a
    server and its workers, see ``start``): per request, a measure that other work on a
    shared machine does not move the way it moves requests per second."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended
        if int(fields[3]) == proc.pid:  # fields[3] is the session id after ")"
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def ceiling_command(port: int, workers: int) -> list[str]:
    """The ceiling: ``bench/ceiling_app.py`` under uvicorn, configured like msgcube serve."""
    return [
        *(sys.executable, "-m", "uvicorn", "ceiling_app:app", "--app-dir", str(BENCH)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "30"),
    ]


def require_wrk() -> bool:
    """True when wrk is installed; otherwise say how to get it."""
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return False
    return True


def run_wrk(
    script: Path, url: str, *, seconds: float, connections: int, threads: int
) -> dict[str, int]:
    """Run wrk with a Lua ``script`` whose ``done`` prints ``RESULT k=v …``; those fields.

    The script counts what its benchmark calls a bad answer; any ``bad``, ``errcodes`` or
    ``socket_errors`` fails the run (a fast wrong answer is no result).
    """
    cmd = [
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"),
        *("-s", str(script), url),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(r"RESULT (.*)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    if any(fields.get(name) for name in ("bad", "errcodes", "socket_errors")):
        raise RuntimeError(f"bad answers during the run: {fields}\n{proc.stdout}")
    return fields


def load_of(fields: dict[str, int]) -> Load:
    return Load(
        rps=fields["requests"] / (fields["duration_us"] / 1e6),
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        requests=fields["requests"],
    )


# The tail of every Lua script: sum the per-thread counters named in COUNTERS and print
# the RESULT line run_wrk parses.
LUA_DONE = r"""
function done(summary, latency, requests)
  local totals = {}
  for _, name in ipairs(COUNTERS) do totals[name] = 0 end
  for _, t in ipairs(threads) do
    for _, name in ipairs(COUNTERS) do totals[name] = totals[name] + t:get(name) end
  end
  local extra = ""
  for _, name in ipairs(COUNTERS) do extra = extra .. " " .. name .. "=" .. totals[name] end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d " ..
    "socket_errors=%d", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout) .. extra .. "\n")
end
"""
