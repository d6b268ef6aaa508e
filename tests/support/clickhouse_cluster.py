"""A real ClickHouse cluster for the tests: ZooKeeper + 2 shards × 2 replicas on loopback.

Debian's ``clickhouse-server`` (release 18.16) and ``zookeeper`` run as plain processes
of the current user (18.16 does not refuse root, which CI is), each with a scratch config
in a temporary directory (own free ports, own data paths, listening on 127.0.0.1 only,
small caches), so nothing touches /etc or /var and several runs can coexist. Every
process leads its own process group and is killed by group on exit, whatever ends the
``with`` block (a failed assertion, Ctrl-C), and dies with the test process if that is
killed outright.

ZooKeeper must be *serving* before the servers start: a server whose first ZooKeeper
session was dropped during ZooKeeper's start-up was seen to crash (see
:func:`_zookeeper_serving`).

The fault tests need :meth:`ClickHouseCluster.kill_replica` (SIGKILL, like a crashed
machine), :meth:`ClickHouseCluster.start_replica` (the same data directory again, so it
rejoins and catches up from its peer) and :meth:`ClickHouseCluster.stop_shard`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

CLICKHOUSE_SERVER = "/usr/sbin/clickhouse-server"
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
JAVA = "/usr/bin/java"
CLUSTER = "msgcube"
"""The ``remote_servers`` name the tests (and ``?cluster=`` URLs) use."""

PR_SET_PDEATHSIG = 1
SHARDS = 2
REPLICAS = 2
START_TIMEOUT = 60.0
START_ATTEMPTS = 3
#: How long ZooKeeper keeps a SIGKILLed server's session (and so its replica "active"):
#: until then a quorum insert still waits for it. Short for fast fault tests, long enough
#: for a loaded 2-core machine not to drop live sessions.
ZK_SESSION_MS = 5000


def require_binaries() -> None:
    """Skip the calling test when the programs are missing; in CI (``CI`` set), fail it."""
    import pytest

    missing = missing_binaries()
    if not missing:
        return
    message = (
        f"ClickHouse cluster tests need {', '.join(missing)} (Debian: clickhouse-server zookeeper)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def missing_binaries() -> list[str]:
    """The programs this module needs that are not installed (empty when all are)."""
    need = [CLICKHOUSE_SERVER, ZOOKEEPER_JAR, JAVA]
    return [path for path in need if not Path(path).exists()]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _answers(port: int, send: bytes, expect: bytes, timeout: float = 0.5) -> bool:
    """Whether something on 127.0.0.1:PORT answers SEND with a reply starting EXPECT."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(send)
            return sock.recv(len(expect)) == expect
    except OSError:
        return False


def _zookeeper_serving(port: int) -> bool:
    """Whether ZooKeeper on PORT answers ``ruok`` *and* serves requests.

    ``ruok`` answers ``imok`` as soon as the port is open, while ZooKeeper may still drop
    sessions ("not currently serving requests"): a ClickHouse server whose first session
    was dropped so was seen to crash in its ZooKeeper client. ``srvr`` reports the
    version only once the server is serving.
    """
    return _answers(port, b"ruok", b"imok") and _answers(port, b"srvr", b"Zookeeper version")


def _http_query_ok(port: int, sql: str) -> bool:
    """Whether the ClickHouse server on PORT runs SQL successfully over HTTP."""
    query = urllib.parse.quote(sql).encode()
    return _answers(port, b"GET /?query=" + query + b" HTTP/1.0\r\n\r\n", b"HTTP/1.0 200")


def _server_ready(port: int) -> bool:
    """Whether a server answers queries and reaches ZooKeeper.

    Not whether a restarted replica has caught up: after a SIGKILL its tables rejoin
    replication only once ZooKeeper expired the old session (``ZK_SESSION_MS``, then
    18.16 retries every ~10 s), so a test waits for the rows it expects instead.
    """
    return _http_query_ok(port, "SELECT count() FROM system.zookeeper WHERE path = '/'")


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, even by SIGKILL itself.

    The ``finally`` of :func:`clickhouse_cluster` covers failures and Ctrl-C; this
    covers a test run that is killed outright, which would otherwise leave the servers
    running in their own sessions.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group PROC leads and reap PROC."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


