"""Page hits under gunicorn on Redis: Django's ``cache_page`` against ours,
under WSGI or ASGI, beside a "floor" view that caches nothing.

Run:  .venv/bin/python benchmarks/pages.py            (~2 min, needs wrk)
      .venv/bin/python benchmarks/pages.py --near     (+ the NEAR_CACHE column)
      .venv/bin/python benchmarks/pages.py --asgi --near   (ASGI: uvicorn workers)

What one run does:

1. starts ``redis-server`` on a free loopback port and the demo project
   (``testproject``) under gunicorn, ``--workers`` workers, on django-redis.
   WSGI (the default): sync workers; ``/floor/`` answers a page of the
   same size with no cache and no work (what the rest of Django costs per
   request), ``/report/plain/`` is Django's ``cache_page``, ``/report/``
   is ``dogpile_cache_page``, the same view (a 0.5 s sleep).  ``--asgi``:
   ``uvicorn_worker.UvicornWorker`` workers (``benchmarks/asgi_served.py``)
   and async views -- ``/floor/async/``, ``/report/async/``
   (``dogpile_cache_page``: its hits read on the event loop,
   ``ASYNC_POOL``), ``/report/async/plain/`` (Django's ``cache_page`` on
   the async view, Django 5.0+) -- beside Django's ``cache_page`` on the
   sync view (which Django's ASGI handler runs in a thread).
   With ``--near``, a second gunicorn serves our face with the demo's
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
   (counted in each worker: gunicorn hooks, ``benchmarks/gunicorn_served.py``,
   or the ASGI wrapper; exact, where wrk leaves out the requests in flight
   when it stops);
4. fails if any response was not a 2xx or the view ran during a round
   (a miss), and prints, per face, the median over the rounds of
   requests/s, p50 and p99 latency (wrk's), Redis commands per request by
   command, CPU time per request of the gunicorn workers and of
   redis-server (``/proc``; on a shared machine it moves far less than
   requests/s), and requests/s against ``cache_page``'s and the floor's in
   the same round (the medians of the rounds' ratios), as a markdown table
   with the machine it ran on.

gunicorn's sync workers close the connection after each response (no
keep-alive), so every WSGI request is also a TCP connect; uvicorn keeps
connections alive.  ``tests/system/test_page_benchmark.py`` runs a short
version of each mode (2 workers, one round of 2 s) and asserts the Redis
reads per hit exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import django  # noqa: E402
import redis  # noqa: E402

from benchmarks import soak  # noqa: E402
from benchmarks.page_servers import (  # noqa: E402
    BenchmarkError,
    PageServer,
    cancelled,
    commandstats,
    cpu_seconds,
    machine,
    near_unavailable,
    quiet_served,
    wrk,
)
from tests.helpers.redis_server import RedisServer  # noqa: E402

__all__ = ["ASGI_FACES", "FACES", "BenchmarkError", "Config", "Face", "faces_of", "markdown", "run"]

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


_FLOOR = "floor: no cache, no work"
FACES = [
    Face("floor", _FLOOR, "/floor/", dogpile=False, near=False),
    Face("cache_page", "Django `cache_page`", "/report/plain/", dogpile=False, near=False),
    Face("dogpile", "`dogpile_cache_page`", "/report/", dogpile=True, near=False),
    Face("near", "`dogpile_cache_page` + `NEAR_CACHE`", "/report/", dogpile=True, near=True),
]
#: under ASGI: async views, and Django's cache_page on both kinds of view
ASGI_FACES = [
    Face("floor", _FLOOR + " (async view)", "/floor/async/", dogpile=False, near=False),
    Face("cache_page", "Django `cache_page` (sync view)", "/report/plain/", dogpile=False, near=False),
    Face(
        "cache_page_async",
        "Django `cache_page` (async view)",
        "/report/async/plain/",
        dogpile=False,
        near=False,
    ),
    Face("dogpile", "`dogpile_cache_page` (async view)", "/report/async/", dogpile=True, near=False),
    Face(
        "near",
        "`dogpile_cache_page` + `NEAR_CACHE` (async view)",
        "/report/async/",
        dogpile=True,
        near=True,
    ),
]
#: the demo's name for each face's slow work (its runs log); the floor has none
VIEW_RUNS = {
    "/report/plain/": "page (Django cache_page)",
    "/report/": "page (dogpile_cache_page)",
    "/report/async/": "page (dogpile_cache_page, async)",
    "/report/async/plain/": "page (Django cache_page, async)",
}


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
    asgi: bool = False  # uvicorn workers and async views (ASGI_FACES)


def faces_of(config: Config) -> list[Face]:
    """The faces one run measures."""
    faces = ASGI_FACES if config.asgi else FACES
    if config.asgi and django.VERSION < (5, 0):  # cache_page wraps no async view
        faces = [f for f in faces if f.name != "cache_page_async"]
    return [f for f in faces if config.near or not f.near]


def view_runs(server: soak.Server, face: Face) -> int:
    """How many times the view behind ``face`` has started (a miss)."""
    what = VIEW_RUNS.get(face.path)
    return sum(1 for _, _, event, f in server.events() if event == "start" and f == what)


# --- the run -----------------------------------------------------------------


def warm_and_check(server: PageServer, face: Face, config: Config) -> None:
    """Make ``face`` a hot hit in every worker, and check that it is."""
    status, _ = soak.get(server.port, face.path)  # the one miss: the view runs
    if status != 200:
        raise BenchmarkError(f"{face.name}: {face.path} answered {status}")
    wrk(server.port, face.path, config.warmup, config.threads, config.connections)
    runs = view_runs(server, face)
    before = quiet_served(server.served_dir)
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
    cancelled0 = cancelled(server.served_dir)
    calls0 = commandstats(client)
    cpu0 = cpu_seconds(workers), cpu_seconds([redis_pid])
    summary = wrk(server.port, face.path, config.seconds, config.threads, config.connections)
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
        "cancelled": cancelled(server.served_dir) - cancelled0,
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


def run(config: Config, log: Any = None) -> dict[str, Any]:
    """The whole benchmark; returns every round of every face, and the context."""

    def say(msg: str) -> None:
        if log is not None:
            print(msg, file=log, flush=True)

    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    faces = faces_of(config)
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
        result["machine"] = machine(client, config.asgi)

        def server(name: str, near: bool) -> PageServer:
            return PageServer(
                config.workers,
                config.slow,
                store.url,
                os.path.join(workdir, name),
                near=near,
                timeout=timeout,
                asgi=config.asgi,
            )

        servers[False] = server("plain", near=False)
        if config.near:
            near = server("near", near=True)
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
    """Per face: the medians over the rounds, and the ratios to cache_page's
    and to the floor's requests/s."""
    med = statistics.median
    rounds = result["rounds"]
    base, floor = rounds["cache_page"], rounds["floor"]
    out = []
    for face in ASGI_FACES if result["config"].asgi else FACES:
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
                "vs_floor": med(r["rps"] / b["rps"] for r, b in zip(rows, floor)),
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
        "| worker CPU / request | Redis CPU / request | requests/s vs `cache_page` | vs the floor |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in summarise(result):
        lines.append(
            f"| {s['face'].label} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
            f"| {s['redis']:.3g} | {_commands(s['by_command'])} "
            f"| {s['worker_cpu_us']:.0f} µs | {s['redis_cpu_us']:.0f} µs | {s['ratio']:.2f}x "
            f"| {s['vs_floor']:.2f}x |"
        )
    if result["near_unavailable"]:
        near = next(f for f in faces_of(Config(asgi=c.asgi, near=True)) if f.near)
        lines.append(f"| {near.label} | unavailable: {result['near_unavailable']} | | | | | | | | |")
    sizes = result.get("sizes", {})
    if c.asgi:
        served_by = (
            f"gunicorn {c.workers} `uvicorn_worker.UvicornWorker` workers (ASGI, uvicorn "
            f"{m['uvicorn']}, uvloop {m['uvloop']}, httptools {m['httptools']}; keep-alive) "
            "on Redis (django-redis; `ASYNC_POOL` on, as by default)"
        )
    else:
        served_by = (
            f"gunicorn {c.workers} sync workers (WSGI; a TCP connect per request) on Redis (django-redis)"
        )
    lines += [
        "",
        f"{served_by}, wrk {c.threads} thread(s) "
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
    parser.add_argument(
        "--asgi", action="store_true", help="uvicorn workers and async views (ASGI) instead of WSGI"
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
        asgi=opts.asgi,
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
