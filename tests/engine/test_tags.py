"""Tags: ``get_or_set(tags=...)`` and ``invalidate_tags`` on every kind of store.

An invalidated value is stale but servable (one regeneration, the others get
the old value), a hard one is a miss, an invalidation that lands while a
value is being made is never lost, and a tag nothing carries is a no-op.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from django_dogpile import records, signals
from django_dogpile.testing import Clock
from tests.helpers.procs import make_cache
from tests.helpers.stores import stores

TAGGED_STORES = stores("locmem", "redis", "redis_django", "valkey", "memcached", "db", "file", "cluster")


def fresh_cache(store, **options):
    return make_cache(store, f"tags-{uuid.uuid4().hex[:8]}", timeout=300, LOCK_TIMEOUT=5, **options)


class Slow:
    """A creator that blocks until released, counting its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self):
        self.calls += 1
        self.started.set()
        assert self.release.wait(10)
        return self.value


@pytest.mark.parametrize("store", TAGGED_STORES)
def test_soft_invalidation_serves_stale_while_one_regenerates(store):
    cache = fresh_cache(store)
    assert cache.get_or_set("page", lambda: "v1", tags=["category:shoes", "site"]) == "v1"
    assert cache.get_or_set_status("page", lambda: "never")[1] == "HIT"
    assert cache.invalidate_tags("category:shoes") == 1
    assert cache.get("page") is None  # stale is a miss for get(), as Django's expiry
    slow = Slow("v2")
    got = {}
    regenerating = threading.Thread(target=lambda: got.setdefault("a", cache.get_or_set_status("page", slow)))
    regenerating.start()
    assert slow.started.wait(5)
    # while one caller regenerates, every other gets the old value at once
    for _ in range(5):
        assert cache.get_or_set_status("page", lambda: "never") == ("v1", "UPDATING")
    slow.release.set()
    regenerating.join(10)
    assert got["a"] == ("v2", "EXPIRED")
    assert slow.calls == 1
    assert cache.get("page") == "v2"
    # a regeneration that names no tags keeps those of the value it replaces
    assert cache.invalidate_tags("site") == 1
    assert cache.get("page") is None


