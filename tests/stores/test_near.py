"""The near cache (OPTIONS["NEAR_CACHE"]): hits without a round trip, kept
coherent across processes by one pub/sub channel per store."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from django.core.cache import caches

from django_dogpile.stores.near import NearStore
from tests.helpers.procs import make_cache, near_reader, raw_redis
from tests.stores.test_redis import Monitor, counted

pytestmark = pytest.mark.redis

SPAWN = multiprocessing.get_context("spawn")
NEAR = {"MAX_ENTRIES": 100, "MAX_BYTES": 1 << 20, "MAX_AGE": 5}


def near_cache(prefix, **near):
    cache = make_cache("redis", prefix, timeout=60, LOCK_TIMEOUT=5, NEAR_CACHE={**NEAR, **near})
    cache.get("connect")
    assert isinstance(cache.store, NearStore)
    assert cache.store._bus.subscribed.wait(5)
    return cache


def test_a_hot_hit_costs_no_round_trip_and_each_caller_gets_its_own_copy(redis_server):
    cache = near_cache("hot")
    cache.set("k", {"items": [1, 2]})
    assert cache.get_or_set("k", "never") == {"items": [1, 2]}  # fills the near cache
    monitor = Monitor(redis_server.port)
    try:
        hits = counted(cache, monitor, lambda: [cache.get_or_set("k", "never") for _ in range(50)], "near")
    finally:
        monitor.close()
    assert hits == []  # 50 hits, not one command
    first = cache.get_or_set("k", "never")
    first["items"].append(3)
    assert cache.get_or_set("k", "never") == {"items": [1, 2]}
    assert cache.binding.stats.snapshot()["HIT"] >= 51  # a near hit is a hit


def test_writes_in_this_process_are_seen_at_once(redis_server):
    cache = near_cache("local")
    cache.set("k", 1)
    assert cache.get("k") == 1
    for write, expected in [  # each write, then what get() returns
        (lambda: cache.set("k", 2), 2),
        (lambda: cache.incr("k"), 3),
        (lambda: cache.invalidate("k"), None),
        (lambda: cache.set("k", 4), 4),
        (lambda: cache.delete("k"), None),
        (lambda: cache.set_many({"k": 5}), 5),
        (lambda: cache.delete_many(["k"]), None),
        (lambda: cache.add("k", 6), 6),
        (lambda: cache.clear(), None),
    ]:
        cache.get("k")  # (re)fills the near cache when there is a fresh value
        write()
        assert cache.get("k") == expected


@pytest.mark.slow
def test_writes_in_another_process_are_seen_within_50_ms(redis_server):
    """4 processes (1 writer, 3 readers), 1000 writes: every read that starts
    more than 50 ms after a write finished returns that write or a later one."""
    writer = near_cache("coherent")
    writer.set("k", -1)
    results = SPAWN.Queue()
    start_at = time.time() + 6
    writes = 1000
    until = start_at + 120  # or until the writer's last value, "done"
    procs = [
        SPAWN.Process(
            target=near_reader,
            args=("coherent", {"LOCK_TIMEOUT": 5, "NEAR_CACHE": NEAR}, start_at, until, results),
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    time.sleep(max(0, start_at + 1 - time.time()))
    done_at = []
    for n in range(writes):
        writer.set("k", n)
        done_at.append(time.time())
        time.sleep(0.004)
    time.sleep(0.2)
    writer.set("k", "done")
    changes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    latencies, violations = [], []
    for reader in changes:
        for n, finished in enumerate(done_at):
            # the first change to a value >= n
            seen = next(((prev, start) for prev, start, v in reader if isinstance(v, int) and v >= n), None)
            assert seen is not None, f"write {n} never seen"
            prev, start = seen
            latencies.append(max(0.0, start - finished))
            if prev > finished + 0.05:  # a read began after the deadline and got an older value
                violations.append((n, prev - finished))
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))]
    print(
        f"\nnear cache coherence: {len(latencies)} write x reader pairs, p50 "
        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms, violations {len(violations)}"
    )
    assert violations == []
    assert p99 < 0.05, p99


def test_the_listener_reconnects_after_its_connection_is_killed(redis_server):
    cache = near_cache("killed")
    bus = cache.store._bus
    cache.set("k", "v1")
    assert cache.get("k") == "v1"
    raw_redis().client_kill_filter(_type="pubsub")
    deadline = time.monotonic() + 3
    while bus.subscribed.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    # while it was away, nothing it kept is served; it subscribes again by itself
    assert bus.subscribed.wait(5)
    assert len(cache.store._near) == 0
    assert cache.get("k") == "v1"


def test_after_a_redis_restart_no_old_value_is_served(redis_server):
    cache = near_cache("restart", MAX_AGE=30)
    bus = cache.store._bus
    cache.set("k", "before")
    assert cache.get("k") == "before"
    redis_server.restart()  # no persistence: the store comes back empty
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            got = cache.get("k")
        except Exception:  # the client's first command after the restart may fail
            continue
        assert got is None  # never the near cache's "before"
        if bus.subscribed.is_set():
            break
        time.sleep(0.02)
    assert bus.subscribed.is_set()
    cache.set("k", "after")
    assert cache.get("k") == "after"


def test_a_write_behind_the_backend_shows_within_max_age(redis_server):
    cache = near_cache("behind", MAX_AGE=0.5)
    cache.set("k", "old")
    assert cache.get("k") == "old"
    plain = make_cache("redis", "behind", timeout=60)  # no NEAR_CACHE: broadcasts nothing
    plain.set("k", "new")
    assert cache.get("k") == "new"  # but in this process it evicts at once
    # behind every DogpileCache's back (redis-cli, another program): the
    # record of another key, copied byte for byte
    plain.set("other", "newer")
    raw = raw_redis()
    store_key = caches["redis"].make_key(plain.make_and_validate_key("k"))
    raw.set(store_key, raw.get(caches["redis"].make_key(plain.make_and_validate_key("other"))))
    assert cache.get("k") == "new"  # within MAX_AGE the near copy may be served
    time.sleep(0.6)
    assert cache.get("k") == "newer"


@pytest.mark.memcached
def test_read_modify_writes_and_the_fence_read_the_store_not_a_near_copy(memcached_server):
    """memcached has no bus: another process's near copy may be MAX_AGE old.
    incr (under the lease) and a regeneration's fence must not build on it.
    Two near caches (other settings) in one process stand for two processes."""
    import threading

    a = make_cache("memcached", "rmw", timeout=60, LOCK_TIMEOUT=5, EARLY_REFRESH=1e6, NEAR_CACHE=NEAR)
    b = make_cache("memcached", "rmw", timeout=60, LOCK_TIMEOUT=5, NEAR_CACHE={**NEAR, "MAX_ENTRIES": 99})
    a.set("n", 0)
    assert b.get("n") == 0  # b keeps a near copy of 0
    assert a.incr("n") == 1
    assert b.incr("n") == 2  # not 1: a's increment is not lost

    def first():
        time.sleep(0.1)
        return "v1"

    a.delete("k")
    assert a.get_or_set("k", first) == "v1"  # a record with a cost: always refreshed early
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(0.3)
        return "regenerated"

    t = threading.Thread(target=a.get_or_set, args=("k", slow))
    t.start()  # reads k into a's near cache, then refreshes it early
    assert started.wait(5)
    b.set("k", "explicit")  # lands while the regeneration runs: wins
    t.join()
    assert make_cache("memcached", "rmw", timeout=60).get("k") == "explicit"


def test_a_write_in_a_child_forked_after_use_reaches_the_parent(redis_server):
    """A preloaded parent that keeps serving (or a sibling that has not read
    yet): the child's first write must not go out under the parent's sender
    id, which the parent's listener skips as its own."""
    import os

    cache = near_cache("forked")
    cache.set("k", "parent")
    assert cache.get("k") == "parent"  # the parent's near copy
    pid = os.fork()
    if pid == 0:  # the child writes before any get
        try:
            cache.set("k", "child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 1
    while cache.get("k") != "child" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("k") == "child"


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.redis.RedisCache",
        "django_redis.cache.RedisCache",
    ],
)
def test_a_near_miss_reads_the_primary_not_a_lagging_replica(redis_server, backend):
    """LOCATION [primary, replica] (and django-redis's SentinelClient): reads
    go to a replica, the eviction comes from the primary at once. A refill
    from a replica that lags would keep its old value for MAX_AGE; here the
    replica stops replicating altogether after the first value."""
    import redis
    from django.conf import settings
    from django.test import override_settings

    from tests.helpers.redis_server import RedisServer

    redis.Redis.from_url(redis_server.url).config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(redis_server.port)))
    replica.start()
    try:
        raw = redis.Redis.from_url(replica.url)
        deadline = time.monotonic() + 20
        while raw.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        caches = {
            **settings.CACHES,
            "replicated": {"BACKEND": backend, "LOCATION": [redis_server.url, replica.url]},
        }
        with override_settings(CACHES=caches):
            w = make_cache(
                "replicated", "lag", timeout=60, NEAR_CACHE={**NEAR, "MAX_ENTRIES": 98, "MAX_AGE": 30}
            )
            r = make_cache("replicated", "lag", timeout=60, NEAR_CACHE={**NEAR, "MAX_AGE": 30})
            for c in (w, r):
                c.get("connect")
                assert c.store._bus.subscribed.wait(5)
            w.set("k", "old")
            deadline = time.monotonic() + 5
            while r.get("k") != "old":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            raw.replicaof("NO", "ONE")  # from now on the replica lags for ever
            w.set("k", "new")
            deadline = time.monotonic() + 1
            while r.get("k") != "new" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.get("k") == "new"
    finally:
        replica.cleanup()


