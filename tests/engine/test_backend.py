"""DogpileCache: Django's cache contract and the dogpile behaviour, per store.

The same classes run over locmem, a real redis-server and the file cache.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import warnings

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.core.exceptions import ImproperlyConfigured

from django_dogpile import records, signals
from django_dogpile.cache import DogpileCache
from django_dogpile.exceptions import UncacheableValue
from django_dogpile.stats import get_stats, reset_stats
from django_dogpile.testing import Clock, assert_single_regeneration, run_concurrently


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling here")


class Counter:
    def __init__(self, value="v", delay=0.0, fail=False):
        self.calls = 0
        self.value, self.delay, self.fail = value, delay, fail
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("creator failed")
            return f"{self.value}{self.calls}"
        finally:
            with self.lock:
                self.active -= 1


class ContractTests:
    """Django's BaseCache semantics, as Django's own backends have them."""

    alias: str
    store: str

    @pytest.fixture(autouse=True)
    def _cache(self, request):
        if "redis" in self.store:
            request.getfixturevalue("redis_server")
        self.cache = caches[self.alias]
        self.cache.clear()
        reset_stats()
        yield
        self.cache.clear()

    def variant(self, timeout=300, **options):
        options.setdefault("LOCK_TIMEOUT", 5)
        return DogpileCache(self.store, {"TIMEOUT": timeout, "KEY_PREFIX": "variant", "OPTIONS": options})

    def test_get_set_default(self):
        c = self.cache
        assert c.get("missing") is None
        assert c.get("missing", "dflt") == "dflt"
        c.set("k", "v")
        assert c.get("k") == "v"
        c.set("none", None)
        assert c.get("none", "dflt") is None
        assert c.has_key("none")

    def test_values_of_any_picklable_type(self):
        value = {"a": [1, 2.5, b"x"], "d": datetime.date(2026, 1, 1), "t": (1, None)}
        self.cache.set("k", value)
        assert self.cache.get("k") == value
        self.cache.set("tuple", (1, 2, 3, 4))  # looks like a record, is a value
        assert self.cache.get("tuple") == (1, 2, 3, 4)

    def test_unpicklable_value_is_a_clear_error(self):
        with pytest.raises(UncacheableValue, match="'bad'"):
            self.cache.set("bad", Unpicklable())
        with pytest.raises(TypeError):
            self.cache.get_or_set("bad2", Unpicklable)

    def test_timeouts(self):
        c = self.cache
        with Clock() as clock:
            c.set("forever", 1, timeout=None)
            c.set("short", 1, timeout=10)
            c.set("zero", 1, timeout=0)
            c.set("negative", 1, timeout=-1)
            assert c.get("zero") is None and c.get("negative") is None
            assert c.get("short") == 1
            clock.advance(11)
            assert c.get("short") is None
            assert not c.has_key("short")
            assert c.get("forever") == 1
            clock.advance(10**6)
            assert c.get("forever") == 1

    def test_default_timeout_is_the_alias_timeout(self):
        c = self.variant(timeout=5)
        with Clock() as clock:
            c.set("k", 1)
            clock.advance(4)
            assert c.get("k") == 1
            clock.advance(2)
            assert c.get("k") is None

    def test_add(self):
        c = self.cache
        assert c.add("k", 1)
        assert not c.add("k", 2)
        assert c.get("k") == 1
        with Clock() as clock:
            c.set("s", 1, timeout=1)
            clock.advance(2)
            assert c.add("s", 2)  # a stale value counts as absent
            assert c.get("s") == 2

    def test_delete(self):
        c = self.cache
        c.set("k", 1)
        assert c.delete("k") is True
        assert c.delete("k") is False
        assert c.get("k") is None

    def test_many(self):
        c = self.cache
        assert c.set_many({"a": 1, "b": 2, "c": None}) == []
        assert c.get_many(["a", "b", "c", "x"]) == {"a": 1, "b": 2, "c": None}
        c.delete_many(["a", "c"])
        assert c.get_many(["a", "b", "c"]) == {"b": 2}
        assert c.get_many([]) == {}
        with Clock() as clock:
            c.set_many({"s": 1}, timeout=1)
            clock.advance(2)
            assert c.get_many(["s", "b"]) == {"b": 2}

    def test_incr_decr(self):
        c = self.cache
        with pytest.raises(ValueError):
            c.incr("missing")
        c.set("n", 1)
        assert c.incr("n") == 2
        assert c.incr("n", 10) == 12
        assert c.decr("n") == 11
        assert c.decr("n", 5) == 6
        assert c.get("n") == 6
        with Clock() as clock:
            c.set("t", 1, timeout=10)
            clock.advance(6)
            c.incr("t")
            clock.advance(6)
            assert c.get("t") is None  # incr keeps the expiry

    def test_concurrent_incr_loses_no_update(self):
        c = self.cache
        c.set("counter", 0)
        per_thread = 60 if self.store == "locmem" else 15

        def bump(i):
            cache = caches[self.alias]  # each thread its own instance
            for _ in range(per_thread):
                cache.incr("counter")

        run_concurrently(8, bump)
        assert c.get("counter") == 8 * per_thread

    def test_invalidate_and_touch_never_resurrect_an_older_value(self):
        """A regeneration landing while invalidate/touch run is not undone."""
        c = self.cache
        with Clock() as clock:
            c.set("r", "old", timeout=10)
            clock.advance(11)
            in_creator, go = threading.Event(), threading.Event()

            def slow_new():
                in_creator.set()
                go.wait(5)
                return "new"

            t = threading.Thread(target=lambda: c.get_or_set("r", slow_new, timeout=10))
            t.start()
            assert in_creator.wait(5)
            threading.Timer(0.2, go.set).start()
            assert c.invalidate("r")  # waits for the regeneration, then marks "new" stale
            t.join(5)
            record = c.store.get(c.make_and_validate_key("r"))
            assert record[0] == "new" and record[2] <= records.now()
            c.set("t", "v1", timeout=10)
            assert c.touch("t", 100)
            clock.advance(50)
            assert c.get("t") == "v1"

    def test_touch(self):
        c = self.cache
        assert c.touch("missing") is False
        with Clock() as clock:
            c.set("k", 1, timeout=10)
            assert c.touch("k", 100)
            clock.advance(50)
            assert c.get("k") == 1
            assert c.touch("k", None)
            clock.advance(10**5)
            assert c.get("k") == 1
            assert c.touch("k", 0)
            assert c.get("k") is None

    def test_versions(self):
        c = self.cache
        c.set("k", 1, version=2)
        assert c.get("k") is None
        assert c.get("k", version=2) == 1
        assert c.incr_version("k", version=2) == 3
        assert c.get("k", version=2) is None
        assert c.get("k", version=3) == 1
        assert c.decr_version("k", version=3) == 2
        assert c.get("k", version=2) == 1
        with pytest.raises(ValueError):
            c.incr_version("missing")

    def test_key_prefix_and_function_apply(self):
        c = DogpileCache(
            self.store,
            {"KEY_PREFIX": "pfx", "VERSION": 7, "KEY_FUNCTION": lambda k, p, v: f"custom|{p}|{v}|{k}"},
        )
        assert c.make_key("k") == "custom|pfx|7|k"
        c.set("k", 1)
        assert caches[self.store].get("custom|pfx|7|k")[0] == 1
        assert self.cache.get("k") is None

    def test_key_warnings_as_django(self):
        with pytest.warns(CacheKeyWarning):
            self.cache.set("has space", 1)
        with pytest.warns(CacheKeyWarning):
            self.cache.get("x" * 260)
        # the made-key memo must not swallow the warning on later calls
        for _ in range(3):
            with pytest.warns(CacheKeyWarning):
                self.cache.get_or_set("has space", 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.cache.get_or_set("clean", 1)
            self.cache.get_or_set("clean", 1)

    def test_unhashable_and_versioned_keys_on_the_hit_path(self):
        c = self.cache
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheKeyWarning)
            assert c.get_or_set(["list", "key"], "a") == "a"
            assert c.get_or_set(["list", "key"], "b") == "a"
        assert c.get_or_set("v", "one", version=1) == "one"
        assert c.get_or_set("v", "two", version=2) == "two"
        assert c.get_or_set("v", "x") == "one"  # VERSION 1 is the default
        assert c.get("v", version=2) == "two"

    def test_get_or_set(self):
        c = self.cache
        assert c.get_or_set("k", "v") == "v"
        assert c.get_or_set("k", "other") == "v"
        assert c.get_or_set("c", lambda: 42) == 42
        assert c.get_or_set("none", None) is None
        assert c.has_key("none")
        assert c.get_or_set("zero", lambda: "z", timeout=0) == "z"
        assert not c.has_key("zero")

    def test_clear(self):
        self.cache.set("k", 1)
        self.cache.clear()
        assert self.cache.get("k") is None

    def test_async_variants(self):
        c = self.cache

        async def main():
            await c.aset("k", 1)
            assert await c.aget("k") == 1
            assert await c.ahas_key("k")
            assert not await c.aadd("k", 2)
            assert await c.aincr("k") == 2
            assert await c.adecr("k") == 1
            assert await c.atouch("k", 100)
            await c.aset_many({"a": 1, "b": 2})
            assert await c.aget_many(["a", "b"]) == {"a": 1, "b": 2}
            await c.adelete_many(["a"])
            assert await c.aget("a") is None
            assert await c.aincr_version("b") == 2
            assert await c.aget("b", version=2) == 2
            assert await c.adecr_version("b", version=2) == 1
            assert await c.ainvalidate("k")
            assert await c.aget("k") is None
            assert await c.adelete("b")
            assert await c.aget_or_set("g", lambda: "sync") == "sync"

            async def make():
                await asyncio.sleep(0)
                return "async"

            assert await c.aget_or_set("h", make) == "async"
            await c.aclear()
            assert await c.aget("h") is None
            await c.aclose()

        asyncio.run(main())

    # --- the dogpile path --------------------------------------------------

    def test_invalidate_is_soft(self):
        c = self.cache
        assert c.invalidate("missing") is False
        c.set("k", "old")
        assert c.invalidate("k") is True
        assert c.get("k") is None
        make = Counter("new")
        assert c.get_or_set("k", make) == "new1"
        assert c.get_or_set("k", make) == "new1"
        assert make.calls == 1

    def test_stale_value_regenerated_once(self):
        c = self.cache
        with Clock() as clock:
            c.set("k", "old", timeout=10)
            clock.advance(11)
            assert c.get("k") is None
            make = Counter("new")
            assert c.get_or_set("k", make, timeout=10) == "new1"
            assert c.get("k") == "new1"
            clock.advance(10 + 600 + 1)  # past the grace period: gone
            assert c.get_or_set("k", make, timeout=10) == "new2"

    @pytest.mark.slow
    def test_cold_key_one_creator_everyone_gets_it(self):
        make = Counter("first", delay=0.3)
        results = assert_single_regeneration(self.cache, "cold", make, callers=12)
        assert results == ["first1"] * 12
        stats = get_stats(self.cache.alias)
        assert stats["REGENERATIONS"] == 1
        assert stats["MISS"] == 12
        assert stats["WAITS"] >= 1

    @pytest.mark.slow
    def test_stale_key_one_creator_others_served_at_once(self):
        c = self.cache
        with Clock() as clock:
            c.set("k", "old", timeout=10)
            clock.advance(11)
            make = Counter("new", delay=0.5)

            def call(i):
                t0 = time.monotonic()
                return c.get_or_set("k", make, timeout=10), time.monotonic() - t0

            results = run_concurrently(12, call)
        assert make.calls == 1 and make.max_active == 1
        stale = [r for r in results if r[0] == "old"]
        assert len(stale) == 11
        assert all(t < 0.3 for _, t in stale)
        stats = get_stats(c.alias)
        assert stats["UPDATING"] == 11 and stats["EXPIRED"] == 1

    @pytest.mark.slow
    def test_creator_error_reaches_only_the_regenerating_caller(self):
        c = self.cache
        with Clock() as clock:
            c.set("k", "old", timeout=10)
            clock.advance(11)
            make = Counter(delay=0.3, fail=True)

            def call(i):
                try:
                    return c.get_or_set("k", make)
                except RuntimeError:
                    return "raised"

            results = run_concurrently(8, call)
            assert make.calls == 1
            assert results.count("raised") == 1 and results.count("old") == 7
            # the lock was released: the next caller regenerates
            assert c.get_or_set("k", Counter("ok")) == "ok1"
        assert get_stats(c.alias)["ERRORS"] == 1

    def test_retry_after_a_failed_regeneration(self):
        c = self.variant(RETRY_AFTER=0.4, SERVE_STALE_ON_ERROR=True, timeout=10)
        with Clock() as clock:
            c.set("r", "old")
            clock.advance(11)
            failing = Counter(fail=True)
            assert c.get_or_set_status("r", failing) == ("old", "STALE")
            # for RETRY_AFTER seconds nobody retries: the stale value is served
            retry = Counter("new")
            assert [c.get_or_set("r", retry) for _ in range(5)] == ["old"] * 5
            assert retry.calls == 0 and failing.calls == 1
            time.sleep(0.45)
            assert c.get_or_set("r", retry) == "new1"
            assert retry.calls == 1

    def test_retry_after_zero_retries_at_once(self):
        c = self.variant(RETRY_AFTER=0, SERVE_STALE_ON_ERROR=True, timeout=10)
        with Clock() as clock:
            c.set("r", "old")
            clock.advance(11)
            assert c.get_or_set("r", Counter(fail=True)) == "old"
            assert c.get_or_set("r", Counter("new")) == "new1"

    def test_serve_stale_on_error(self):
        c = self.variant(SERVE_STALE_ON_ERROR=True)
        failed = []
        signals.regeneration_failed.connect(
            lambda sender, **kw: failed.append(kw["key"]), weak=False, dispatch_uid="t1"
        )
        try:
            with Clock() as clock:
                c.set("k", "old", timeout=10)
                clock.advance(11)
                assert c.get_or_set("k", Counter(fail=True)) == "old"
                assert c.get_or_set("k", Counter("new")) == "new1"
                with pytest.raises(RuntimeError):
                    c.get_or_set("cold", Counter(fail=True))
        finally:
            signals.regeneration_failed.disconnect(dispatch_uid="t1")
        assert failed == ["k", "cold"]
        assert get_stats(c.alias)["STALE"] == 1

    @pytest.mark.slow
    def test_background_regeneration(self):
        c = self.variant(BACKGROUND=True, BACKGROUND_WORKERS=2)
        with Clock() as clock:
            c.set("bg", "old", timeout=10)
            clock.advance(11)
            make = Counter("new", delay=0.3)
            results = run_concurrently(8, lambda i: c.get_or_set("bg", make, timeout=10))
            assert results == ["old"] * 8  # even the winner returns at once
            deadline = time.monotonic() + 5
            while c.get("bg") is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.get("bg") == "new1"
            assert make.calls == 1

    def test_background_regeneration_renders_in_the_callers_language_and_zone(self):
        from django.utils import timezone, translation

        c = self.variant(BACKGROUND=True)
        seen = []
        done = threading.Event()
        signals.value_regenerated.connect(
            lambda sender, **kw: kw["key"] == "i18n" and done.set(), weak=False, dispatch_uid="t4"
        )

        def make():
            seen.append((translation.get_language(), timezone.get_current_timezone_name()))
            return "new"

        try:
            with Clock() as clock:
                c.set("i18n", "old", timeout=10)
                clock.advance(11)
                with translation.override("fr"), timezone.override("Asia/Tokyo"):
                    assert c.get_or_set("i18n", make, timeout=10) == "old"
                assert done.wait(5)
        finally:
            signals.value_regenerated.disconnect(dispatch_uid="t4")
        assert seen == [("fr", "Asia/Tokyo")]

    def test_background_regeneration_closes_its_database_connection(self):
        from django.db import connections  # CONN_MAX_AGE is Django's default, 0

        c = self.variant(BACKGROUND=True)
        opened = []
        done = threading.Event()
        signals.value_regenerated.connect(  # this key's: other tests' may still land
            lambda sender, **kw: kw["key"] == "db" and done.set(), weak=False, dispatch_uid="t3"
        )

        def make():
            conn = connections["files"]  # this pool thread's own connection
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            opened.append(conn)
            return "new"

        try:
            with Clock() as clock:
                c.set("db", "old", timeout=10)
                clock.advance(11)
                assert c.get_or_set("db", make, timeout=10) == "old"
                assert done.wait(5)
                deadline = time.monotonic() + 5
                while opened[0].connection is not None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert opened[0].connection is None  # closed after the work
        finally:
            signals.value_regenerated.disconnect(dispatch_uid="t3")

    @pytest.mark.slow
    def test_wait_timeout_computes_without_storing(self):
        c = self.variant(WAIT_TIMEOUT=0.2, LOCK_TIMEOUT=5)
        slow = Counter("slow", delay=1.0)
        t = threading.Thread(target=lambda: c.get_or_set("k", slow))
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        assert c.get_or_set("k", lambda: "impatient") == "impatient"
        assert time.monotonic() - t0 < 0.8
        t.join()
        assert c.get("k") == "slow1"  # the impatient value was not stored
        assert get_stats(c.alias)["WAIT_TIMEOUTS"] == 1

    def test_early_refresh_regenerates_before_expiry(self):
        # cost >= 10 ms x beta 1e9: the XFetch draw lands past a 100 s expiry
        # unless random() > 1 - 1e-5 (1e6 only made that 1 %: seen flaking)
        c = self.variant(EARLY_REFRESH=1e9)
        make = Counter("v", delay=0.01)
        with Clock():
            c.get_or_set("k", make, timeout=100)
            c.get_or_set("k", make, timeout=100)
        assert make.calls == 2
        plain = self.variant()
        make2 = Counter("v", delay=0.01)
        plain.get_or_set("k2", make2, timeout=100)
        plain.get_or_set("k2", make2, timeout=100)
        assert make2.calls == 1

    @pytest.mark.slow
    def test_async_callers_share_one_regeneration_and_loop_stays_free(self):
        c = self.cache
        calls = []

        async def make():
            calls.append(1)
            await asyncio.sleep(0.3)
            return "made"

        async def main():
            ticks = 0
            stop = asyncio.Event()

            async def ticker():
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            tick = asyncio.create_task(ticker())
            results = await asyncio.gather(*(c.aget_or_set("ak", make) for _ in range(10)))
            stop.set()
            await tick
            return results, ticks

        results, ticks = asyncio.run(main())
        assert results == ["made"] * 10
        assert len(calls) == 1
        assert ticks >= 10  # the loop ran while the value was being made

    def test_signals_and_stats(self):
        c = self.cache
        seen = []

        def rec(name):  # this alias only: a background regeneration may still land
            return lambda sender, **kw: kw["alias"] == c.alias and seen.append((name, kw["key"]))

        receivers = {
            "regenerated": rec("regenerated"),
            "stale": rec("stale"),
        }
        signals.value_regenerated.connect(receivers["regenerated"])
        signals.stale_served.connect(receivers["stale"])
        try:
            c.get_or_set("k", "v")
            assert c.get_or_set("k", "w") == "v"
        finally:
            signals.value_regenerated.disconnect(receivers["regenerated"])
            signals.stale_served.disconnect(receivers["stale"])
        assert seen == [("regenerated", "k")]
        stats = get_stats(c.alias)
        assert stats["HIT"] == 1 and stats["MISS"] == 1 and stats["REGENERATIONS"] == 1

    def test_hit_counter_is_exact_under_threads_and_resets(self):
        c = self.cache
        c.set("k", "v")
        reset_stats(c.alias)
        per_thread = 200 if self.store == "locmem" else 25

        def hammer():
            cache = caches[self.alias]  # each thread its own instance
            for _ in range(per_thread):
                assert cache.get_or_set("k", "w") == "v"

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert get_stats(c.alias)["HIT"] == 8 * per_thread
        reset_stats(c.alias)
        assert get_stats(c.alias)["HIT"] == 0
        c.get_or_set("k", "w")
        assert get_stats(c.alias)["HIT"] == 1


class TestLocmem(ContractTests):
    alias, store = "dp_locmem", "locmem"


@pytest.mark.redis
class TestRedis(ContractTests):
    alias, store = "dp_redis", "redis"


class TestFile(ContractTests):
    alias, store = "dp_file", "file"


def test_bad_configuration_is_a_clear_error():
    # raised on first use, so that `manage.py check` can report it first
    with pytest.raises(ImproperlyConfigured, match="GRACE.*E005"):
        DogpileCache("locmem", {"OPTIONS": {"GRACE": "ten"}}).get("k")
    with pytest.raises(ImproperlyConfigured, match="LOCK_TIMEOUT"):
        DogpileCache("locmem", {"OPTIONS": {"LOCK_TIMEOUT": 0}}).get_or_set("k", 1)
    with pytest.raises(ImproperlyConfigured, match="Unknown OPTIONS"):
        DogpileCache("locmem", {"OPTIONS": {"GRAVE": 1}}).set("k", 1)
    with pytest.raises(ImproperlyConfigured, match="TIMEOUT"):
        DogpileCache("locmem", {"TIMEOUT": "soon"}).get("k")
    with pytest.raises(ImproperlyConfigured, match="LOCK_TIMEOUT.*finite"):
        DogpileCache("locmem", {"OPTIONS": {"LOCK_TIMEOUT": float("inf")}}).get("k")


def test_settings_read_as_django_reads_them():
    """TIMEOUT from an environment variable is a string; Django int()s it."""
    assert DogpileCache("locmem", {"TIMEOUT": "1"}).default_timeout == 1
    assert DogpileCache("locmem", {"TIMEOUT": "2.5"}).default_timeout == 2.5
    assert DogpileCache("locmem", {"TIMEOUT": float("inf")}).default_timeout is None
    # BaseCache's own options are accepted (a check warns they act on the store)
    c = DogpileCache("locmem", {"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}})
    c.set("k", 1)
    assert c.get("k") == 1


def test_get_many_keeps_keys_that_make_the_same_store_key_distinct():
    c = caches["dp_locmem"]
    c.set("1", "one")
    assert c.get_many([1, "1"]) == {1: "one", "1": "one"}
    from django.core.cache import caches as all_caches

    all_caches["locmem"].set("1", "one")
    assert all_caches["locmem"].get_many([1, "1"]) == {1: "one", "1": "one"}
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        DogpileCache("", {}).get("k")
    with pytest.raises(ImproperlyConfigured, match="is not a cache alias"):
        DogpileCache("nope", {}).get("k")
    with pytest.raises(ImproperlyConfigured, match="DogpileCache itself"):
        DogpileCache("dp_locmem", {}).get("k")


def test_nothing_cached_is_lost_by_a_bad_call():
    c = caches["dp_locmem"]
    c.set("keep", 1)
    with pytest.raises(UncacheableValue):
        c.set("keep", Unpicklable())
    assert c.get("keep") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        c.set("bad key", 2)
    assert c.get("keep") == 1


def test_key_stats_count_per_key_and_stay_bounded():
    from django_dogpile.stats import get_key_stats

    c = DogpileCache("locmem", {"TIMEOUT": 10, "KEY_PREFIX": "ks", "OPTIONS": {"KEY_STATS": 3}})
    reset_stats(c.alias)
    with Clock() as clock:
        c.get_or_set("a", "1")
        c.get_or_set("a", "x")
        c.get_or_set("a", "x")
        clock.advance(11)
        c.get_or_set("a", "2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheKeyWarning)
            c.get_or_set(["un", "hashable"], "3")
    rows = get_key_stats(c.alias)
    a = rows["a"]
    assert (a["MISS"], a["HIT"], a["EXPIRED"], a["REGENERATIONS"]) == (1, 2, 1, 2)
    assert a["last_regeneration"] is not None
    assert rows["['un', 'hashable']"]["MISS"] == 1
    for key in "bcd":
        c.get_or_set(key, key)
    assert set(get_key_stats(c.alias)) == {"b", "c", "d"}  # the 3 most recent
    assert get_stats(c.alias)["REGENERATIONS"] == 6
    reset_stats(c.alias)
    assert get_key_stats(c.alias) == {}


def test_key_stats_off_by_default():
    from django_dogpile.stats import get_key_stats

    c = caches["dp_locmem"]
    c.get_or_set("off", 1)
    assert get_key_stats(c.alias) == {}


def test_tuple_keys_never_meet_the_versioned_key_memo():
    c = caches["dp_locmem"]
    c.clear()
    assert c.get_or_set("k", "v2", version=2) == "v2"  # memoised as ("k", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        assert c.get_or_set(("k", 2), "tuple") == "tuple"  # a different key
    assert c.get("k", version=2) == "v2"


def test_read_modify_write_waits_for_a_regeneration_at_most_wait_timeout():
    from django_dogpile.exceptions import WaitTimeout

    c = DogpileCache("locmem", {"TIMEOUT": 10, "KEY_PREFIX": "rmw", "OPTIONS": {"WAIT_TIMEOUT": 0.2}})
    c.set("n", 1)
    with Clock() as clock:
        clock.advance(11)
        entered, go = threading.Event(), threading.Event()

        def slow():
            entered.set()
            go.wait(5)
            return 5

        t = threading.Thread(target=lambda: c.get_or_set("n", slow))
        t.start()
        try:
            assert entered.wait(5)
            with pytest.raises(WaitTimeout, match="stayed locked"):
                c.touch("n", 100)
        finally:
            go.set()
            t.join(5)
        assert c.incr("n") == 6  # the regeneration landed first, then the increment