@pytest.mark.parametrize("store", TAGGED_STORES)
def test_hard_invalidation_is_a_miss_and_one_flight(store):
    cache = fresh_cache(store)
    cache.get_or_set("k", "v1", tags="t")
    cache.get_or_set("other", "o1", tags="u")
    cache.invalidate_tags("t", hard=True)
    assert cache.get("k") is None
    slow = Slow("v2")
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.get_or_set("k", slow, tags="t"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    assert slow.started.wait(5)
    time.sleep(0.1)
    assert got == []  # nobody was served the hard-invalidated value: they wait
    slow.release.set()
    for t in threads:
        t.join(10)
    assert got == ["v2"] * 4 and slow.calls == 1
    assert cache.get("other") == "o1"  # another tag: untouched


@pytest.mark.parametrize("store", stores("locmem", "redis", "memcached"))
def test_a_later_soft_invalidation_keeps_values_made_before_a_hard_one_gone(store):
    cache = fresh_cache(store)
    with Clock() as clock:
        cache.get_or_set("old", "o1", tags="t")
        clock.advance(1)
        cache.invalidate_tags("t", hard=True)
        clock.advance(1)
        cache.get_or_set("new", "n1", tags="t")  # made after the hard one
        clock.advance(1)
        cache.invalidate_tags("t")
        assert cache.get_or_set_status("new", lambda: "n2")[0] == "n2"  # stale: regenerated
        slow = Slow("o2")
        threading.Timer(0.2, slow.release.set).start()
        # "old" predates the hard invalidation: a miss, not a stale value
        assert cache.get_or_set_status("old", slow) == ("o2", "MISS")


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_hard_invalidation_compares_versions_not_clocks(store):
    """A host whose clock runs a minute ahead made "old" before the hard
    invalidation another host made: still a miss.  One a minute behind made
    "new" after it: still served."""
    cache = fresh_cache(store)
    with Clock() as clock:
        clock.advance(60)
        cache.get_or_set("old", "o1", tags="t")
        clock.advance(-60)
        cache.invalidate_tags("t", hard=True)
        clock.advance(-60)
        cache.get_or_set("new", "n1", tags="t")
        clock.advance(60)
        assert cache.get("old") is None
        assert cache.get_or_set_status("old", lambda: "o2") == ("o2", "MISS")
        assert cache.get_or_set_status("new", lambda: "n2") == ("n1", "HIT")


def test_a_foreign_five_item_tuple_in_the_store_is_a_miss():
    """Not ours (no stamp of (tag, version) pairs): never a crash."""
    cache = fresh_cache("locmem")
    skey = cache.binding.store_key("k", None)
    for foreign in [(1, 2.0, None, 0.0, "not a stamp"), (1, 2.0, None, 0.0, (("t", "x", "y"),))]:
        cache.store.set(skey, foreign)
        assert cache.get("k") is None
        assert cache.get_many(["k"]) == {}
        assert cache.get_or_set("k", lambda: "mine") == "mine"
        cache.delete("k")


def test_get_and_get_many_bubble_up_to_the_value_being_made():
    """A tagged value read with get() or get_many() inside a creator tags
    what it makes, as get_or_set() does."""
    cache = fresh_cache("locmem")
    cache.get_or_set("a", "A", tags="ta")
    cache.set("b", "B", tags="tb")
    cache.get_or_set("outer1", lambda: cache.get("a") + "!")
    cache.get_or_set("outer2", lambda: "".join(cache.get_many(["b"]).values()))
    cache.invalidate_tags("ta")
    assert cache.get("outer1") is None and cache.get("outer2") == "B"
    cache.invalidate_tags("tb")
    assert cache.get("outer2") is None


@pytest.mark.parametrize("store", TAGGED_STORES)
def test_an_invalidation_during_a_regeneration_is_never_lost(store):
    cache = fresh_cache(store)
    slow = Slow("made from old data")
    t = threading.Thread(target=lambda: cache.get_or_set("k", slow, tags=["p:1"]))
    t.start()
    assert slow.started.wait(5)
    # the data changes and is invalidated while the creator is still running
    cache.invalidate_tags("p:1")
    slow.release.set()
    t.join(10)
    # the value was stored, but stamped with the version read *before* the
    # invalidation: it is stale at once, never served as fresh
    assert cache.get("k") is None
    assert cache.get_or_set_status("k", lambda: "fresh data") == ("fresh data", "EXPIRED")
    assert cache.get("k") == "fresh data"


@pytest.mark.parametrize("store", stores("locmem", "redis", "memcached"))
def test_an_unknown_tag_is_a_no_op(store):
    cache = fresh_cache(store)
    cache.get_or_set("k", "v", tags="used")
    assert cache.invalidate_tags("never-used", "neither") == 0
    assert cache.get("k") == "v"
    assert cache.store.get(cache.binding.tags.keys("never-used")[0]) is None  # nothing written


def test_untagged_values_and_other_tags_are_untouched():
    cache = fresh_cache("locmem")
    cache.get_or_set("plain", "p")
    cache.get_or_set("a", "a", tags="x")
    cache.get_or_set("b", "b", tags=["y", "z"])
    cache.invalidate_tags("x", "z")
    assert (cache.get("plain"), cache.get("a"), cache.get("b")) == ("p", None, None)
    assert cache.get_many(["plain", "a", "b"]) == {"plain": "p"}
    assert not cache.has_key("a")
    assert not cache.touch("a") and cache.touch("plain")
    with pytest.raises(ValueError):
        cache.incr("a")


def test_writes_keep_a_values_tags():
    cache = fresh_cache("locmem")
    cache.get_or_set("n", lambda: 1, tags="counter")
    assert cache.incr("n") == 2 and cache.touch("n", 100)
    cache.incr_version("n")
    cache.invalidate_tags("counter")
    assert cache.get("n", version=2) is None  # incr, touch and the move kept its tags
    cache.set("s", "v", tags=["s"])
    cache.invalidate_tags("s")
    assert cache.get("s") is None
    assert cache.invalidate("s")  # already stale: still servable
    assert cache.get_or_set_status("s", "again")[1] == "EXPIRED"


def test_bad_tags_are_a_clear_error():
    cache = fresh_cache("locmem")
    for bad in (42, [1], [""], {"a": 1}.items()):
        with pytest.raises(TypeError, match="tag"):
            cache.get_or_set(f"k{uuid.uuid4()}", "v", tags=bad)
    with pytest.raises(TypeError, match="invalidate_tags"):
        cache.invalidate_tags(3)


def test_a_tag_with_spaces_or_a_long_name_is_a_clean_store_key(recwarn):
    cache = fresh_cache("locmem")
    long = "x" * 400
    cache.get_or_set("k", "v", tags=["with space", long])
    assert not [w for w in recwarn if "CacheKeyWarning" in str(w.category)]
    cache.invalidate_tags(long)
    assert cache.get("k") is None


def test_invalidate_tags_sends_the_signal():
    cache = fresh_cache("locmem")
    heard = []

    def receiver(sender, **kwargs):
        heard.append(kwargs)

    signals.tags_invalidated.connect(receiver)
    try:
        cache.get_or_set("k", "v", tags="t")
        cache.invalidate_tags("t", "u", hard=True)
    finally:
        signals.tags_invalidated.disconnect(receiver)
    assert heard == [
        {"signal": signals.tags_invalidated, "alias": cache.alias, "tags": ("t", "u"), "hard": True}
    ]


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_async_twins(store):
    from asgiref.sync import async_to_sync

    cache = fresh_cache(store)

    async def scenario():
        async def make():
            return "v1"

        assert await cache.aget_or_set("k", make, tags=["t"]) == "v1"
        assert await cache.ainvalidate_tags("t") == 1
        assert await cache.aget("k") is None
        assert await cache.aget_or_set_status("k", lambda: "v2", tags="t") == ("v2", "EXPIRED")
        await cache.aset("s", "x", tags="t")
        await cache.ainvalidate_tags("t")
        return await cache.aget("s"), await cache.aget("k")

    assert async_to_sync(scenario)() == (None, None)


def test_clear_forgets_the_tag_table():
    cache = fresh_cache("locmem")
    cache.get_or_set("k", "v", tags="t")
    assert cache.binding.tags.table.get(cache.binding.tags.keys("t")[1], 1.0) is not records.MISSING
    cache.clear()
    assert cache.binding.tags.table.get(cache.binding.tags.keys("t")[1], 1.0) is records.MISSING


@pytest.mark.redis
def test_redis_commands_of_tagged_hits_and_invalidations(redis_server):
    from tests.stores.test_redis import Monitor, counted

    monitor = Monitor(redis_server.port)
    try:
        cache = fresh_cache("redis")
        cache.get_or_set("warm", "x")  # loads the Lua scripts once
        cache.get_or_set("plain", "p")
        cache.get_or_set("tagged", "t", tags=["category:shoes", "product:1"])
        assert counted(cache, monitor, lambda: cache.get_or_set("plain", "no"), "untagged") == ["GET"]
        # the tag table knows both versions: one read, as untagged
        hit = counted(
            cache, monitor, lambda: cache.get_or_set("tagged", "no", tags=["category:shoes"]), "tagged"
        )
        assert hit == ["GET"]
        # an invalidation: one read of the versions, a write and a broadcast per tag
        moved = counted(cache, monitor, lambda: cache.invalidate_tags("category:shoes", "product:1"), "inv")
        assert moved == ["MGET", "SET", "PUBLISH", "SET", "PUBLISH"]
        # a tag nothing carries: the read, and nothing else
        assert counted(cache, monitor, lambda: cache.invalidate_tags("nobody"), "unknown") == ["MGET"]
        # the table learnt the new versions: the stale read is one GET too
        assert counted(cache, monitor, lambda: cache.get("tagged"), "stale") == ["GET"]
        # another process's table is cold (or was evicted by the broadcast):
        # one more read, of the versions, then none
        cache.binding.tags.table.drop_all()
        assert counted(cache, monitor, lambda: cache.get("plain"), "plain2") == ["GET"]
        assert counted(cache, monitor, lambda: cache.get("tagged"), "cold") == ["GET", "MGET"]
        assert counted(cache, monitor, lambda: cache.get("tagged"), "warm2") == ["GET"]
    finally:
        monitor.close()


@pytest.mark.parametrize("store", stores("redis", "memcached"))
@pytest.mark.parametrize("first", ["same prefix", "other prefix"])
def test_an_invalidation_reaches_another_process(store, first):
    """On Redis by the broadcast (the reader's table would trust the old
    version for a minute without it); on memcached within TAGS_MAX_AGE.
    The table is per server: the broadcast reaches a process whatever
    alias (KEY_PREFIX) made its table first."""
    import multiprocessing

    from django_dogpile.stores import tags as tables
    from tests.helpers import tag_workers

    spawn = multiprocessing.get_context("spawn")
    tables.reset()
    if first == "other prefix":
        fresh_cache(store).get_or_set("k", "other", tags="t")
    cache = fresh_cache(store, TAGS_MAX_AGE=1.0)
    cache.get_or_set("k", "v1", tags="t")
    ready, go, results = spawn.Event(), spawn.Event(), spawn.Queue()
    reader = spawn.Process(target=tag_workers.watch, args=(store, cache.key_prefix, "k", ready, go, results))
    reader.start()
    try:
        assert ready.wait(30)  # it read "v1" as fresh: its table knows "t"
        cache.invalidate_tags("t")
        go.set()
        seen_after = results.get(timeout=30)
    finally:
        reader.join(10)
    assert seen_after is not None and seen_after < 1.5, seen_after
