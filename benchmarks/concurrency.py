"""Many concurrent async callers on Redis: throughput, failures, connections.

N coroutines (default 1,000), each in its own ``ThreadSensitiveContext`` as
Django's ASGI handler runs a request, each making 10 fresh-hit reads of
4 KB values, in one event loop:

* ``redis.asyncio``: a native client on a ``BlockingConnectionPool`` of the
  same size as ours (the bar: 0.8x of its throughput);
* ``ours (native)``: ``await aget_or_set`` on ``ASYNC_POOL`` (pool 50);
* ``ours (threads)``: the same with ``ASYNC_POOL: False``, every call in
  the request's thread (what Django's own ``a*`` methods do);
* ``Django aget``: Django's ``RedisCache.aget`` (a thread per call too).

Each mode runs 5 interleaved rounds; the medians are printed, with the most
connections the server saw (``CLIENT LIST``, from a connection of its own)
above the count before the round.

Run: .venv/bin/python benchmarks/concurrency.py [N]   (starts its own redis-server)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.helpers.redis_server import RedisServer

READS = 10
POOL = 50


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    server = RedisServer()
    server.start()
    os.environ["DOGPILE_TEST_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    import redis
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    def dogpile(pool):
        return DogpileCache(
            "redis", {"TIMEOUT": 300, "KEY_PREFIX": "conc", "OPTIONS": {"GRACE": 600, "ASYNC_POOL": pool}}
        )

    native, threads, django_cache = dogpile({"MAX_CONNECTIONS": POOL}), dogpile(False), caches["redis_django"]
    value = "<li>row</li>" * 340
    for i in range(READS):
        native.set(f"k{i}", value)
        django_cache.set(f"k{i}", value)
    made = [native.binding.adapter.raw_key(native.binding.store_key(f"k{i}")) for i in range(READS)]
    counter = redis.Redis.from_url(server.url, single_connection_client=True)
    modes = {
        "redis.asyncio": lambda client: [lambda i: client.get(made[i])],
        "ours (native)": lambda client: [lambda i: native.aget_or_set(f"k{i}", "never")],
        "ours (threads)": lambda client: [lambda i: threads.aget_or_set(f"k{i}", "never")],
        "Django aget": lambda client: [lambda i: django_cache.aget(f"k{i}")],
    }
    results: dict[str, list[tuple[float, int, int]]] = {m: [] for m in modes}
    try:
        for _ in range(5):
            for mode, calls in modes.items():
                results[mode].append(asyncio.run(_round(server.url, counter, calls, n)))
    finally:
        counter.close()
        server.cleanup()
    med = statistics.median
    bar = med(r[0] for r in results["redis.asyncio"])
    print(f"{n} concurrent callers x {READS} reads, pool {POOL}, 5 rounds (medians)")
    print(f"{'mode':15} {'reads/s':>9} {'vs native':>9} {'failures':>8} {'connections':>11}")
    for mode, rounds in results.items():
        rate = med(r[0] for r in rounds)
        print(
            f"{mode:15} {rate:9.0f} {rate / bar:9.2f} {max(r[1] for r in rounds):8d} "
            f"{max(r[2] for r in rounds):11d}"
        )


async def _round(url, counter, calls, n: int) -> tuple[float, int, int]:
    """(reads per second, failed callers, most connections above the base)."""
    import redis.asyncio
    from asgiref.sync import ThreadSensitiveContext

    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=10)
    client = redis.asyncio.Redis(connection_pool=pool)
    [read] = calls(client)
    base = len(counter.client_list())
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(len(counter.client_list()))
            time.sleep(0.005)

    async def caller() -> None:
        async with ThreadSensitiveContext():
            for i in range(READS):
                await read(i)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    try:
        done = await asyncio.gather(*(caller() for _ in range(n)), return_exceptions=True)
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        watcher.join()
        await client.aclose()
        await pool.aclose()
    failures = sum(isinstance(d, BaseException) for d in done)
    return (n - failures) * READS / elapsed, failures, max(peak) - base


if __name__ == "__main__":
    main()
