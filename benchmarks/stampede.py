"""One hot key, many callers, a short timeout: plain get_or_set vs DogpileCache.

Run:  .venv/bin/python benchmarks/stampede.py          (about 50 s)
      .venv/bin/python benchmarks/stampede.py --duration 4 --threads 16
      .venv/bin/python benchmarks/stampede.py --store all  (every store, ~7 min)

Every scenario runs three times in one go, side by side: Django's own
``get_or_set`` on a store alias (``django``), ``DogpileCache.get_or_set``
over the same alias (``dogpile``), and the same with ``BACKGROUND``
(``background``: even the caller that wins the lock gets the stale value).  The callers (threads, or processes x threads on Redis) loop on
one key with a short pause between calls; the creator sleeps
``--creator`` seconds and records when it ran.  The script starts its own
``redis-server`` (and a second one for ``shards``, a ``memcached`` for
``memcached``) on free loopback ports.  Every store but locmem also runs as
8 processes x 4 threads.

Columns:

* ``creator calls`` -- how often the creator ran; ``max at once`` -- most
  creators running at the same moment (across processes too, from their
  recorded intervals);
* ``while fresh`` -- creator calls that started while the store held a
  fresh value (wasted work);
* ``slow calls`` -- calls after the first value existed that took at least
  the creator's time (callers made to wait at an expiry);
* ``cold wait`` -- the longest a caller that arrived before the first value
  waited for it (the creator's time + the wake-up delay);
* latency percentiles over all calls.

``tests/ops/test_stampede.py`` runs a short version of the same scenarios.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@dataclass
class Result:
    """What one scenario measured (times in seconds)."""

    calls: list[tuple[float, float]] = field(default_factory=list)  # (start, end)
    creators: list[tuple[float, float, bool]] = field(default_factory=list)  # (start, end, fresh)
    errors: int = 0
    #: key -> its creators' (start, end), when a run has several keys
    per_key: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        self.calls.extend(other.calls)
        self.creators.extend(other.creators)
        self.errors += other.errors
        for key, runs in other.per_key.items():
            self.per_key.setdefault(key, []).extend(runs)

    def per_key_summary(self) -> dict[str, Any]:
        """Creator calls and most at once, per key (the worst key)."""
        return {
            "keys": len(self.per_key),
            "min creator calls per key": min((len(r) for r in self.per_key.values()), default=0),
            "max creator calls per key": max((len(r) for r in self.per_key.values()), default=0),
            "max at once per key": max((max_overlap(r) for r in self.per_key.values()), default=0),
        }

    def summary(self, creator_time: float) -> dict[str, Any]:
        creators = sorted(self.creators)
        first_landed = min((end for _, end, _ in creators), default=float("inf"))
        latencies = sorted(end - start for start, end in self.calls)
        slow = sum(
            1 for start, end in self.calls if start >= first_landed and end - start >= creator_time * 0.95
        )
        cold = [end - start for start, end in self.calls if start < first_landed]
        return {
            "requests": len(self.calls),
            "creator calls": len(creators),
            "max at once": max_overlap([(s, e) for s, e, _ in creators]),
            "while fresh": sum(1 for *_, fresh in creators if fresh),
            "slow calls": slow,
            "cold wait ms": max(cold, default=0.0) * 1000,
            "p50 ms": percentile(latencies, 0.50) * 1000,
            "p99 ms": percentile(latencies, 0.99) * 1000,
            "max ms": (latencies[-1] if latencies else 0.0) * 1000,
            "errors": self.errors,
        }


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = active = 0
    for _, step in events:
        active += step
        best = max(best, active)
    return best


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: the stores this benchmark knows: aliases of tests/settings.py
STORES = ("locmem", "file", "db", "redis", "redis_django", "valkey", "shards", "memcached", "cluster")


def setup_django(redis_url: str | None) -> None:
    import warnings

    # django-redis 7's ShardClient warns on each of its own get()/set() calls
    warnings.filterwarnings("ignore", ".* on sharded client should not specify client")
    if redis_url:
        os.environ["DOGPILE_TEST_REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def start_servers(stores: list[str]) -> list[Any]:
    """Start the servers ``stores`` need; environment set for child processes."""
    import tempfile

    from tests.helpers.redis_server import MemcachedServer, RedisServer

    os.environ.setdefault("DOGPILE_TEST_SHARED_DIR", tempfile.mkdtemp(prefix="dogpile-bench-"))
    servers: list[Any] = []
    redis = RedisServer()
    redis.start()
    servers.append(redis)
    os.environ["DOGPILE_TEST_REDIS_URL"] = redis.url
    if "shards" in stores:
        second = RedisServer()
        second.start()
        servers.append(second)
        os.environ["DOGPILE_TEST_REDIS2_URL"] = second.url
    if "memcached" in stores:
        memcached = MemcachedServer()
        memcached.start()
        servers.append(memcached)
        os.environ["DOGPILE_TEST_MEMCACHED"] = memcached.location
    if "cluster" in stores:
        from tests.helpers.redis_server import RedisClusterServers

        cluster = RedisClusterServers()
        cluster.start()
        servers.append(cluster)
        os.environ["DOGPILE_TEST_CLUSTER"] = cluster.location
    return servers


def keys_on_every_primary(store: str, per_primary: int = 2, prefix: str = "stampede") -> list[str]:
    """Keys whose records live on every primary of a cluster store, as
    DogpileCache places them (hash-tagged), ``per_primary`` on each."""
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    probe = DogpileCache(store, {"TIMEOUT": 1})
    client = caches[store].client.get_client(write=True)
    found: dict[str, list[str]] = {}
    wanted = len(client.get_primaries()) * per_primary
    i = 0
    while sum(map(len, found.values())) < wanted:
        key = f"{prefix}:{uuid.uuid4().hex[:8]}:{i}"
        node = client.get_node_from_key(probe.store_key(key)).name
        if len(found.setdefault(node, [])) < per_primary:
            found[node].append(key)
        i += 1
    return [k for keys in found.values() for k in keys]


KINDS = ("django", "dogpile", "background")


def make_cache(kind: str, store: str, timeout: float) -> Any:
    """This thread's cache for ``kind``: Django's alias, or a DogpileCache."""
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    if kind == "django":
        return caches[store]
    options = {"GRACE": 600, "LOCK_TIMEOUT": 10, "BACKGROUND": kind == "background"}
    if os.environ.get("DOGPILE_BENCH_NEAR") == "1":  # --near (children inherit it)
        options["NEAR_CACHE"] = True
    if os.environ.get("DOGPILE_BENCH_JITTER"):  # benchmarks/jitter.py
        options["JITTER"] = float(os.environ["DOGPILE_BENCH_JITTER"])
    return DogpileCache(store, {"TIMEOUT": timeout, "OPTIONS": options})


def is_fresh_now(kind: str, cache: Any, key: str) -> bool:
    """Does the store hold a fresh value for ``key`` right now?"""
    from django_dogpile import records

    if kind == "django":
        return cache.get(key) is not None  # Django: present means fresh
    return records.is_fresh(cache.store.get(cache.make_and_validate_key(key)), records.now())


def drive(
    kind: str,
    store: str,
    key: str,
    threads: int,
    start_at: float,
    duration: float,
    timeout: float,
    creator_time: float,
    think: float,
    keys: list[str] | None = None,
) -> Result:
    """Run ``threads`` callers in this process until ``start_at + duration``;
    with ``keys``, each call of a caller goes to the next of them."""
    result = Result()
    names = keys or [key]
    lock = threading.Lock()
    ready = threading.Barrier(threads)

    def caller() -> None:
        cache = make_cache(kind, store, timeout)  # one per thread, as Django does

        def creator_of(name: str) -> Any:
            def creator() -> str:
                started = time.time()
                fresh = is_fresh_now(kind, cache, name)
                time.sleep(creator_time)
                with lock:
                    result.creators.append((started, time.time(), fresh))
                    if keys:
                        result.per_key.setdefault(name, []).append((started, time.time()))
                return f"made at {started}"

            return creator

        creators = {name: creator_of(name) for name in names}

        # Warm up: connections, scripts and imports are ready before the clock
        # starts, as in a server that has been up for a while.
        cache.get_or_set(f"{key}:warm:{threading.get_ident()}", "w", timeout=timeout)
        ready.wait()
        calls = []
        errors = 0
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + duration
        turn = 0
        while (now := time.time()) < end:
            name = names[turn % len(names)]
            turn += 1
            try:
                cache.get_or_set(name, creators[name], timeout=timeout)
            except Exception:
                errors += 1
            calls.append((now, time.time()))
            time.sleep(think)
        with lock:
            result.calls.extend(calls)
            result.errors += errors

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return result


def _process_main(args: tuple[Any, ...], redis_url: str | None, queue: Any) -> None:
    setup_django(redis_url)
    queue.put(drive(*args))


def run(
    kind: str,
    store: str,
    *,
    threads: int = 32,
    processes: int = 1,
    duration: float = 8.0,
    timeout: float = 1.0,
    creator_time: float = 0.2,
    think: float = 0.005,
    redis_url: str | None = None,
    keys: list[str] | None = None,
) -> Result:
    """One scenario: ``processes`` x ``threads`` callers on one fresh key
    (or on each of ``keys``, in turn)."""
    key = f"stampede:{uuid.uuid4().hex[:12]}"
    start_at = time.time() + (6.0 if processes > 1 else 0.5)  # spawn + Django set-up
    args = (kind, store, key, threads, start_at, duration, timeout, creator_time, think, keys)
    if processes == 1:
        return drive(*args)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(args, redis_url, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    result = Result()
    for _ in procs:
        result.merge(queue.get(timeout=duration + 60))
    for p in procs:
        p.join()
    return result


COLUMNS = (
    "requests",
    "creator calls",
    "max at once",
    "while fresh",
    "slow calls",
    "cold wait ms",
    "p50 ms",
    "p99 ms",
    "max ms",
    "errors",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--creator", type=float, default=0.2, help="creator time, s")
    parser.add_argument("--think", type=float, default=0.005, help="pause between calls, s")
    parser.add_argument("--near", action="store_true", help="NEAR_CACHE on for dogpile and background")
    parser.add_argument(
        "--store",
        "--stores",
        dest="stores",
        default="locmem,redis",
        help=f"comma-separated, or 'all': {','.join(STORES)}",
    )
    opts = parser.parse_args()
    if opts.near:
        os.environ["DOGPILE_BENCH_NEAR"] = "1"
    stores = list(STORES) if opts.stores == "all" else opts.stores.split(",")
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown store(s) {', '.join(sorted(unknown))}; known: {', '.join(STORES)}")

    servers = start_servers(stores)
    try:
        setup_django(os.environ["DOGPILE_TEST_REDIS_URL"])
        if "db" in stores:
            from django.core.management import call_command

            call_command("migrate", database="files", verbosity=0, run_syncdb=True)
            call_command("createcachetable", database="files", verbosity=0)
        scenarios = []
        for store in stores:
            scenarios.append((store, 1, opts.threads))
            if store != "locmem":  # a shared store: processes too
                scenarios.append((store, 8, max(1, opts.threads // 8)))
        print(
            f"{opts.duration:g} s per run, timeout {opts.timeout:g} s, creator "
            f"{opts.creator * 1000:g} ms, {opts.think * 1000:g} ms between calls; "
            f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
            + (", NEAR_CACHE on" if opts.near else "")
            + "\n"
        )
        header = f"{'scenario':28} {'':8}" + "".join(f"{c:>14}" for c in COLUMNS)
        print(header)
        spread = []
        for store, processes, threads in scenarios:
            label = f"{store} {processes}x{threads}" if processes > 1 else f"{store} {threads} threads"
            for kind in KINDS:
                result = run(
                    kind,
                    store,
                    threads=threads,
                    processes=processes,
                    duration=opts.duration,
                    timeout=opts.timeout,
                    creator_time=opts.creator,
                    think=opts.think,
                    redis_url=os.environ["DOGPILE_TEST_REDIS_URL"],
                )
                row = result.summary(opts.creator)
                cells = "".join(
                    f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]:>14}" for c in COLUMNS
                )
                print(f"{label:28} {kind:8}{cells}", flush=True)
            if store == "cluster" and processes > 1:
                spread.append((store, processes, threads))
        for store, processes, threads in spread:
            # keys on every primary: one creator call per key per expiry period
            keys = keys_on_every_primary(store)
            print(f"\n{store} {processes}x{threads}, {len(keys)} keys over every primary:")
            for kind in KINDS:
                result = run(
                    kind,
                    store,
                    threads=threads,
                    processes=processes,
                    duration=opts.duration,
                    timeout=opts.timeout,
                    creator_time=opts.creator,
                    think=opts.think,
                    redis_url=os.environ["DOGPILE_TEST_REDIS_URL"],
                    keys=keys,
                )
                print(f"  {kind:10} {result.per_key_summary()}  errors {result.errors}", flush=True)
    finally:
        for server in servers:
            server.cleanup()


if __name__ == "__main__":
    main()
