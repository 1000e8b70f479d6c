"""Helpers for your own test-suite.

:class:`Clock` moves the freshness clock of every DogpileCache forward
without sleeping::

    from django_dogpile.testing import Clock

    with Clock() as clock:
        cache.set("k", 1, timeout=60)
        clock.advance(61)
        assert cache.get("k") is None          # stale: a miss for get()

:func:`assert_single_regeneration` runs N concurrent callers of
``get_or_set`` on one key and checks that the creator ran exactly once::

    assert_single_regeneration(cache, "report", build_report, callers=16)

Only freshness and grace follow the clock; lock leases and the store's own
expiry run in real time.

:class:`StoreContract` is the store contract, as tests you run over your
own store::

    from django.test import TestCase
    from django_dogpile.testing import StoreContract

    class MyStoreContract(StoreContract, TestCase):
        store_alias = "mystore"        # a CACHES alias of your store

Each test builds a DogpileCache by hand over ``store_alias`` under a key
prefix of its own (your data is never touched; the keys it made are
deleted): Django's ``BaseCache`` semantics through the wrapper, one
regeneration for many callers of a stale key, the lease (held by one
process at a time, free once released or run out) and the fenced write (an
explicit write during a regeneration wins; a holder whose lease ran out and
was taken over does not write over its successor).  "Another process" is
:class:`another_process`: inside it the in-process locks are another
process's, so only the store's lease stands between two callers, as between
two workers.
"""

from __future__ import annotations

import threading
import time
import unittest
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from django.core.cache import caches

from django_dogpile import records
from django_dogpile.cache import LOCK_SUFFIX, DogpileCache
from django_dogpile.core import NameRegistry
from django_dogpile.engine import locks, memory

__all__ = ["Clock", "StoreContract", "another_process", "assert_single_regeneration", "run_concurrently"]


class Clock:
    """Replace :func:`django_dogpile.records.now` by real time + an offset."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._saved: Callable[[], float] | None = None

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset += seconds

    def __enter__(self) -> Clock:
        self._saved = records.now
        records.now = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            records.now = self._saved
            self._saved = None


def run_concurrently(n: int, fn: Callable[[int], Any], timeout: float = 60) -> list[Any]:
    """Call ``fn(i)`` for i in 0..n-1 in n threads released together.

    Return the results in order; re-raise the first exception a thread met.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"a caller was still running after {timeout}s")
    if errors:
        raise errors[0]
    return results


def assert_single_regeneration(
    cache: Any,
    key: str,
    creator: Callable[[], Any],
    callers: int = 16,
    timeout: Any = None,
    **get_or_set_kwargs: Any,
) -> list[Any]:
    """Run ``callers`` concurrent ``get_or_set`` calls; assert one creator call.

    :param cache: a DogpileCache (``caches["default"]``); each thread uses it
     as Django would.
    :param creator: the callable handed to ``get_or_set``.
    :return: what each caller got.
    """
    calls = []
    lock = threading.Lock()

    def counted() -> Any:
        with lock:
            calls.append(1)
        return creator()

    kwargs = dict(get_or_set_kwargs)
    if timeout is not None:
        kwargs["timeout"] = timeout
    results = run_concurrently(callers, lambda i: cache.get_or_set(key, counted, **kwargs))
    if len(calls) != 1:
        raise AssertionError(
            f"{len(calls)} regenerations of {key!r} by {callers} concurrent callers; expected exactly 1"
        )
    return results


class another_process:
    """Inside the block, this process's per-process memory is another
    process's: its in-process locks, retry holds and outage fallbacks.  So
    only the store (and its lease) stands between a caller inside and one
    outside, as between two workers."""

    def __enter__(self) -> another_process:
        self._locks = locks._registry
        self._holds = dict(memory.retry_after._until)
        self._kept = memory.fallbacks.snapshot()
        locks._registry = NameRegistry(locks.KeyLock)
        memory.retry_after.clear()
        memory.fallbacks.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        locks._registry = self._locks
        memory.retry_after.clear()
        memory.retry_after._until.update(self._holds)
        memory.fallbacks.restore(self._kept)


# the assertions come from the test case it is mixed into
_TestCase: Any = unittest.TestCase if TYPE_CHECKING else object