class _Exited(RuntimeError):
    """A process died while it was being waited for."""


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll READY() until true; a clear error (with the log's tail) if PROC dies or times out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise _Exited(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {START_TIMEOUT:.0f}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


@dataclass
class Replica:
    """One ClickHouse server: its place in the cluster, its ports, its directory."""

    shard: int
    replica: int
    tcp_port: int
    http_port: int
    interserver_port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Wall-clock time (``time.time()``) of the latest start of this server's process.
    started_at: float = 0.0

    @property
    def name(self) -> str:
        """The ``{replica}`` macro: unique in the cluster, e.g. ``s1r2``."""
        return f"s{self.shard}r{self.replica}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class ClickHouseCluster:
    """The running cluster: ZooKeeper's port and its servers, shard-major."""

    root: Path
    zk_port: int
    replicas: list[Replica]
    zk_proc: subprocess.Popen[bytes] | None = None
    cold_start_seconds: float = 0.0

    @property
    def shards(self) -> int:
        """The number of shards."""
        return max(r.shard for r in self.replicas)

    def shard(self, shard: int) -> list[Replica]:
        """The replicas of SHARD (1-based)."""
        return [r for r in self.replicas if r.shard == shard]

    def replica(self, shard: int, replica: int) -> Replica:
        """Replica REPLICA (1-based) of SHARD (1-based)."""
        return next(r for r in self.replicas if r.shard == shard and r.replica == replica)

    @property
    def tcp_ports(self) -> list[int]:
        return [r.tcp_port for r in self.replicas]

    def url(self, database: str, *entries: tuple[int, int]) -> str:
        """msgcube's ``analytics_db`` for DATABASE on this cluster.

        ENTRIES are the (shard, replica) servers msgcube talks to, tried in turn (default:
        the first server); their Distributed tables reach the others. A fault test kills a
        server that is not an entry, or one of several entries.
        """
        hosts = ",".join(
            f"127.0.0.1:{self.replica(shard, replica).tcp_port}"
            for shard, replica in (entries or ((1, 1),))
        )
        return f"clickhouse://default@{hosts}/{database}?cluster={CLUSTER}"

    def kill_replica(self, shard: int, replica: int) -> None:
        """SIGKILL one server (no shutdown, like a power cut); its data directory stays."""
        rep = self.replica(shard, replica)
        if rep.proc is not None:
            _kill_group(rep.proc)

    def start_replica(self, shard: int, replica: int) -> None:
        """Start one (killed or stopped) server again on its old directory and ports."""
        rep = self.replica(shard, replica)
        if rep.alive:
            return
        self._start_server(rep)
        self._wait_server(rep)

    def restart_replica(self, shard: int, replica: int) -> None:
        """SIGKILL one server, then start it again."""
        self.kill_replica(shard, replica)
        self.start_replica(shard, replica)

    def stop_shard(self, shard: int) -> None:
        """SIGKILL every replica of SHARD: its rows are unreachable until it is started."""
        for rep in self.shard(shard):
            self.kill_replica(rep.shard, rep.replica)

    def start_shard(self, shard: int) -> None:
        """Start every replica of SHARD again."""
        for rep in self.shard(shard):
            if not rep.alive:
                self._start_server(rep)
        for rep in self.shard(shard):
            self._wait_server(rep)

    def close(self) -> None:
        """Kill every process (servers first, then ZooKeeper)."""
        for rep in self.replicas:
            if rep.proc is not None:
                _kill_group(rep.proc)
        if self.zk_proc is not None:
            _kill_group(self.zk_proc)

    # -- starting -----------------------------------------------------------------------

    def _popen(self, argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "LANG": "C.UTF-8"},
                preexec_fn=_die_with_parent,
            )

    def _start_zookeeper(self) -> None:
        zk = self.root / "zookeeper"
        (zk / "data").mkdir(parents=True, exist_ok=True)
        (zk / "zoo.cfg").write_text(
            "tickTime=500\n"
            f"dataDir={zk / 'data'}\n"
            f"clientPort={self.zk_port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr\n"
            "maxClientCnxns=0\n"
        )
        (zk / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, CONSOLE\n"
            "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.CONSOLE.layout.ConversionPattern=%d %-5p [%t] %m%n\n"
        )
        argv = [
            JAVA,
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            f"{zk}:{ZOOKEEPER_JAR}",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(zk / "zoo.cfg"),
        ]
        log = zk / "zookeeper.log"
        self.zk_proc = self._popen(argv, log, zk)
        _wait(
            f"ZooKeeper on port {self.zk_port}",
            lambda: _zookeeper_serving(self.zk_port),
            self.zk_proc,
            log,
        )

    def _write_config(self, rep: Replica) -> Path:
        shards = "".join(
            "<shard><internal_replication>true</internal_replication>"
            + "".join(
                f"<replica><host>127.0.0.1</host><port>{r.tcp_port}</port></replica>"
                for r in self.shard(s)
            )
            + "</shard>"
            for s in range(1, self.shards + 1)
        )
        root = escape(str(rep.root))
        config = f"""<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{root}/server.log</log>
    <errorlog>{root}/server.err.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{rep.tcp_port}</tcp_port>
  <http_port>{rep.http_port}</http_port>
  <interserver_http_port>{rep.interserver_port}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <max_connections>256</max_connections>
  <builtin_dictionaries_reload_interval>0</builtin_dictionaries_reload_interval>
  <merge_tree>
    <max_suspicious_broken_parts>1000</max_suspicious_broken_parts>
  </merge_tree>
  <background_pool_size>2</background_pool_size>
  <remote_servers>
    <{CLUSTER}>{shards}</{CLUSTER}>
  </remote_servers>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{self.zk_port}</port></node>
    <session_timeout_ms>{ZK_SESSION_MS}</session_timeout_ms>
  </zookeeper>
  <macros>
    <shard>{rep.shard}</shard>
    <replica>{rep.name}</replica>
    <cluster>{CLUSTER}</cluster>
  </macros>
  <distributed_ddl>
    <path>/clickhouse/task_queue/ddl</path>
  </distributed_ddl>
</yandex>
"""
        users = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>500000000</max_memory_usage>
      <use_uncompressed_cache>0</use_uncompressed_cache>
      <load_balancing>in_order</load_balancing>
      <max_threads>2</max_threads>
      <distributed_ddl_task_timeout>60</distributed_ddl_task_timeout>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (rep.root / sub).mkdir(parents=True, exist_ok=True)
        (rep.root / "users.xml").write_text(users)
        path = rep.root / "config.xml"
        path.write_text(config)
        return path

    def _start_server(self, rep: Replica) -> None:
        config = rep.root / "config.xml"
        if not config.exists():
            config = self._write_config(rep)
        else:
            # A restart after SIGKILL, so recover as an operator would after a crash: a
            # part fetched but not yet registered in ZooKeeper when the server died is
            # "unexpected", and when such parts hold most of a small table's rows 18.16
            # refuses to start. This flag (consumed at start) lets it detach them and
            # fetch again from its peers.
            flags = rep.root / "data" / "flags"
            flags.mkdir(parents=True, exist_ok=True)
            (flags / "force_restore_data").touch()
        argv = [CLICKHOUSE_SERVER, f"--config-file={config}"]
        rep.started_at = time.time()
        rep.proc = self._popen(argv, rep.root / "stdout.log", rep.root)

    def _wait_server(self, rep: Replica) -> None:
        """Wait until REP is ready (see _server_ready); start it again if it crashed.

        18.16 has a start-up race: now and then a server segfaults in its DDL worker's
        first ZooKeeper call (zkutil::ZooKeeper::createImpl, a null session) within a
        second of starting. A crash before the server has a session is retried here.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            assert rep.proc is not None
            try:
                _wait(
                    f"ClickHouse {rep.name} on port {rep.tcp_port}",
                    lambda: _server_ready(rep.http_port),
                    rep.proc,
                    rep.root / "server.err.log",
                )
                return
            except _Exited:
                if attempt == START_ATTEMPTS:
                    raise
                self._start_server(rep)


@contextlib.contextmanager
def clickhouse_cluster(
    root: Path | None = None, shards: int = SHARDS, replicas: int = REPLICAS
) -> Iterator[ClickHouseCluster]:
    """Start ZooKeeper and SHARDS × REPLICAS servers; yield the cluster; kill all on exit."""
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"ClickHouse cluster needs {', '.join(missing)}")
    own_root = root is None
    base = Path(tempfile.mkdtemp(prefix="msgcube-ch-")) if root is None else root
    ports = _free_ports(1 + 3 * shards * replicas)
    servers = [
        Replica(
            shard=s,
            replica=r,
            tcp_port=ports[1 + 3 * i],
            http_port=ports[2 + 3 * i],
            interserver_port=ports[3 + 3 * i],
            root=base / f"s{s}r{r}",
        )
        for i, (s, r) in enumerate(
            (s, r) for s in range(1, shards + 1) for r in range(1, replicas + 1)
        )
    ]
    cluster = ClickHouseCluster(root=base, zk_port=ports[0], replicas=servers)
    try:
        started = time.monotonic()
        cluster._start_zookeeper()
        for rep in servers:
            cluster._write_config(rep)
            cluster._start_server(rep)
        for rep in servers:
            cluster._wait_server(rep)
        cluster.cold_start_seconds = time.monotonic() - started
        yield cluster
    finally:
        cluster.close()
        if own_root:
            shutil.rmtree(base, ignore_errors=True)
