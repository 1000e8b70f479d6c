"""The debug-toolbar panel's recording (django_dogpile.toolbar.recorder):
each DogpileCache call with its status word and the store calls it made,
counted against what the store saw (Redis MONITOR).  The panel in the real
toolbar: tests/system/test_demo_pages.py (test client, WSGI and ASGI) and
tests/system/test_browser.py (Chromium)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.core.cache import caches

from django_dogpile.toolbar import recorder

recorder.install()  # as the panel's ready() does; a no-op once done


def rows(found):
    return [(c["depth"], c["method"], c["alias"], c["key"], c["status"]) for c in found.calls]


def ops(call):
    return [op["op"] for op in call["store"]]


def test_a_call_its_word_and_its_store_calls_on_locmem():
    cache = caches["dp_locmem"]
    cache.clear()
    with recorder.recording() as found:
        assert cache.get_or_set("k", lambda: "v", 60) == "v"
        assert cache.get_or_set("k", lambda: "w", 60) == "v"
        assert cache.add("k", "x") is False  # it asks has_key itself: one call
        assert cache.get("nope", "d") == "d"
    assert rows(found) == [
        (0, "get_or_set", "dp_locmem", "k", "MISS"),
        (0, "get_or_set", "dp_locmem", "k", "HIT"),
        (0, "add", "dp_locmem", "k", ""),
        (0, "get", "dp_locmem", "nope", "MISS"),
    ]
    made, hit = found.calls[:2]
    # the read, the re-read under the key's lock, the fence's read, the write
    assert ops(made) == ["get", "get", "get", "set"]
    assert made["made_ms"] is not None and made["waited_ms"] is None
    assert ops(hit) == ["get"] and hit["made_ms"] is None
    assert all(c["ms"] > 0 for c in found.calls)


def test_nothing_is_recorded_outside_a_recording():
    cache = caches["dp_locmem"]
    with recorder.recording() as found:
        pass
    cache.get_or_set("k2", lambda: 1, 60)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(recorder._recording.get()))
    with recorder.recording() as other:
        thread.start()  # a thread of its own, not started from the context: nothing
        thread.join()
    assert found.calls == [] and other.calls == [] and seen == [None]


def test_a_creators_calls_are_rows_one_level_down():
    outer, inner = caches["dp_locmem"], caches["dp_bg"]
    outer.clear()
    inner.clear()
    with recorder.recording() as found:
        outer.get_or_set("page", lambda: inner.get_or_set("fragment", lambda: "f", 60) + "p", 60)
    assert rows(found) == [
        (0, "get_or_set", "dp_locmem", "page", "MISS"),
        (1, "get_or_set", "dp_bg", "fragment", "MISS"),
    ]
    page, fragment = found.calls
    assert ops(page) == ops(fragment) == ["get", "get", "get", "set"]  # each its own


def test_the_caller_that_waited_and_the_one_served_stale():
    cache = caches["dp_locmem"]
    cache.clear()
    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        release.wait(10)
        return "v"

    def made_elsewhere(key):  # a thread of its own: not in the recording
        entered.clear()
        release.clear()
        maker = threading.Thread(target=cache.get_or_set, args=(key, slow, 60))
        maker.start()
        assert entered.wait(10)
        return maker

    with recorder.recording() as found:
        maker = made_elsewhere("w")
        threading.Timer(0.2, release.set).start()
        assert cache.get_or_set("w", lambda: "x", 60) == "v"  # waited for it
        maker.join()
        cache.set("s", "old", 0.01)
        time.sleep(0.05)
        maker = made_elsewhere("s")
        assert cache.get_or_set("s", lambda: "x", 60) == "old"
        release.set()
        maker.join()
    waited, _, stale = found.calls
    assert (waited["status"], stale["status"]) == ("MISS", "UPDATING")
    assert waited["waited_ms"] >= 150 and waited["made_ms"] is None
    assert stale["waited_ms"] is None and stale["made_ms"] is None and stale["ms"] < 150


@pytest.mark.redis
def test_redis_store_calls_are_the_commands_redis_saw(redis_server):
    from tests.stores.test_redis import Monitor

    cache = caches["dp_redis"]
    cache.clear()
    cache.get_or_set("warm", lambda: 1, 60)  # the lease scripts loaded
    monitor = Monitor(redis_server.port)
    try:
        with recorder.recording() as found:
            cache.get_or_set("k", lambda: "v", 60)
            cache.get_or_set("k", lambda: "v", 60)
            cache.get_many(["k", "other"])
            cache.get_or_set_many(["k", "m1", "m2"], lambda keys: {k: k for k in keys}, 60)
        caches["redis"].get("marker-x")  # past the recording
        seen = monitor.commands("marker-x")
    finally:
        monitor.close()
    # one store call, one command: django-redis's methods by their name, the
    # lease's scripts as redis-py sent them
    redis_name = {"get": "GET", "get_many": "MGET", "set": "SET"}
    recorded = [redis_name.get(op, op) for call in found.calls for op in ops(call)]
    assert recorded == seen[:-1] and seen[-1] == "GET", (recorded, seen)  # -1: the marker
    miss, hit, many, batch = found.calls
    assert ops(hit) == ["get"] and ops(many) == ["get_many"]  # one round trip each
    assert ops(miss)[0] == "get" and "EVALSHA" in ops(miss) and miss["status"] == "MISS"
    assert batch["status"] == "HIT 1 MISS 2" and ops(batch)[0] == "get_many"
    assert batch["statuses"] == {"k": "HIT", "m1": "MISS", "m2": "MISS"}


@pytest.mark.redis
def test_native_async_reads_are_counted_in_their_task(redis_server):
    cache = caches["dp_async"]
    cache.clear()

    async def main():
        await cache.aget_or_set("a", lambda: 1, 60)
        with recorder.recording() as found:
            # two tasks of one request: each call keeps its own store calls
            await asyncio.gather(cache.aget_or_set("a", lambda: 1, 60), cache.aget("a"))
            assert await cache.aget_or_set_status("b", lambda: 2, 60) == (2, "MISS")
        return found

    found = asyncio.run(main())
    assert rows(found) == [
        (0, "aget_or_set", "dp_async", "a", "HIT"),
        (0, "aget", "dp_async", "a", "HIT"),
        (0, "aget_or_set_status", "dp_async", "b", "MISS"),
    ]
    assert ops(found.calls[0]) == ["GET"] and ops(found.calls[1]) == ["GET"]


@pytest.mark.memcached
def test_memcached_threads_keep_their_own_clients_after_a_recording():
    """memcached's store answers delete/has_key/... with the calling thread's
    client (``__getattr__``): the panel's counting must not pin one thread's."""
    cache = caches["dp_memcached"]
    cache.clear()
    with recorder.recording() as found:
        cache.get_or_set("k0", lambda: 1, 60)
        cache.delete("k0")
    assert [ops(c) for c in found.calls][1] == ["delete"]  # counted, through the lookup
    store = cache.binding.adapter.backing
    mine, theirs = store._here(), []
    thread = threading.Thread(target=lambda: theirs.append(store._here()))
    thread.start()
    thread.join()
    errors = []

    def worker(i):
        try:
            for j in range(100):
                key = f"h{i}-{j % 5}"
                cache.get_or_set(key, lambda: "x", 60)
                cache.delete(key)
                cache.has_key(key)
        except Exception as exc:  # pragma: no cover - the failure's report
            errors.append(repr(exc))

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert theirs[0] is not mine and not any(w.is_alive() for w in workers) and errors == []


def test_a_batch_shows_each_keys_word_as_the_backend_counted_it():
    cache = caches["dp_locmem"]
    cache.clear()
    cache.set("fresh", "f", 60)
    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        release.wait(10)
        return "w"

    maker = threading.Thread(target=cache.get_or_set, args=("w", slow, 60))
    maker.start()
    assert entered.wait(10)
    threading.Timer(0.2, release.set).start()
    with recorder.recording() as found:
        got = cache.get_or_set_many(["fresh", "w"], lambda keys: {k: "new" for k in keys}, 60)
        unstored = cache.get_or_set_many(["a", "b"], lambda keys: {k: k for k in keys}, 0)
    maker.join()
    assert got == {"fresh": "f", "w": "w"} and unstored == {"a": "a", "b": "b"}
    waited, made = found.calls
    assert waited["statuses"] == {"fresh": "HIT", "w": "MISS"} and waited["status"] == "HIT 1 MISS 1"
    assert waited["waited_ms"] >= 150
    assert made["status"] == "MISS 2"  # made, not stored (timeout 0): no hit


def test_a_pool_threads_work_is_not_added_after_the_call_returned():
    cache = caches["dp_bg"]
    cache.clear()
    cache.set("page", "old", 0.01)
    time.sleep(0.05)
    made = threading.Event()

    def creator():
        caches["dp_locmem"].get_or_set("inside", lambda: 1, 60)  # a call of its own, in the pool
        made.set()
        return "new"

    with recorder.recording() as found:
        assert cache.get_or_set("page", creator, 60) == "old"
        seen = [(c["method"], c["status"], list(c["store"])) for c in found.calls]
        assert made.wait(10)
        time.sleep(0.1)  # the pool thread's write landed
    assert [(c["method"], c["status"], c["store"]) for c in found.calls] == seen
    assert [c["key"] for c in found.calls] == ["page"] and seen[0][1] == "UPDATING"


def test_prefetched_fragments_are_rows_of_their_own():
    """Fragments a {% dogpile_prefetch %} read are served without a call of
    the backend's: each is still its own row, its words and store calls not
    its page's."""
    from django.template import engines

    from django_dogpile.faces.common import make_fragment_key

    cache = caches["dp_locmem"]
    cache.clear()
    page = engines["django"].from_string(
        '{% load dogpile %}{% dogpile_prefetch "card" i for i in items using="dp_locmem" %}'
        '{% for i in items %}{% dogpile_cache 60 "card" i using="dp_locmem" %}c{{ i }}{% enddogpile_cache %}'
        "{% endfor %}"
    )
    assert page.render({"items": [1, 2]}) == "c1c2"
    cache.invalidate(make_fragment_key("card", [2]))  # stale now
    with recorder.recording() as found:
        assert cache.get_or_set("page", lambda: page.render({"items": [1, 2]}), 60) == "c1c2"
    assert [(d, m, s) for d, m, _, _, s in rows(found)] == [
        (0, "get_or_set", "MISS"),
        (1, "prefetch", "2 of 2 found"),  # its one read
        (1, "prefetched", "HIT"),
        (1, "prefetched", "EXPIRED"),
    ]
    outer, read, hit, made = found.calls
    assert outer["statuses"] == {"page": "MISS"} and ops(read) == ["get_many"] and ops(hit) == []
    assert made["made_ms"] is not None and "set" in ops(made) and ops(outer).count("set") == 1


def test_a_plain_caches_prefetched_fragments_render_while_recording():
    """{% dogpile_prefetch %} works on a plain Django cache too; recording
    must neither break it nor give it rows (it is not a DogpileCache)."""
    from django.template import engines

    caches["locmem"].clear()
    page = engines["django"].from_string(
        '{% load dogpile %}{% dogpile_prefetch "card" i for i in items using="locmem" %}'
        '{% for i in items %}{% dogpile_cache 60 "card" i using="locmem" %}c{{ i }}{% enddogpile_cache %}'
        "{% endfor %}"
    )
    assert page.render({"items": [1, 2]}) == "c1c2"
    with recorder.recording() as found:
        assert page.render({"items": [1, 2]}) == "c1c2"
    assert found.calls == []
