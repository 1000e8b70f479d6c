"""``get_or_set_many``: one store read for many keys, one creator call for
the keys a caller must make, single flight per key across processes --
counted on the servers (Redis ``MONITOR``, a proxy before memcached)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections import Counter

import pytest

from django_dogpile.results import CacheResult, dont_store, expires_in
from django_dogpile.testing import Clock, another_process
from tests.helpers.procs import batch_keys, make_cache
from tests.helpers.proxy import counted_memcached, one_multi_get
from tests.helpers.stores import stores

SPAWN = multiprocessing.get_context("spawn")
KEYS = [f"k{i}" for i in range(50)]
THREE = stores("locmem", "redis", "memcached")


class Creator:
    """Makes ``new-<key>`` for the keys it is given, recording each call."""

    def __init__(self, leave_out=(), prefix="new"):
        self.calls: list[list[str]] = []
        self.leave_out, self.prefix = set(leave_out), prefix

    def __call__(self, keys):
        self.calls.append(list(keys))
        return {k: f"{self.prefix}-{k}" for k in keys if k not in self.leave_out}


@pytest.mark.parametrize("store", THREE)
def test_missing_keys_are_made_in_one_call_then_hit(store):
    cache = make_cache(store, f"batch-{store}", timeout=10)
    cache.clear()
    make = Creator()
    assert cache.get_or_set_many(KEYS, make) == {k: f"new-{k}" for k in KEYS}
    assert make.calls == [KEYS]  # one call, the keys in the order given
    assert cache.get_or_set_many(KEYS, make) == {k: f"new-{k}" for k in KEYS}
    assert make.calls == [KEYS]
    assert cache.get_many(KEYS) == {k: f"new-{k}" for k in KEYS}  # stored for everyone


@pytest.mark.parametrize("store", THREE)
def test_fifty_stale_keys_made_by_one_caller_in_one_call(store):
    cache = make_cache(store, f"batch-stale-{store}", timeout=10)
    cache.clear()
    with Clock() as clock:
        cache.set_many({k: "old" for k in KEYS})
        cache.set("fresh", "kept", 100)
        clock.advance(11)
        make = Creator()
        before = cache.binding.stats.snapshot()
        got = cache.get_or_set_many(["fresh", *KEYS], make)
        after = cache.binding.stats.snapshot()
    assert got == {"fresh": "kept", **{k: f"new-{k}" for k in KEYS}}
    assert make.calls == [KEYS]
    assert after["EXPIRED"] - before["EXPIRED"] == 50
    assert after["REGENERATIONS"] - before["REGENERATIONS"] == 50
    assert after["HIT"] - before["HIT"] == 1


def test_stale_keys_locked_elsewhere_are_served_stale_and_the_rest_made():
    cache = make_cache("redis", "batch-updating", timeout=10)
    cache.clear()
    with Clock() as clock:
        cache.set_many({k: "old" for k in KEYS[:4]})
        clock.advance(11)
        inside, release = threading.Event(), threading.Event()

        def slow():
            inside.set()
            release.wait(5)
            return "other"

        t = threading.Thread(target=lambda: cache.get_or_set("k0", slow))
        t.start()
        assert inside.wait(5)
        try:
            with another_process():
                make = Creator()
                got = cache.get_or_set_many(KEYS[:4], make)
        finally:
            release.set()
            t.join(5)
    assert got == {"k0": "old", "k1": "new-k1", "k2": "new-k2", "k3": "new-k3"}
    assert make.calls == [["k1", "k2", "k3"]]  # k0 is another's to make
    assert cache.get("k0") == "other"


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_keys_the_creator_leaves_out_are_neither_stored_nor_returned(store):
    cache = make_cache(store, f"batch-out-{store}", timeout=10)
    cache.clear()
    make = Creator(leave_out={"k1"})
    assert cache.get_or_set_many(["k0", "k1", "k2"], make) == {"k0": "new-k0", "k2": "new-k2"}
    assert cache.get_or_set_many(["k0", "k1", "k2"], make) == {"k0": "new-k0", "k2": "new-k2"}
    assert make.calls == [["k0", "k1", "k2"], ["k1"]]  # asked again: never stored
    assert not cache.has_key("k1")


def test_keys_that_make_one_store_key_each_get_the_value():
    cache = make_cache("locmem", "batch-dup", timeout=10)
    cache.clear()
    seen = []

    def make(keys):
        seen.append(keys)
        return {k: "v" for k in keys}

    assert cache.get_or_set_many([1, "1", 2, 2], make) == {1: "v", "1": "v", 2: "v"}
    assert seen == [[1, 2]]  # one key per store key


def test_bad_creators_and_timeouts_are_clear_errors():
    cache = make_cache("locmem", "batch-bad", timeout=10)
    cache.clear()
    with pytest.raises(TypeError, match="must return a dict of the keys it was given, not list"):
        cache.get_or_set_many(["a"], lambda keys: [1])
    with pytest.raises(TypeError, match="creator must be a callable"):
        cache.get_or_set_many(["a"], {"a": 1})
    with pytest.raises(TypeError, match="'batch-bad'|DogpileCache"):
        cache.get_or_set_many(["a"], Creator(), timeout="10")
    # nothing was left locked or stored by the errors
    assert cache.get_or_set_many(["a"], Creator()) == {"a": "new-a"}


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_creator_that_raises_stores_nothing_and_releases_every_lock(store):
    cache = make_cache(store, f"batch-raise-{store}", timeout=10, WAIT_TIMEOUT=2)
    cache.clear()

    def boom(keys):
        raise RuntimeError("partner down")

    with pytest.raises(RuntimeError, match="partner down"):
        cache.get_or_set_many(KEYS[:5], boom)
    assert cache.get_many(KEYS[:5]) == {}
    started = time.monotonic()
    assert cache.get_or_set_many(KEYS[:5], Creator()) == {k: f"new-{k}" for k in KEYS[:5]}
    assert time.monotonic() - started < 1  # no lock left to wait for


def test_serve_stale_on_error_serves_every_stale_key():
    cache = make_cache("locmem", "batch-stale-err", timeout=10, SERVE_STALE_ON_ERROR=True)
    cache.clear()
    with Clock() as clock:
        cache.set_many({k: "old" for k in KEYS[:3]})
        clock.advance(11)

        def boom(keys):
            raise RuntimeError("down")

        assert cache.get_or_set_many(KEYS[:3], boom) == {k: "old" for k in KEYS[:3]}
        # a missing key among them: nothing stale to serve for it, so the error
        with pytest.raises(RuntimeError):
            cache.get_or_set_many([*KEYS[:3], "new"], boom)


@pytest.mark.parametrize("store", THREE)
def test_results_that_decide_their_own_fate(store):
    cache = make_cache(store, f"batch-fate-{store}", timeout=100)
    cache.clear()

    def make(keys):
        return {
            "short": CacheResult("s", timeout=5),
            "kept": "k",
            "unstored": CacheResult("u", store=False),
        }

    assert cache.get_or_set_many(["short", "kept", "unstored"], make) == {
        "short": "s",
        "kept": "k",
        "unstored": "u",
    }
    assert not cache.has_key("unstored")
    with Clock() as clock:
        clock.advance(6)
        assert cache.get_many(["short", "kept"]) == {"kept": "k"}  # short: stale

    def none_kept(keys):
        dont_store()  # for every value of this call
        return {k: "x" for k in keys}

    assert cache.get_or_set_many(["a", "b"], none_kept) == {"a": "x", "b": "x"}
    assert cache.get_many(["a", "b"]) == {}

    def brief(keys):
        expires_in(2)
        return {k: "y" for k in keys}

    cache.get_or_set_many(["c"], brief)
    with Clock() as clock:
        clock.advance(3)
        assert cache.get("c") is None


def test_timeout_zero_makes_for_the_caller_and_stores_nothing():
    cache = make_cache("locmem", "batch-zero", timeout=10)
    cache.clear()
    make = Creator()
    assert cache.get_or_set_many(["a", "b"], make, timeout=0) == {"a": "new-a", "b": "new-b"}
    assert cache.get_many(["a", "b"]) == {}


def test_tags_stamp_every_value_and_invalidate_them():
    cache = make_cache("redis", "batch-tags", timeout=100)
    cache.clear()
    make = Creator()
    cache.get_or_set_many(["a", "b"], make, tags=["products"])
    cache.invalidate_tags("products")
    assert cache.get_many(["a", "b"]) == {}  # stale behind the tag
    again = Creator(prefix="again")
    assert cache.get_or_set_many(["a", "b"], again) == {"a": "again-a", "b": "again-b"}
    assert again.calls == [["a", "b"]]
    cache.invalidate_tags("products")  # they kept the tags of the values they replaced
    assert cache.get_many(["a", "b"]) == {}


# --- round trips, counted by the servers ----------------------------------------


def test_redis_fifty_keys_on_a_hit_are_one_mget(redis_server):
    from tests.stores.test_redis import Monitor

    cache = make_cache("redis", "batch-trips", timeout=100)
    cache.clear()
    cache.get_or_set_many(KEYS, Creator())
    monitor = Monitor(redis_server.port)
    try:
        raw = make_cache("redis", "x").store.client.get_client(write=True)
        raw.execute_command("PING", "start-batch")
        monitor.commands("start-batch")
        assert len(cache.get_or_set_many(KEYS, Creator())) == 50
        raw.execute_command("PING", "end-batch")
        assert monitor.commands("end-batch") == ["MGET"]
    finally:
        monitor.close()


def test_redis_native_async_fifty_keys_on_a_hit_are_one_mget(redis_server):
    from tests.stores.test_redis import Monitor

    cache = make_cache("redis", "batch-atrips", timeout=100)
    cache.clear()
    cache.get_or_set_many(KEYS, Creator())
    monitor = Monitor(redis_server.port)

    async def creator(keys):
        raise AssertionError("a hit calls no creator")

    async def main():
        await cache.aget_or_set_many(KEYS[:1], creator)  # the loop's connection, made
        raw.execute_command("PING", "start-batch")
        monitor.commands("start-batch")
        got = await cache.aget_or_set_many(KEYS, creator)
        raw.execute_command("PING", "end-batch")
        return got

    try:
        raw = make_cache("redis", "x").store.client.get_client(write=True)
        assert asyncio.run(main()) == {k: f"new-{k}" for k in KEYS}
        assert monitor.commands("end-batch") == ["MGET"]
    finally:
        monitor.close()


@pytest.mark.memcached
def test_memcached_fifty_keys_on_a_hit_are_one_get(memcached_server):
    with counted_memcached(memcached_server.port) as proxy:
        cache = make_cache("mc_counted", "batch-mc", timeout=100)
        cache.get_or_set_many(KEYS, Creator())
        proxy.sent.clear()
        assert len(cache.get_or_set_many(KEYS, Creator())) == 50
        assert one_multi_get(proxy, 50), proxy.sent


# --- single flight per key, across processes ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("store", stores("redis", "memcached"))
@pytest.mark.parametrize("start", ["cold", "stale"])
def test_each_key_made_once_across_four_processes(store, start, tmp_path):
    """4 processes x 2 threads ask for the same 30 keys at once (half of
    them in reverse order): each key is made once, every caller gets every
    key, and no creator call is made for a key another caller made."""
    keys = [f"p{i}" for i in range(30)]
    prefix = f"batch-procs-{store}-{start}"
    cache = make_cache(store, prefix, timeout=1)
    cache.clear()
    if start == "stale":
        cache.set_many({k: "old" for k in keys})
        time.sleep(1.1)  # stale, still servable (GRACE)
    log = tmp_path / "made.log"
    results = SPAWN.Queue()
    start_at = time.time() + 3
    options = {"LOCK_TIMEOUT": 10}
    procs = [
        SPAWN.Process(
            target=batch_keys, args=(store, prefix, keys, start_at, 0.3, str(log), options, results)
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    answers = [answer for out in outcomes for answer in out]
    assert all(isinstance(a, dict) for a in answers), answers
    made = Counter(key for line in log.read_text().splitlines() for key in line.split())
    assert made == Counter({key: 1 for key in keys})
    for answer in answers:
        assert set(answer) == set(keys)
        assert all(v == "old" or v.startswith("new-") for v in answer.values()), answer
        if start == "cold":
            assert answer == {k: f"new-{k}" for k in keys}  # waited, never a duplicate
    assert cache.get_many(keys) == {k: f"new-{k}" for k in keys}


@pytest.mark.parametrize("store", stores("locmem", "redis", "memcached"))
def test_a_key_made_between_the_read_and_the_claim_is_not_made_again(store):
    """The race the 4 processes rarely hit: this caller read no record, and
    another caller made and stored it before this one took the lock."""
    cache = make_cache(store, f"batch-between-{store}", timeout=10)
    cache.clear()
    cache.set("k0", "made-elsewhere")
    make = Creator()
    read_before = {}  # what this caller's read found: nothing
    assert cache.batch.run(["k0", "k1"], make, 10, None, (), read_before) == {
        "k0": "made-elsewhere",
        "k1": "new-k1",
    }
    assert make.calls == [["k1"]]


# --- what a review found --------------------------------------------------------


def test_each_key_keeps_the_tags_of_the_value_it_replaces():
    """Untagged, a stale key is stamped with its own old tags only (not the
    union of the batch's): invalidating one key's tag leaves the others."""
    cache = make_cache("locmem", "batch-own-tags", timeout=10)
    cache.clear()
    with Clock() as clock:
        cache.set("A", "A0", tags=["ta"])
        cache.set("B", "B0", tags=["tb"])
        clock.advance(11)
        assert cache.get_or_set_many(["A", "B", "M"], Creator()) == {"A": "new-A", "B": "new-B", "M": "new-M"}
        cache.invalidate_tags("tb")
        assert cache.get_many(["A", "B", "M"]) == {"A": "new-A", "M": "new-M"}
        cache.invalidate_tags("ta")
        assert cache.get_many(["A", "B", "M"]) == {"M": "new-M"}


def test_async_checks_the_creator_as_the_sync_call_does():
    cache = make_cache("locmem", "batch-acheck", timeout=10)
    cache.clear()
    cache.set("hit", 1)
    with pytest.raises(TypeError, match="creator must be a callable"):
        asyncio.run(cache.aget_or_set_many(["hit"], {"hit": 1}))
    with pytest.raises(TypeError, match="creator must be a callable"):
        asyncio.run(cache.aget_or_set_many(["miss"], None))


def test_unhashable_keys_are_a_clear_error_before_any_creator_call():
    cache = make_cache("locmem", "batch-hash", timeout=10)
    make = Creator()
    for call in (
        lambda: cache.get_or_set_many([[3, 4], "ok"], make),
        lambda: asyncio.run(cache.aget_or_set_many([[3, 4], "ok"], make)),
    ):
        with pytest.raises(TypeError, match=r"keys must be hashable .* not \[3, 4\]"):
            call()
    assert make.calls == []


def test_a_creator_that_returns_no_dict_raises_even_with_stale_values_to_serve():
    cache = make_cache("locmem", "batch-nodict", timeout=10, SERVE_STALE_ON_ERROR=True)
    cache.clear()
    with Clock() as clock:
        cache.set_many({"a": 1, "b": 2})
        clock.advance(11)
        before = cache.binding.stats.snapshot()["ERRORS"]
        with pytest.raises(TypeError, match="must return a dict"):
            cache.get_or_set_many(["a", "b"], lambda keys: [1, 2])
        assert cache.binding.stats.snapshot()["ERRORS"] == before  # a bug, not a failure


def test_async_waits_for_another_callers_key_on_the_loop(redis_server):
    """A batch waiting for a key another process makes does not hold up the
    other coroutines' cache calls (it waits on the loop, as aget_or_set does)."""
    cache = make_cache("redis", "batch-await", timeout=10)
    cache.clear()
    cache.set("y", "y0")
    inside, release = threading.Event(), threading.Event()

    def slow():
        inside.set()
        release.wait(10)
        return "x-made"

    t = threading.Thread(target=lambda: cache.get_or_set("x", slow))
    t.start()
    assert inside.wait(5)
    done = []

    async def batch():
        got = await cache.aget_or_set_many(["x"], Creator())
        done.append("batch")
        return got

    async def other():
        await asyncio.sleep(0.05)
        got = await cache.aget_or_set_many(["y"], Creator())  # a hit: on the loop
        _, status = await cache.aget_or_set_status("z", lambda: "z0")  # a miss: in the thread
        assert status == "MISS"
        done.append("other")
        threading.Timer(0.3, release.set).start()
        return got

    async def main():
        return await asyncio.gather(batch(), other())

    try:
        with another_process():
            first, second = asyncio.run(main())
    finally:
        release.set()
        t.join(5)
    assert first == {"x": "x-made"}  # waited, served what the holder made
    assert done == ["other", "batch"]