def test_an_async_near_hit_runs_on_the_loop_without_a_thread(redis_server):
    """The thread-sensitive executor is kept busy: a call that hops to it
    could not return until it is free.  A near hit (aget_or_set, aget) and
    a locmem hit return at once; a near miss, a tagged record (its check may
    read the store) take the thread."""
    import asyncio
    import threading

    from asgiref.sync import sync_to_async

    cache = near_cache("loop")
    cache.set("k", {"v": 1})
    cache.set("t", "tagged", tags="x")
    assert cache.get_or_set("k", "never") == {"v": 1}  # in the near cache now
    assert cache.get_or_set("t", "never") == "tagged"
    free = threading.Event()

    async def scenario():
        busy = asyncio.ensure_future(sync_to_async(free.wait)(10))
        await asyncio.sleep(0.05)  # the executor's one thread is taken
        try:
            on_loop = [
                await asyncio.wait_for(cache.aget_or_set("k", "never"), 2),
                await asyncio.wait_for(cache.aget("k"), 2),
                await asyncio.wait_for(cache.aget_or_set_status("k", "never"), 2),
            ]
            hopped = []
            for call in (cache.aget("cold"), cache.aget_or_set("t", "never")):
                try:
                    await asyncio.wait_for(asyncio.shield(call), 0.3)
                except asyncio.TimeoutError:
                    hopped.append(True)
            return on_loop, hopped, busy.done()
        finally:
            free.set()
            await busy

    on_loop, hopped, busy_done = asyncio.run(scenario())
    assert on_loop == [{"v": 1}, {"v": 1}, ({"v": 1}, "HIT")]
    assert hopped == [True, True] and not busy_done  # those waited for the thread


def test_async_near_hits_agree_with_the_sync_calls(redis_server):
    """Writes, deletes, invalidations and expiry, read both ways."""
    import asyncio

    from django_dogpile.testing import Clock

    cache = near_cache("agree")

    def both(key):
        return cache.get(key), cache.get_or_set_status(key, "new")

    async def reads(key):
        return await cache.aget(key), await cache.aget_or_set_status(key, "new")

    with Clock() as clock:
        for step in ("set", "delete", "invalidate", "expire", "set_many"):
            for read in ("sync", "async"):
                cache.set("k", "v1", timeout=60)
                cache.get_or_set("k", "never")  # held near
                if step == "delete":
                    cache.delete("k")
                elif step == "invalidate":
                    cache.invalidate("k")
                elif step == "expire":
                    clock.advance(61)
                elif step == "set_many":
                    cache.set_many({"k": "v2"})
                got = both("k") if read == "sync" else asyncio.run(reads("k"))
                if read == "sync":
                    expected = got
                else:
                    assert got == expected, (step, got, expected)
                if step == "expire":
                    clock.advance(-61)
                cache.delete("k")
