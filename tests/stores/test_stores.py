"""What each store topology needs beyond the common tests: memcached's whole
seconds and item limit, Django's RedisCache with replicas, ShardClient's
lease placement.  (The cross-process fence and stampede tests run over every
store in tests/engine/test_fences.py and tests/stores/test_redis.py.)"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

import pytest
from django.conf import settings
from django.test import override_settings

from django_dogpile.cache import LOCK_SUFFIX, DogpileCache
from django_dogpile.exceptions import UncacheableValue
from django_dogpile.stores import MemcachedStore, RedisAdapter
from django_dogpile.testing import Clock, run_concurrently
from tests.helpers.procs import make_cache, regenerate_keys
from tests.helpers.redis_server import RedisServer

SPAWN = multiprocessing.get_context("spawn")
SHARD_WARNING = pytest.mark.filterwarnings(
    # django-redis 7's ShardClient.get_many warns about its own internal call
    "ignore:get on sharded client should not specify client:UserWarning"
)


# --- memcached ------------------------------------------------------------------


@pytest.mark.memcached
@pytest.mark.slow
def test_memcached_sub_second_lease_still_holds_across_processes(tmp_path):
    """LOCK_TIMEOUT 0.5 on memcached: rounded up to 1 s, the lease holds.

    Django truncates a 0.5 s timeout to 0 and memcached stores that as
    "expired at once": every process took the lease and regenerated.
    """
    cache = make_cache("memcached", "subsec", LOCK_TIMEOUT=0.5)
    cache.clear()
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        cache.set(key, "old", 0.5)
    time.sleep(0.6)  # stale, still servable (GRACE)
    log = tmp_path / "made.log"
    results = SPAWN.Queue()
    start_at = time.time() + 2.5
    procs = [
        SPAWN.Process(
            target=regenerate_keys,
            args=("memcached", "subsec", keys, start_at, 0.2, str(log), {"LOCK_TIMEOUT": 0.5}, results),
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    assert outcomes == ["done"] * 3
    assert Counter(log.read_text().split()) == Counter({key: 1 for key in keys})


@pytest.mark.memcached
def test_memcached_timeouts_are_rounded_up_for_the_store_only(memcached_server):
    from django.core.cache import caches

    cache = make_cache("memcached", "round", LOCK_TIMEOUT=0.5)
    cache.store  # noqa: B018 - connect
    store = cache.binding.adapter.backing  # (cache.store also evicts near caches on writes)
    assert isinstance(store, MemcachedStore)
    assert store.add("lease", "token", timeout=0.5)  # Django alone: expired at once
    assert store.get("lease") == "token"
    assert caches["memcached"].add("plain", "token", timeout=0.5)
    assert caches["memcached"].get("plain") is None  # Django's own instance: untouched
    # a fresh value with a sub-second timeout is served while fresh
    cache.set("short", "v", 0.5)
    assert cache.get("short") == "v"


@pytest.mark.memcached
def test_memcached_value_over_the_item_limit_is_uncacheable_not_a_silent_miss(memcached_server):
    cache = make_cache("memcached", "big", LOCK_TIMEOUT=5)
    cache.clear()
    big = b"x" * (1024 * 1024 + 1)
    with pytest.raises(UncacheableValue) as info:
        cache.set("big", big)
    message = str(info.value)
    assert "'big'" in message and "item size limit" in message and "1 MB" in message, message
    assert isinstance(info.value, TypeError)

    calls = []

    def make_big():
        calls.append(1)
        return big

    with pytest.raises(UncacheableValue, match="'page'.*item size limit"):
        cache.get_or_set("page", make_big)
    with pytest.raises(UncacheableValue, match="item size limit"):
        cache.set_many({"a": 1, "b": big})
    # the lease was released: the next caller is not kept waiting
    t0 = time.monotonic()
    assert cache.get_or_set("page", "small") == "small"
    assert time.monotonic() - t0 < 0.5
    assert calls == [1]


@pytest.mark.memcached
def test_memcached_threads_of_one_cache_each_use_their_own_client(memcached_server):
    """One DogpileCache shared by threads (BACKGROUND, async bridge, a test):
    each thread talks through its own client, as Django gives each its own."""
    cache = make_cache("memcached", "threads", LOCK_TIMEOUT=5)
    cache.clear()
    errors = []

    def work(n):
        try:
            for i in range(150):
                cache.set(f"t{n}-{i}", (n, i))
                assert cache.get(f"t{n}-{i}") == (n, i)
                assert cache.get_or_set(f"shared-{i % 5}", lambda i=i: i) is not None
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    run_concurrently(8, work)
    assert errors == []


# --- Django's RedisCache: primary + replica -------------------------------------


def _raw(url):
    import redis

    return redis.Redis.from_url(url)


@pytest.fixture(scope="module")
def replica(redis_server):
    _raw(redis_server.url).config_set("repl-diskless-sync-delay", 0)
    server = RedisServer(args=("--replicaof", "127.0.0.1", str(redis_server.port)))
    server.start()
    deadline = time.monotonic() + 20
    while _raw(server.url).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    yield server
    server.cleanup()


@pytest.mark.redis
def test_django_rediscache_with_replicas_runs_the_lease_on_the_primary(redis_server, replica):
    """LOCATION [primary, replica]: reads may go to the replica (read-only),
    every script runs on the primary; 8 threads over a stale key, one creator."""
    caches = {
        **settings.CACHES,
        "replicated": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": [redis_server.url, replica.url],
        },
    }
    with override_settings(CACHES=caches):
        cache = DogpileCache(
            "replicated", {"TIMEOUT": 10, "KEY_PREFIX": "repl", "OPTIONS": {"LOCK_TIMEOUT": 5}}
        )
        assert isinstance(cache.binding.adapter if cache.store else None, RedisAdapter)
        adapter = cache.binding.adapter
        assert adapter.access.name == "Django's RedisCache"
        primary_port = adapter.client_for("x").connection_pool.connection_kwargs["port"]
        assert primary_port == redis_server.port
        with Clock() as clock:
            cache.set("k", "old")
            while _raw(replica.url).get(cache.store.make_key(cache.make_and_validate_key("k"))) is None:
                time.sleep(0.01)  # replication is asynchronous
            clock.advance(11)
            calls = []

            def create():
                calls.append(1)
                time.sleep(0.2)
                return "new"

            got = run_concurrently(8, lambda _: cache.get_or_set("k", create))
        assert calls == [1]
        assert set(got) <= {"old", "new"}
        deadline = time.monotonic() + 2  # replication is asynchronous
        while cache.get("k") != "new" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.get("k") == "new"


# --- django-redis ShardClient: a record's lease lives on the record's server ----


@pytest.mark.redis
@pytest.mark.shards
@SHARD_WARNING
def test_shards_keep_each_lease_on_its_records_server(second_redis):
    cache = make_cache("shards", "place", timeout=10, LOCK_TIMEOUT=5)
    cache.clear()
    store = cache.store
    client = store.client
    # a key whose lock key, hashed on its own, would go to the other server
    for i in range(200):
        made = cache.make_and_validate_key(f"k{i}")
        record, lock = str(store.make_key(made)), str(store.make_key(made + LOCK_SUFFIX))
        if client.get_server_name(record) != client.get_server_name(lock):
            key = f"k{i}"
            break
    else:  # pragma: no cover - the ring spreads 200 keys
        pytest.fail("no key whose lock hashes to the other shard")
    inside, release = threading.Event(), threading.Event()

    def slow():
        inside.set()
        release.wait(5)
        return "made"

    t = threading.Thread(target=lambda: cache.get_or_set(key, slow))
    t.start()
    try:
        assert inside.wait(5)
        home, other = client.get_server(record), client.get_server(lock)
        assert home is not other
        assert home.exists(lock) == 1  # the lease sits beside its record
        assert other.exists(lock) == 0
    finally:
        release.set()
        t.join(5)
    assert home.exists(record) == 1 and other.exists(record) == 0
    assert cache.get(key) == "made"
    assert home.exists(lock) == 0  # released
    # explicit writes and deletes find the lease on the same server
    cache.delete_many([key])
    assert home.exists(record) == 0
