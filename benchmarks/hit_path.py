"""Fresh-hit cost: DogpileCache.get_or_set against a raw get on the same store.

Also a *tagged* hit (a value stored with two tags, read with its tags
known to this process: one store read and a table lookup per tag), as a
ratio to the untagged hit of the same value.

On Redis, two async columns: ``await aget_or_set`` of the same hit (the
native asyncio read, ``ASYNC_POOL``) and of the near hit (on the event
loop, no thread), each timed inside one running loop.  Then an async table
on Redis, every column timed in the same loop of each round, each a ratio
to a native ``redis.asyncio`` GET of the same record: ours (native), ours
with ``ASYNC_POOL: False`` (the thread hop), ours with ``NEAR_CACHE``, and
Django's own ``RedisCache.aget``.

Run: .venv/bin/python benchmarks/hit_path.py [--async]   (starts its own
redis-server; ``--async``: the async table only)
Both (and, on Redis, a hot hit through NEAR_CACHE) are measured side by
side in 15 interleaved rounds of one run; the
medians are printed, and the ratio is the median of the rounds' ratios
(what to read: the machines are shared and noisy).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import timeit
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.helpers.redis_server import RedisServer


def main() -> None:
    server = RedisServer()
    server.start()
    os.environ["DOGPILE_TEST_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    # the near cache over the same Redis (a hot hit: no round trip)
    near = DogpileCache(
        "redis",
        {
            "TIMEOUT": 300,
            "KEY_PREFIX": "near",
            "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "NEAR_CACHE": True},
        },
    )

    values = {
        "100 B str": "x" * 100,
        "4 KB html": "<li>row</li>" * 340,
        "50-key dict": {f"field{i}": i for i in range(50)},
    }
    print(
        f"{'store':7} {'value':12} {'raw get µs':>11} {'dogpile hit µs':>15} {'ratio':>6}"
        f"  {'floor µs':>9} {'floor ratio':>11}  {'near hit µs':>11} {'raw/near':>9}"
        f"  {'tagged µs':>9} {'tagged/hit':>10}  {'async hit µs':>12} {'async near µs':>13}"
    )
    tags = ["category:shoes", "product:1"]
    try:
        for store, dp in [] if "--async" in sys.argv else (("locmem", "dp_locmem"), ("redis", "dp_redis")):
            raw, cache = caches[store], caches[dp]
            for label, value in values.items():
                # the same user key on both: the wrapper's own key is longer
                # (its prefix inside the store's), which is part of its cost
                raw.set("bench:page", value)
                cache.set("bench:page", value)
                cache.delete("bench:tagged")
                cache.get_or_set("bench:tagged", lambda: value, tags=tags)  # noqa: B023
                n = 20000 if store == "locmem" else 2000
                # the floor: the store's own get of the wrapper's key and
                # record, with none of the wrapper's logic
                made = cache.make_and_validate_key("bench:page")
                raws, hits, floors, ratios, floor_ratios = [], [], [], [], []
                nears, speedups, tagged, tagged_ratios = [], [], [], []
                ahits, anears = [], []
                if store == "redis":
                    near.set("bench:page", value)
                    near.get_or_set("bench:page", "y")  # hot: in the near cache
                # (each lambda runs within its own iteration)
                for _ in range(15):  # interleaved rounds: noise hits both sides
                    a = timeit.timeit(lambda: raw.get("bench:page"), number=n) / n  # noqa: B023
                    b = timeit.timeit(lambda: cache.get_or_set("bench:page", "y"), number=n) / n  # noqa: B023
                    f = timeit.timeit(lambda: raw.get(made), number=n) / n  # noqa: B023
                    raws.append(a)
                    hits.append(b)
                    floors.append(f)
                    ratios.append(b / a)
                    floor_ratios.append(f / a)
                    t = timeit.timeit(lambda: cache.get_or_set("bench:tagged", "y", tags=tags), number=n) / n  # noqa: B023
                    tagged.append(t)
                    tagged_ratios.append(t / b)
                    if store == "redis":
                        c = timeit.timeit(lambda: near.get_or_set("bench:page", "y"), number=n) / n
                        nears.append(c)
                        speedups.append(a / c)
                        ahits.append(asyncio.run(_timed(cache, n // 4)))
                        anears.append(asyncio.run(_timed(near, n)))
                med = statistics.median
                near_cells = f"  {med(nears) * 1e6:11.2f} {med(speedups):8.1f}x" if nears else ""
                async_cells = f"  {med(ahits) * 1e6:12.2f} {med(anears) * 1e6:13.2f}" if ahits else ""
                print(
                    f"{store:7} {label:12} {med(raws) * 1e6:11.2f} {med(hits) * 1e6:15.2f} "
                    f"{med(ratios):6.2f}  {med(floors) * 1e6:9.2f} {med(floor_ratios):11.2f}"
                    + (near_cells or " " * 23)
                    + f"  {med(tagged) * 1e6:9.2f} {med(tagged_ratios):10.2f}"
                    + async_cells
                )
        _async_table(server.url, near, values)
    finally:
        server.cleanup()


def _async_table(url: str, near, values) -> None:
    from django.core.cache import caches

    ours, threads, django = caches["dp_redis"], caches["dp_async_threads"], caches["redis_django"]
    print(
        f"\n{'async, Redis':12} {'redis.asyncio GET µs':>20} {'ours µs':>8} {'ratio':>6}"
        f"  {'thread hop µs':>13} {'ratio':>6}  {'near µs':>8} {'ratio':>6}"
        f"  {'Django aget µs':>14} {'ratio':>6}"
    )
    for label, value in values.items():
        for cache in (ours, threads, near):
            cache.set("bench:page", value)
            cache.get_or_set("bench:page", "y")  # near: hot
        django.set("bench:page", value)
        made = ours.binding.adapter.raw_key(ours.binding.store_key("bench:page"))
        rounds = [asyncio.run(_async_round(url, made, ours, threads, near, django, 500)) for _ in range(15)]
        med = statistics.median
        raw = med(r[0] for r in rounds)
        cells = [f"{label:12} {raw * 1e6:20.2f}"]
        for i, width in enumerate((8, 13, 8, 14), start=1):
            ratio = med(r[i] for r in rounds)
            cells.append(f"{ratio * raw * 1e6:{width}.2f} {ratio:6.2f}")
        print("  ".join(cells))


async def _async_round(url: str, made: str, ours, threads, near, django, n: int) -> tuple[float, ...]:
    """Seconds per call: a native GET, then each of ours and Django's as a
    ratio to a native GET timed in alternating blocks of 50 beside it (the
    same machine state for both: a GET timed right after a thread ran took
    58 µs, after an idle loop 115 µs -- idle cores wake slower)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)

    def raw() -> Any:
        return client.get(made)

    try:
        out: list[float] = []
        for cache, get in ((ours, None), (threads, None), (near, None), (django, "aget")):
            if get is None:

                def call(cache: Any = cache) -> Any:
                    return cache.aget_or_set("bench:page", "y")
            else:

                def call(cache: Any = cache) -> Any:
                    return cache.aget("bench:page")

            pair = await _pair(raw, call, n)
            if not out:
                out.append(pair[0])
            out.append(pair[1] / pair[0])
        return tuple(out)
    finally:
        await client.aclose()


async def _pair(a: Any, b: Any, n: int, block: int = 50) -> tuple[float, float]:
    """Seconds per call of ``a`` and of ``b``, in alternating blocks."""
    await a()
    await b()
    totals = [0.0, 0.0]
    clock = time.perf_counter
    for _ in range(n // block):
        for i, call in enumerate((a, b)):
            start = clock()
            for _ in range(block):
                await call()
            totals[i] += clock() - start
    done = (n // block) * block
    return totals[0] / done, totals[1] / done


async def _timed(cache, n: int) -> float:
    """Seconds per ``await cache.aget_or_set`` of the hot key, in one loop."""
    await cache.aget_or_set("bench:page", "y")
    start = time.perf_counter()
    for _ in range(n):
        await cache.aget_or_set("bench:page", "y")
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    main()
