"""Start real servers (redis-server, memcached) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, probe: bytes, answer: bytes, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(probe)
                if s.recv(64).startswith(answer):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start on port {port}")


class RedisServer:
    """One redis-server process; ``start()``/``stop()``/``restart()``.

    ``args`` are extra command-line options (``--replicaof``, ...).
    """

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="dogpile-redis-")
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--loglevel", "warning", *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self.port, b"PING\r\n", b"+PONG", "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MemcachedServer:
    """One memcached process (64 MB, the default 1 MB item size limit)."""

    def __init__(self) -> None:
        self.binary = shutil.which("memcached")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def location(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.binary is None:
            raise RuntimeError("memcached is not installed")
        self.proc = subprocess.Popen(
            [
                self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
                *(["-u", "root"] if os.geteuid() == 0 else []),  # memcached refuses root otherwise
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self.port, b"version\r\n", b"VERSION", "memcached")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    cleanup = stop


def required() -> bool:
    """True when Redis tests must run (CI, or DOGPILE_REQUIRE_REDIS=1)."""
    return bool(os.environ.get("CI")) or os.environ.get("DOGPILE_REQUIRE_REDIS") == "1"
