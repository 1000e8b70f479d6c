"""Page hits under gunicorn on Redis: Django's ``cache_page`` against ours.

Run:  .venv/bin/python benchmarks/pages.py            (~2 min, needs wrk)
      .venv/bin/python benchmarks/pages.py --near     (+ the NEAR_CACHE column)

What one run does:

1. starts ``redis-server`` on a free loopback port and the demo project
   (``testproject``) under gunicorn, ``--workers`` sync workers, on
   django-redis: ``/report/plain/`` is Django's ``cache_page``,
   ``/report/`` is ``dogpile_cache_page``, the same view (a 0.5 s sleep).
   With ``--near``, a second gunicorn serves ``/report/`` with the demo's
   DogpileCache given ``OPTIONS["NEAR_CACHE"]`` (``DEMO_NEAR_CACHE=1``);
   when the package does not know that option (``manage.py check`` fails
   on it) the column is reported unavailable and the others still run.
   The counters' publishing thread is off (``DEMO_STATS_INTERVAL=0``), so
   every Redis command in a round is a page request's;
2. makes every request a hot hit: the cached pages stay fresh for longer
   than the whole run (``DEMO_TIMEOUT``), each face is loaded for
   ``--warmup`` s, then checked: 200s, ``X-Dogpile-Cache: HIT`` on our
   faces, and no run of the view (the demo logs each one);
3. runs ``--rounds`` interleaved rounds of ``wrk`` for ``--seconds`` per
   face, the faces' order reversed every other round, and per round reads
   Redis's ``INFO commandstats`` and the requests the workers served
   (counted by gunicorn hooks, ``benchmarks/gunicorn_served.py``: exact,
   where wrk leaves out the requests in flight when it stops);
4. fails if any response was not a 2xx or the view ran during a round
   (a miss), and prints, per face, the median over the rounds of
   requests/s, p50 and p99 latency (wrk's), Redis commands per request by
   command, CPU time per request of the gunicorn workers and of
   redis-server (``/proc``; on a shared machine it moves far less than
   requests/s), and requests/s against ``cache_page``'s in the same round
   (the median of the rounds' ratios), as a markdown table with the
   machine it ran on.

gunicorn's sync workers close the connection after each response (no
keep-alive), so every request is also a TCP connect.
``tests/system/test_page_benchmark.py`` runs a short version (2 workers, one
round of 2 s) and asserts the Redis reads per hit exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import redis  # noqa: E402

from benchmarks import soak  # noqa: E402
from tests.helpers.redis_server import RedisServer  # noqa: E402

HERE = os.path.join(ROOT, "benchmarks")
WRK_SCRIPT = os.path.join(HERE, "wrk_summary.lua")
GUNICORN_CONFIG = os.path.join(HERE, "gunicorn_served.py")
STATUS_HEADER = "X-Dogpile-Cache"
#: commands our own probes send (not a page request's)
OURS = {"info", "strlen", "scan"}


@dataclass(frozen=True)
class Face:
    name: str
    label: str  # in the table
    path: str
    dogpile: bool  # sends X-Dogpile-Cache
    near: bool  # served by the gunicorn with NEAR_CACHE


FACES = [
    Face("cache_page", "Django `cache_page`", "/report/plain/", dogpile=False, near=False),
    Face("dogpile", "`dogpile_cache_page`", "/report/", dogpile=True, near=False),
    Face("near", "`dogpile_cache_page` + `NEAR_CACHE`", "/report/", dogpile=True, near=True),
]
#: the demo's name for each face's slow work (its runs log)
VIEW_RUNS = {"/report/plain/": "page (Django cache_page)", "/report/": "page (dogpile_cache_page)"}


@dataclass
class Config:
    workers: int = 4
    rounds: int = 5
    seconds: float = 5.0
    warmup: float = 3.0
    connections: int = 8
    threads: int = 1
    near: bool = False
    slow: float = 0.5  # the view's time: a miss would show in p99 and the runs log
    checks: int = 20  # requests per face checked before the rounds


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


def view_runs(server: soak.Server, face: Face) -> int:
    """How many times the view behind ``face`` has started (a miss)."""
    what = VIEW_RUNS[face.path]
    return sum(1 for _, _, event, f in server.events() if event == "start" and f == what)


def wrk(port: int, face: Face, seconds: float, config: Config) -> dict[str, Any]:
    """One wrk run; its summary (``benchmarks/wrk_summary.lua``)."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(config.threads),
            "-c",
            str(config.connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            WRK_SCRIPT,
            f"http://127.0.0.1:{port}{face.path}",
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

    def __init__(self, config: Config, redis_url: str, workdir: str, *, near: bool, timeout: int) -> None:
        os.makedirs(workdir)
        soak_config = soak.Config(
            workers=config.workers, worker_class="sync", timeout=timeout, creator=config.slow
        )
        super().__init__(soak_config, redis_url, workdir, gunicorn_args=("-c", GUNICORN_CONFIG))
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


# --- the run -----------------------------------------------------------------


def warm_and_check(server: PageServer, face: Face, config: Config) -> None:
    """Make ``face`` a hot hit in every worker, and check that it is."""
    status, _ = soak.get(server.port, face.path)  # the one miss: the view runs
    if status != 200:
        raise BenchmarkError(f"{face.name}: {face.path} answered {status}")
    wrk(server.port, face, config.warmup, config)
    runs = view_runs(server, face)
    before = served(server.served_dir)
    for _ in range(config.checks):
        status, header = soak.get(server.port, face.path)
        if status != 200:
            raise BenchmarkError(f"{face.name}: {face.path} answered {status} after the warm-up")
        if face.dogpile and header != "HIT":
            raise BenchmarkError(f"{face.name}: {STATUS_HEADER} is {header!r}, not HIT")
    after = quiet_served(server.served_dir)
    if after[1] != before[1]:
        raise BenchmarkError(f"{face.name}: {after[1] - before[1]} responses were not 2xx")
    if view_runs(server, face) != runs:
        raise BenchmarkError(f"{face.name}: the view ran after the warm-up (not a hit)")


def one_round(
    server: PageServer, face: Face, config: Config, client: redis.Redis, redis_pid: int
) -> dict[str, Any]:
    runs = view_runs(server, face)
    workers = server.worker_pids()
    served0, bad0 = quiet_served(server.served_dir)
    calls0 = commandstats(client)
    cpu0 = cpu_seconds(workers), cpu_seconds([redis_pid])
    summary = wrk(server.port, face, config.seconds, config)
    served1, bad1 = quiet_served(server.served_dir)
    cpu1 = cpu_seconds(workers), cpu_seconds([redis_pid])
    calls1 = commandstats(client)
    n = served1 - served0
    if sorted(server.worker_pids()) != sorted(workers):
        raise BenchmarkError(f"{face.name}: a worker was replaced during the round")
    commands = {
        name: calls - calls0.get(name, 0)
        for name, calls in calls1.items()
        if name not in OURS and calls != calls0.get(name, 0)
    }
    row = {
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000,
        "wrk_requests": summary["requests"],
        "served": n,
        "not_2xx": bad1 - bad0,
        "wrk_status_errors": summary["status"],
        "socket_errors": sum(summary[k] for k in ("connect", "read", "write", "timeout")),
        "view_runs": view_runs(server, face) - runs,
        "commands": commands,
        # CPU time per request served: robust to the machine's other load,
        # which moves requests/s (10 ms ticks, summed over the round)
        "worker_cpu_us": (cpu1[0] - cpu0[0]) / n * 1e6 if n else float("nan"),
        "redis_cpu_us": (cpu1[1] - cpu0[1]) / n * 1e6 if n else float("nan"),
    }
    if row["not_2xx"] or row["wrk_status_errors"]:
        raise BenchmarkError(f"{face.name}: responses that were not 2xx: {row}")
    if row["view_runs"]:
        raise BenchmarkError(f"{face.name}: the view ran {row['view_runs']} times in a round: {row}")
    return row


def stored_sizes(client: redis.Redis) -> dict[str, int]:
    """Bytes of each cached page as Redis holds it (the pickled response)."""
    sizes = {}
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if "cache_page" in name:
            sizes["cache_page"] = client.strlen(key)
        elif "dogpile.page" in name and not name.endswith((".vary", ".lock")):
            sizes["dogpile"] = client.strlen(key)
    return sizes


def machine(client: redis.Redis) -> dict[str, str]:
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
    return {
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


def run(config: Config, log: Any = None) -> dict[str, Any]:
    """The whole benchmark; returns every round of every face, and the context."""

    def say(msg: str) -> None:
        if log is not None:
            print(msg, file=log, flush=True)

    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    faces = [f for f in FACES if config.near or not f.near]
    # every page stays fresh for longer than the whole run: hits only
    estimate = len(faces) * (config.warmup + 10 + config.rounds * (config.seconds + 2)) + 60
    timeout = max(3600, int(2 * estimate))
    workdir = tempfile.mkdtemp(prefix="dogpile-pages-")
    store = RedisServer()
    servers: dict[bool, PageServer] = {}
    result: dict[str, Any] = {"config": config, "near_unavailable": None}
    try:
        store.start()
        client = redis.Redis.from_url(store.url)
        result["machine"] = machine(client)
        servers[False] = PageServer(
            config, store.url, os.path.join(workdir, "plain"), near=False, timeout=timeout
        )
        if config.near:
            near = PageServer(config, store.url, os.path.join(workdir, "near"), near=True, timeout=timeout)
            why = near_unavailable(near)
            if why is None:
                servers[True] = near
            else:
                result["near_unavailable"] = why
                faces = [f for f in faces if not f.near]
                say(f"NEAR_CACHE column unavailable: {why}")
        for server in servers.values():
            server.start()
        for face in faces:
            say(f"warming {face.name} ({face.path}, {config.warmup:g} s)...")
            warm_and_check(servers[face.near], face, config)
        rounds: dict[str, list[dict[str, Any]]] = {f.name: [] for f in faces}
        started = time.monotonic()
        for i in range(config.rounds):
            order = faces if i % 2 == 0 else faces[::-1]
            for face in order:
                assert store.proc is not None
                row = one_round(servers[face.near], face, config, client, store.proc.pid)
                rounds[face.name].append(row)
                say(
                    f"round {i + 1}/{config.rounds} {face.name:10} {row['rps']:8.0f} req/s  "
                    f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                    f"served {row['served']}  CPU/request: workers "
                    f"{row['worker_cpu_us']:.0f} µs, redis {row['redis_cpu_us']:.0f} µs  "
                    f"redis {row['commands']}"
                )
        if time.monotonic() - started > timeout:
            raise BenchmarkError("the rounds outlasted the pages' freshness")
        result["rounds"] = rounds
        result["sizes"] = stored_sizes(client)
        result["machine"]["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return result
    finally:
        for server in servers.values():
            server.stop()
        store.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


# --- the report --------------------------------------------------------------


def per_request(row: dict[str, Any], command: str | None = None) -> float:
    calls = row["commands"]
    n = sum(calls.values()) if command is None else calls.get(command, 0)
    return n / row["served"] if row["served"] else float("nan")


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per face: the medians over the rounds, and the ratio to cache_page's."""
    med = statistics.median
    rounds = result["rounds"]
    base = rounds["cache_page"]
    out = []
    for face in FACES:
        rows = rounds.get(face.name)
        if not rows:
            continue
        commands = sorted({c for row in rows for c in row["commands"]})
        out.append(
            {
                "face": face,
                "rps": med(r["rps"] for r in rows),
                "p50_ms": med(r["p50_ms"] for r in rows),
                "p99_ms": med(r["p99_ms"] for r in rows),
                "redis": med(per_request(r) for r in rows),
                "by_command": {c: med(per_request(r, c) for r in rows) for c in commands},
                "worker_cpu_us": med(r["worker_cpu_us"] for r in rows),
                "redis_cpu_us": med(r["redis_cpu_us"] for r in rows),
                "ratio": med(r["rps"] / b["rps"] for r, b in zip(rows, base)),
                "served": sum(r["served"] for r in rows),
                "socket_errors": sum(r["socket_errors"] for r in rows),
            }
        )
    return out


def _commands(by_command: dict[str, float]) -> str:
    if not by_command:
        return "none"
    return ", ".join(f"{c.upper()} {v:.3g}" for c, v in sorted(by_command.items()))


def markdown(result: dict[str, Any]) -> str:
    c: Config = result["config"]
    m = result["machine"]
    lines = [
        "| face | requests/s | p50 ms | p99 ms | Redis commands / request | by command "
        "| worker CPU / request | Redis CPU / request | requests/s vs `cache_page` |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for s in summarise(result):
        lines.append(
            f"| {s['face'].label} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
            f"| {s['redis']:.3g} | {_commands(s['by_command'])} "
            f"| {s['worker_cpu_us']:.0f} µs | {s['redis_cpu_us']:.0f} µs | {s['ratio']:.2f}x |"
        )
    if result["near_unavailable"]:
        lines.append(f"| {FACES[2].label} | unavailable: {result['near_unavailable']} | | | | | | | |")
    sizes = result.get("sizes", {})
    lines += [
        "",
        f"gunicorn {c.workers} sync workers on Redis (django-redis), wrk {c.threads} thread(s) "
        f"x {c.connections} connections, {c.rounds} interleaved rounds x {c.seconds:g} s per "
        "face after a warm-up, hot hits only (no view run in any round, 0 non-2xx); "
        "medians over the rounds; the ratio is the median of the rounds' ratios. "
        "Redis commands are `INFO commandstats` deltas divided by the requests the "
        "workers served; CPU is the gunicorn workers' and redis-server's user + system "
        "time (`/proc`) divided by the same. Stored page: "
        + ", ".join(f"{k} {v} B" for k, v in sorted(sizes.items()))
        + ".",
        "",
        f"Machine: {m['cpus']}, {m['os']}; Python {m['python']}, Django {m['django']}, "
        f"django-redis {m['django-redis']}, redis-py {m['redis-py']}, "
        f"Redis {m['redis-server']}, gunicorn {m['gunicorn']}, wrk {m['wrk']}; "
        f"load average {m['load average before']} before, {m['load average after']} after.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--near", action="store_true", help="add dogpile_cache_page with OPTIONS['NEAR_CACHE']"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="per face per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per face")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="wrk's")
    parser.add_argument("--json", help="also write every round to this file")
    opts = parser.parse_args()
    config = Config(
        workers=opts.workers,
        rounds=opts.rounds,
        seconds=opts.seconds,
        warmup=opts.warmup,
        connections=opts.connections,
        threads=opts.threads,
        near=opts.near,
    )
    result = run(config, log=sys.stderr)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({**result, "config": vars(config)}, f, indent=1)
    if result["near_unavailable"]:
        print(f"NEAR_CACHE column unavailable: {result['near_unavailable']}")
    print(markdown(result))


if __name__ == "__main__":
    main()
