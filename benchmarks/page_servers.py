"""The servers of benchmarks/pages.py, and what it reads off them.

The demo project under gunicorn on a shared Redis: sync workers (WSGI,
``testproject.wsgi``; requests counted by ``benchmarks/gunicorn_served.py``)
or ``uvicorn_worker.UvicornWorker`` workers (ASGI, ``benchmarks.asgi_served``,
which counts them itself); wrk's load; the requests the workers served,
their CPU time and Redis's ``INFO commandstats``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import struct
import subprocess
import sys
import time
from typing import Any

import redis

from benchmarks import soak

ROOT = soak.ROOT
HERE = os.path.join(ROOT, "benchmarks")
WRK_SCRIPT = os.path.join(HERE, "wrk_summary.lua")
GUNICORN_CONFIG = os.path.join(HERE, "gunicorn_served.py")
#: gunicorn's worker class and application in each mode
ASGI_WORKER = ("uvicorn_worker.UvicornWorker", "benchmarks.asgi_served:application")
WSGI_WORKER = ("sync", "testproject.wsgi:application")


class BenchmarkError(RuntimeError):
    """The run measured something other than hot hits, or a server failed."""


# --- what the servers did ---------------------------------------------------


def served(directory: str) -> tuple[int, int]:
    """Requests served and not-2xx responses, summed over the workers."""
    total = bad = 0
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read(16)
        if len(data) == 16:
            n, b = struct.unpack("<QQ", data)
            total, bad = total + n, bad + b
    return total, bad


def cancelled(directory: str) -> int:
    """Of the requests :func:`served` counts, those the ASGI workers
    cancelled before any answer (wrk stopping with requests in flight);
    0 under WSGI (a sync worker finishes every request it took)."""
    total = 0
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read(24)
        if len(data) == 24:
            total += struct.unpack("<QQQ", data)[2]
    return total


def quiet_served(directory: str) -> tuple[int, int]:
    """:func:`served` once it has not changed for 100 ms (the requests wrk
    left in flight are finished)."""
    last = served(directory)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = served(directory)
        if now == last:
            return now
        last = now
    raise BenchmarkError(f"the workers are still serving 10 s after wrk stopped ({directory})")


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used, from ``/proc``."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``)."""
    info = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(row["calls"]) for name, row in info.items()}


def wrk(port: int, path: str, seconds: float, threads: int, connections: int) -> dict[str, Any]:
    """One wrk run on ``path``; its summary (``benchmarks/wrk_summary.lua``)."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            WRK_SCRIPT,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"^WRK_SUMMARY (\{.*\})$", out, re.M)
    if match is None:
        raise BenchmarkError(f"no summary from wrk:\n{out}")
    return json.loads(match.group(1))


# --- the servers -------------------------------------------------------------


class PageServer(soak.Server):
    """The demo under gunicorn (benchmarks/soak's), counting what it served."""

    def __init__(
        self,
        workers: int,
        slow: float,
        redis_url: str,
        workdir: str,
        *,
        near: bool,
        timeout: int,
        asgi: bool = False,
    ) -> None:
        os.makedirs(workdir)
        worker_class, app = ASGI_WORKER if asgi else WSGI_WORKER
        soak_config = soak.Config(workers=workers, worker_class=worker_class, timeout=timeout, creator=slow)
        hooks = () if asgi else ("-c", GUNICORN_CONFIG)
        super().__init__(soak_config, redis_url, workdir, gunicorn_args=hooks, app=app)
        self.served_dir = os.path.join(workdir, "served")
        os.makedirs(self.served_dir)
        self.env.update(
            {
                "PAGES_SERVED_DIR": self.served_dir,
                "DEMO_STATS_INTERVAL": "0",
                "DEMO_NEAR_CACHE": "1" if near else "0",
            }
        )

    def worker_pids(self) -> list[int]:
        """The workers (each names its counting file after its pid)."""
        return [int(name) for name in os.listdir(self.served_dir)]

    def check(self) -> str | None:
        """``manage.py check`` on this server's settings: None, or its errors."""
        done = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return None if done.returncode == 0 else (done.stderr + done.stdout).strip()


def near_unavailable(server: PageServer) -> str | None:
    """Why the NEAR_CACHE column cannot run (the package rejects the option)."""
    errors = server.check()
    if errors is None:
        return None
    if "NEAR_CACHE" not in errors:
        raise BenchmarkError(f"manage.py check fails with NEAR_CACHE on:\n{errors}")
    lines = [line.strip() for line in errors.splitlines() if "NEAR_CACHE" in line]
    return lines[0]


def machine(client: redis.Redis, asgi: bool) -> dict[str, str]:
    """What the run ran on, for the table's footnote."""
    import django
    import django_redis
    import gunicorn

    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    found = {
        "cpus": f"{os.cpu_count()} x {model}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": django.__version__,
        "django-redis": django_redis.__version__,
        "redis-py": redis.__version__,
        "redis-server": client.info("server")["redis_version"],
        "gunicorn": gunicorn.__version__,
        "wrk": wrk_version.split(" [")[0].replace("wrk ", "").strip() or "?",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if asgi:
        from importlib.metadata import version

        for name in ("uvicorn", "uvicorn-worker", "uvloop", "httptools"):
            try:
                found[name] = version(name)
            except Exception:
                found[name] = "not installed"
    return found
