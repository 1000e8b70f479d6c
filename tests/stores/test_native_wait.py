"""The cold waiter on the event loop: a caller with no value to serve while
another process holds the key's lease waits on the loop (no thread) for the
record that process stores, and is answered and counted as the thread path
answers and counts it.  The thread-sensitive executor is kept busy
throughout: a call that needs it cannot finish until it is freed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async

from django_dogpile import signals
from tests.stores.test_native_async import NATIVE, client_of, hold_lease, native_cache

pytestmark = pytest.mark.redis

#: the counters a wait moves
COUNTED = ("MISS", "WAITS", "WAIT_TIMEOUTS", "REGENERATIONS")


def moved(before, after):
    return {name: after.get(name, 0) - before.get(name, 0) for name in COUNTED}


def _waited():
    """The ``caller_waited`` signals sent meanwhile."""
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs["timed_out"])

    signals.caller_waited.connect(receiver, weak=False)
    return seen, lambda: signals.caller_waited.disconnect(receiver)


def run_busy(coro_fn, *, release_after=None):
    """Run ``coro_fn()`` with the request's thread taken until
    ``release_after`` seconds (None: the end); returns (result, whether it
    finished while the thread was still taken)."""
    free = threading.Event()

    async def scenario():
        busy = asyncio.ensure_future(sync_to_async(free.wait)(30))
        await asyncio.sleep(0.05)
        try:
            task = asyncio.ensure_future(coro_fn())
            if release_after is not None:
                await asyncio.sleep(release_after)
                free.set()
            result = await asyncio.wait_for(task, 20)
            return result, not busy.done()
        finally:
            free.set()
            await busy

    return asyncio.run(scenario())


@pytest.mark.parametrize("store", NATIVE)
def test_a_cold_caller_waits_on_the_loop_for_another_processs_value(server, store):
    cache = native_cache(store, f"coldwait-{store}")
    hold_lease(cache, "c")
    seen, done = _waited()

    def land():
        time.sleep(0.3)
        cache.set("c", "theirs")  # writes, then ends the lease (and publishes it)

    before = cache.binding.stats.snapshot()
    lander = threading.Thread(target=land)
    lander.start()
    try:
        (value, status), on_loop = run_busy(lambda: cache.aget_or_set_status("c", lambda: "ours"))
    finally:
        lander.join()
        done()
    assert (value, status) == ("theirs", "MISS") and on_loop  # no thread was needed
    assert moved(before, cache.binding.stats.snapshot()) == {
        "MISS": 1,
        "WAITS": 1,
        "WAIT_TIMEOUTS": 0,
        "REGENERATIONS": 0,
    }
    assert seen == [False]


@pytest.mark.parametrize("store", NATIVE)
def test_the_sync_and_the_async_waiter_answer_and_count_alike(server, store):
    cache = native_cache(store, f"coldagree-{store}")
    answers = {}
    for how in ("sync", "async"):
        key = f"c-{how}"
        hold_lease(cache, key)

        def land(key=key):
            time.sleep(0.2)
            cache.set(key, "theirs")

        lander = threading.Thread(target=land)
        before = cache.binding.stats.snapshot()
        lander.start()
        if how == "sync":
            got = cache.get_or_set_status(key, lambda: "ours")
        else:
            got = asyncio.run(cache.aget_or_set_status(key, lambda: "ours"))
        lander.join()
        answers[how] = (got, moved(before, cache.binding.stats.snapshot()))
    assert answers["sync"] == answers["async"]
    assert answers["async"][0] == ("theirs", "MISS")


@pytest.mark.parametrize("store", NATIVE)
def test_a_lease_that_goes_with_no_value_leaves_the_caller_to_regenerate(server, store):
    # the holder failed (or was killed and its lease ran out): the loop
    # cannot make the value, the thread path takes the lease and does
    cache = native_cache(store, f"coldgone-{store}")
    lock = hold_lease(cache, "c")

    def fail():
        time.sleep(0.2)
        client_of(cache).delete(lock)

    failer = threading.Thread(target=fail)
    failer.start()
    try:
        (value, status), on_loop = run_busy(
            lambda: cache.aget_or_set_status("c", lambda: "ours"), release_after=0.5
        )
    finally:
        failer.join()
    assert (value, status) == ("ours", "MISS") and not on_loop  # it needed the thread
    assert cache.get("c") == "ours"


def test_past_wait_timeout_the_creator_runs_here_unstored(redis_server):
    cache = native_cache("redis", "coldtimeout", WAIT_TIMEOUT=0.3)
    lock = hold_lease(cache, "c")
    seen, done = _waited()
    before = cache.binding.stats.snapshot()
    try:
        value, status = asyncio.run(cache.aget_or_set_status("c", lambda: "ours"))
    finally:
        client_of(cache).delete(lock)
        done()
    assert (value, status) == ("ours", "MISS")
    assert moved(before, cache.binding.stats.snapshot())["WAIT_TIMEOUTS"] == 1
    assert seen == [True]
    assert cache.get("c") is None  # not stored: the holder's value will be


def test_coroutines_of_one_loop_share_one_wait(redis_server):
    cache = native_cache("redis", "coldshare")
    hold_lease(cache, "c")

    async def many():
        async def land():
            await asyncio.sleep(0.2)
            await sync_to_async(cache.set)("c", {"v": 1})

        results = await asyncio.gather(
            *(cache.aget_or_set_status("c", lambda: "ours") for _ in range(20)), land()
        )
        return results[:-1]

    before = cache.binding.stats.snapshot()
    results = asyncio.run(many())
    assert results == [({"v": 1}, "MISS")] * 20
    assert len({id(value) for value, _ in results}) == 20  # each its own copy
    # one polled the lease, 19 awaited it: each waited (as each waiting thread counts)
    assert moved(before, cache.binding.stats.snapshot())["WAITS"] == 20
