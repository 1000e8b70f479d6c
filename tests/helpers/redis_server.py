"""Start real servers (redis-server, redis-sentinel, memcached) on free loopback ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, probe: bytes, answer: bytes, what: str, proc: Any = None) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start on port {port} (port taken?)")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(probe)
                if s.recv(64).startswith(answer):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start on port {port}")


class _Server:
    """A server process of the suite: started, probed until it answers, stopped."""

    proc: subprocess.Popen[bytes] | None = None
    dir: str | None = None

    def _launch(
        self, argv: list[str], port: int, what: str, probe: bytes = b"PING\r\n", answer: bytes = b"+PONG"
    ) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(port, probe, answer, what, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(_Server):
    """One redis-server process; ``start()``/``stop()``/``restart()``.

    ``args`` are extra command-line options (``--replicaof``, ...).
    """

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="dogpile-redis-")
        self.args = args

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self._launch(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *self.args,
            ],
            self.port,
            "redis-server",
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash (no shutdown, no goodbye)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class MemcachedServer(_Server):
    """One memcached process (64 MB, the default 1 MB item size limit)."""

    def __init__(self) -> None:
        self.binary = shutil.which("memcached")
        self.port = free_port()

    @property
    def location(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.binary is None:
            raise RuntimeError("memcached is not installed")
        self._launch(
            [
                self.binary,
                "-l",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "0",
                "-m",
                "64",
                *(["-u", "root"] if os.geteuid() == 0 else []),  # memcached refuses root otherwise
            ],
            self.port,
            "memcached",
            b"version\r\n",
            b"VERSION",
        )


def sentinel_command() -> list[str] | None:
    """How to run a Redis Sentinel here: Debian's ``redis-sentinel``, or the
    same code as ``redis-server --sentinel``; None when neither is installed."""
    if sentinel := shutil.which("redis-sentinel"):
        return [sentinel]
    if server := shutil.which("redis-server"):
        return [server, "--sentinel"]
    return None


class SentinelServer(_Server):
    """One Redis Sentinel watching the primary on ``primary_port`` as ``name``.

    Quorum 1 (it is the only sentinel) and a short ``down-after-milliseconds``,
    so a killed primary is failed over within a few seconds.  Sentinel
    rewrites its configuration file, so it lives in a temporary directory
    (with the sentinel's log, kept for a failing test to read).
    """

    def __init__(
        self,
        primary_port: int,
        name: str = "mymaster",
        down_after_ms: int = 500,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.command = sentinel_command()
        self.port = free_port()
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="dogpile-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        self.log = os.path.join(self.dir, "sentinel.log")
        with open(self.config, "w") as f:
            f.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                "daemonize no\n"
                f"dir {self.dir}\n"
                f"logfile {self.log}\n"
                # `monitor` first: the other lines name the master it declares
                f"sentinel monitor {name} 127.0.0.1 {primary_port} 1\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )

    def start(self) -> None:
        if self.command is None:
            raise RuntimeError("neither redis-sentinel nor redis-server is installed")
        # the configuration file comes first, before --sentinel
        self._launch([self.command[0], self.config, *self.command[1:]], self.port, "redis-sentinel")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the sentinel's log (for a failure message)."""
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no sentinel log)"


def required() -> bool:
    """True when Redis tests must run (CI, or DOGPILE_REQUIRE_REDIS=1)."""
    return bool(os.environ.get("CI")) or os.environ.get("DOGPILE_REQUIRE_REDIS") == "1"


class RedisClusterServers:
    """Six redis-servers in cluster mode (3 primaries, 3 replicas) on free
    loopback ports, joined with ``redis-cli --cluster create``.

    ``nodes`` are the :class:`RedisServer` of each port; ``primaries()`` asks
    the cluster which ports hold slots now (a failover changes that).
    """

    def __init__(self, size: int = 6) -> None:
        self.nodes = [
            RedisServer(
                port=_cluster_port(),
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-allow-reads-when-down",
                    "no",
                ),
            )
            for _ in range(size)
        ]

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def location(self) -> str:
        return f"valkey://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        for node in self.nodes:
            for attempt in range(5):
                try:
                    node.start()
                    break
                except RuntimeError:  # its port (or its bus port) was taken meanwhile
                    node.stop()
                    if attempt == 4:
                        raise
                    node.port = _cluster_port()
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-800:]}{created.stderr}")
        self.wait_ok()

    def command(self, port: int, *args: str, timeout: float = 10) -> str:
        cli = shutil.which("redis-cli") or "redis-cli"
        return subprocess.run(
            [cli, "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says cluster_state:ok and all 16384 slots are
        served by primaries that agree, and every primary has a replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n.port for n in self.nodes if n.proc is not None]
            if all("cluster_state:ok" in self.command(p, "cluster", "info") for p in live):
                views = {self._slot_owners(p) for p in live}
                if len(views) == 1 and len(self.primaries()) >= 3 and self._replicas_synced(live):
                    return
            time.sleep(0.1)
        live = [n.port for n in self.nodes if n.proc is not None]
        raise RuntimeError(
            "the cluster did not become ok: "
            + "; ".join(
                f"{p}: {self.command(p, 'cluster', 'info').splitlines()[:1]} {sorted(self._slot_owners(p))}"
                for p in live
            )
        )

    def wait_failover(self, port: int, timeout: float = 30) -> None:
        """Until the killed primary ``port`` is a primary no more (its replica
        took its slots) and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while port in self.primaries():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover of {port}")
            time.sleep(0.05)
        self.wait_ok(timeout)

    def _replicas_synced(self, live: list[int]) -> bool:
        """Every live replica has done its first sync (else it cannot take over)."""
        for port in live:
            info = self.command(port, "info", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                primary = re.search(r"master_port:(\d+)", info)
                if primary and int(primary.group(1)) in live:
                    return False  # (a replica of a dead primary waits forever)
        return True

    def _slot_owners(self, port: int) -> frozenset[tuple[str, str]]:
        """Node ``port``'s view: which live primary serves which slots."""
        owners = set()
        for line in self.command(port, "cluster", "nodes").splitlines():
            parts = line.split()
            if len(parts) >= 9 and "master" in parts[2] and "fail" not in parts[2]:
                owners.add((parts[1].split("@")[0], " ".join(parts[8:])))
        return frozenset(owners)

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries holding slots (from a live node)."""
        for node in self.nodes:
            if node.proc is None:
                continue
            found = []
            for line in self.command(node.port, "cluster", "nodes").splitlines():
                parts = line.split()
                if len(parts) >= 9 and "master" in parts[2] and "fail" not in parts[2]:
                    found.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
            return sorted(found)
        return []

    def commandstats(self) -> dict[str, int]:
        """``INFO commandstats`` calls, summed over every live node."""
        total: dict[str, int] = {}
        for node in self.nodes:
            if node.proc is None:
                continue
            for line in self.command(node.port, "info", "commandstats").splitlines():
                if line.startswith("cmdstat_"):
                    name, _, rest = line.partition(":")
                    calls = int(rest.split(",")[0].split("=")[1])
                    total[name[len("cmdstat_") :]] = total.get(name[len("cmdstat_") :], 0) + calls
        return total

    def reset_stats(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                self.command(node.port, "config", "resetstat")

    def flush(self) -> None:
        for port in self.primaries():
            self.command(port, "flushall")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid."""
    import random

    for _ in range(200):
        port = random.randint(20000, 40000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")