class StoreContract(_TestCase):
    """Mix into a Django test case and set :attr:`store_alias`."""

    #: the ``CACHES`` alias of the store under test
    store_alias: str = ""
    #: ``OPTIONS`` for the DogpileCache the tests build over it
    dogpile_options: dict[str, Any] = {}

    def dogpile(self, prefix: str = "", **options: Any) -> DogpileCache:
        """A DogpileCache over the store, with keys of this test's own
        (or of ``prefix``: another worker's backend over the same keys)."""
        if not self.store_alias:
            raise AssertionError("set store_alias to the CACHES alias of the store to test")
        prefix = prefix or f"contract-{uuid.uuid4().hex[:8]}"
        merged = {"LOCK_TIMEOUT": 5, **self.dogpile_options, **options}
        cache = DogpileCache(self.store_alias, {"TIMEOUT": 60, "KEY_PREFIX": prefix, "OPTIONS": merged})
        self._made = getattr(self, "_made", [])
        self._made.append(cache)
        return cache

    def tearDown(self) -> None:
        for cache in getattr(self, "_made", []):
            cache.delete_many(["k", "a", "b", "n", "gone", "stale", "lease", "fence"])
        super().tearDown()

    # --- Django's semantics through the wrapper ------------------------------

    def test_basecache_semantics(self) -> None:
        cache = self.dogpile()
        check = self.assertEqual
        cache.set("k", {"v": 1})
        check(cache.get("k"), {"v": 1})
        check(cache.add("k", "other"), False)
        check(cache.add("a", "first"), True)
        check(cache.get_many(["k", "a", "gone"]), {"k": {"v": 1}, "a": "first"})
        check(cache.set_many({"b": 2, "n": 10}), [])
        check(cache.incr("n", 5), 15)
        check(cache.touch("b", 30), True)
        check(cache.delete("a"), True)
        check(cache.has_key("a"), False)
        cache.delete_many(["b", "n"])
        check(cache.get_many(["b", "n"]), {})
        check(cache.get("gone", "default"), "default")

    def test_a_stale_value_is_served_while_one_caller_regenerates(self) -> None:
        cache = self.dogpile()
        calls: list[int] = []
        with Clock() as clock:
            cache.set("stale", "old", timeout=10)
            clock.advance(11)
            self.assertIsNone(cache.get("stale"))

            def create() -> str:
                calls.append(1)
                time.sleep(0.3)
                return "new"

            got = run_concurrently(8, lambda i: cache.get_or_set("stale", create, 60))
        self.assertEqual(len(calls), 1)
        self.assertEqual(sorted(set(got)), ["new", "old"])
        self.assertEqual(got.count("new"), 1)

    # --- the lease ------------------------------------------------------------

    def test_the_lease_is_held_by_one_process_at_a_time(self) -> None:
        cache = self.dogpile()
        skey = cache.make_and_validate_key("lease")
        mine = cache.binding.mutex(skey)
        self.assertTrue(mine.acquire(wait=False))
        try:
            if not mine.leased:
                from django_dogpile.stores.kinds import ONE_PROCESS, kind_of

                # an in-process store: the in-process lock is the lease
                self.assertEqual(
                    kind_of(caches[self.store_alias]).reach, ONE_PROCESS, "no lease reaches another process"
                )
                return
            with another_process():
                theirs = cache.binding.mutex(skey)
                self.assertFalse(theirs.acquire(wait=False))
        finally:
            mine.release()
        with another_process():
            theirs = cache.binding.mutex(skey)
            self.assertTrue(theirs.acquire(wait=False))
            theirs.release()

    def _lease_lasts(self, cache: DogpileCache) -> float:
        """Seconds after which a 0.5 s lease has surely run out in this store
        (memcached counts whole seconds: a 0.5 s lease lasts up to 2 s)."""
        from django_dogpile.stores.kinds import kind_of

        return 2.1 if kind_of(caches[self.store_alias]).name == "memcached" else 0.7

    def test_a_lease_runs_out(self) -> None:
        cache = self.dogpile(LOCK_TIMEOUT=0.5)
        skey = cache.make_and_validate_key("lease")
        lease = cache.binding.adapter.lease
        if lease is None:
            return  # an in-process store: no lease to run out
        first = lease(skey + LOCK_SUFFIX, skey)
        self.assertTrue(first.acquire(False, 0.0))
        time.sleep(self._lease_lasts(cache))
        second = lease(skey + LOCK_SUFFIX, skey)
        self.assertTrue(second.acquire(False, 0.0))
        second.release()

    # --- the fenced write -----------------------------------------------------

    def test_an_explicit_write_during_a_regeneration_wins(self) -> None:
        cache = self.dogpile()
        other = self.dogpile(prefix=cache.key_prefix)  # another worker's backend

        def create() -> str:
            with another_process():
                other.set("fence", "explicit")
            return "regenerated"

        self.assertEqual(cache.get_or_set("fence", create, 60), "regenerated")
        self.assertEqual(cache.get("fence"), "explicit")

    def test_a_holder_whose_lease_ran_out_does_not_overwrite_its_successor(self) -> None:
        cache = self.dogpile(LOCK_TIMEOUT=0.5)
        ran_out = self._lease_lasts(cache)
        cache.store  # noqa: B018 - connect: the adapter is chosen there
        if cache.binding.adapter.lease is None:
            return  # an in-process store: one process, one lock
        started = threading.Event()
        with Clock() as clock:
            cache.set("fence", "old", timeout=10)
            clock.advance(11)

            def slow() -> str:
                started.set()
                time.sleep(ran_out + 0.4)  # past LOCK_TIMEOUT: the successor takes over
                return "late"

            result: list[Any] = []
            first = threading.Thread(target=lambda: result.append(cache.get_or_set("fence", slow, 60)))
            first.start()
            started.wait(10)
            time.sleep(ran_out)  # the first holder's lease has run out
            with another_process():
                self.assertEqual(cache.get_or_set("fence", lambda: "successor", 60), "successor")
            first.join(10)
        self.assertEqual(result, ["late"])
        self.assertEqual(cache.get("fence"), "successor")
