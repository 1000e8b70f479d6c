"""Native asyncio reads on the Redis stores (``ASYNC_POOL``): on the loop,
agreeing with the sync calls, one pool per event loop closed with its loop,
and a bounded number of connections under 1,000 concurrent requests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from django.core.cache import caches
from django.test import AsyncClient, AsyncRequestFactory, override_settings

from django_dogpile.engine.binding import LOCK_SUFFIX
from django_dogpile.stores.redis_async import CLIENT_NAME
from django_dogpile.testing import Clock
from tests.helpers.procs import make_cache, raw_redis

pytestmark = pytest.mark.redis

#: the stores with a native asyncio client, all on the suite's redis-server
NATIVE = ["redis", "redis_django", "valkey", pytest.param("cluster", marks=pytest.mark.cluster)]


def client_of(cache):
    """A client of the server that holds ``cache``'s records (a cluster routes)."""
    if cache.binding.adapter.cluster:
        return caches["cluster"].client.get_client(write=True)
    return raw_redis()


def native_cache(store, prefix, **options):
    cache = make_cache(store, prefix, timeout=60, LOCK_TIMEOUT=5, **options)
    cache.get("connect")
    assert cache.binding.native is not None, store
    return cache


def hold_lease(cache, key):
    """Take ``key``'s lease as another process would (then it regenerates)."""
    lock = cache.binding.adapter.raw_key(cache.binding.store_key(key) + LOCK_SUFFIX)
    client_of(cache).set(lock, "another-process", px=10_000)
    return lock


def connections():
    return len(raw_redis().client_list())


@pytest.mark.parametrize("store", NATIVE)
def test_async_reads_run_on_the_loop_with_no_thread(server, store):
    """The thread-sensitive executor is kept busy: a call that hops to it
    cannot return until it is free.  Fresh hits, misses of ``aget``, a warm
    tagged record and a stale value whose lease another process holds all
    return at once; a write and a regeneration wait for the thread."""
    cache = native_cache(store, f"loop-{store}")
    cache.set("k", {"v": 1})
    cache.set("t", "tagged", tags="x")
    assert cache.get("t") == "tagged"  # this process knows tag x now
    # ... once its tag table listens (an earlier test may have restarted the
    # server: the table is bypassed until its listener is back)
    raw = cache.store.get(cache.binding.store_key("t"))
    deadline = time.monotonic() + 10
    while cache.binding.tags.view(raw, offline=True) is None and time.monotonic() < deadline:
        time.sleep(0.05)
        cache.get("t")
    cache.set("s", "old")
    cache.invalidate("s")
    lock = hold_lease(cache, "s")
    free = threading.Event()

    async def scenario():
        busy = asyncio.ensure_future(sync_to_async(free.wait)(10))
        await asyncio.sleep(0.05)  # the executor's one thread is taken
        waiting = []
        try:
            on_loop = [
                await asyncio.wait_for(cache.aget("k"), 2),
                await asyncio.wait_for(cache.aget_or_set("k", "never"), 2),
                await asyncio.wait_for(cache.ahas_key("k"), 2),
                await asyncio.wait_for(cache.aget_many(["k", "nope"]), 2),
                await asyncio.wait_for(cache.aget("nope", "dflt"), 2),
                await asyncio.wait_for(cache.aget("s"), 2),  # stale: a miss for get
                await asyncio.wait_for(cache.aget_or_set_status("t", "never"), 2),
                await asyncio.wait_for(cache.aget_or_set_status("s", "never"), 2),
            ]
            hopped = []
            for call in (cache.aset("w", 1), cache.aget_or_set("cold", "new")):
                waiting.append(asyncio.ensure_future(call))
                try:
                    await asyncio.wait_for(asyncio.shield(waiting[-1]), 0.3)
                except asyncio.TimeoutError:
                    hopped.append(True)
            return on_loop, hopped, busy.done()
        finally:
            free.set()
            await busy
            await asyncio.gather(*waiting)

    try:
        on_loop, hopped, busy_done = asyncio.run(scenario())
    finally:
        client_of(cache).delete(lock)
    assert on_loop == [
        {"v": 1},
        {"v": 1},
        True,
        {"k": {"v": 1}},
        "dflt",
        None,
        ("tagged", "HIT"),
        ("old", "UPDATING"),
    ]
    assert hopped == [True, True] and not busy_done
    assert cache.get("w") == 1 and cache.get("cold") == "new"  # they ran once the thread was free


@pytest.mark.parametrize("store", NATIVE)
def test_sync_and_async_reads_agree(server, store):
    """Every read, both ways, after each kind of change: the native path
    answers as the thread path does (values, status words, counts)."""
    cache = native_cache(store, f"agree-{store}")

    def reads(key):
        return (
            cache.get(key, "dflt"),
            cache.has_key(key),
            cache.get_many([key, "nope"]),
            cache.get_or_set_status(key, "new"),
        )

    async def areads(key):
        return (
            await cache.aget(key, "dflt"),
            await cache.ahas_key(key),
            await cache.aget_many([key, "nope"]),
            await cache.aget_or_set_status(key, "new"),
        )

    steps = ("set", "delete", "invalidate", "expire", "set_many", "tag", "hard", "leased", "int")
    with Clock() as clock:
        for step in steps:
            seen = {}
            for how in ("sync", "async"):
                value = 7 if step == "int" else {"v": step}
                cache.set("k", value, timeout=60, tags="x" if step in ("tag", "hard") else None)
                lock = None
                if step == "delete":
                    cache.delete("k")
                elif step == "invalidate":
                    cache.invalidate("k")
                elif step == "expire":
                    clock.advance(61)
                elif step == "set_many":
                    cache.set_many({"k": "v2"})
                elif step == "tag":
                    cache.invalidate_tags("x")
                elif step == "hard":
                    cache.invalidate_tags("x", hard=True)
                elif step == "leased":
                    cache.invalidate("k")
                    lock = hold_lease(cache, "k")
                before = cache.binding.stats.snapshot()
                got = reads("k") if how == "sync" else asyncio.run(areads("k"))
                after = cache.binding.stats.snapshot()
                counts = {n: after[n] - before[n] for n in after if after[n] != before[n]}
                seen[how] = (got, counts)
                if lock is not None:
                    client_of(cache).delete(lock)
                if step == "expire":
                    clock.advance(-61)
                cache.delete("k")
            assert seen["async"] == seen["sync"], step


def test_one_pool_per_event_loop_closed_with_its_loop(redis_server):
    """Twenty loops opened and closed through ``async_to_sync`` (as a sync
    view calling async code does) and ``asyncio.run``: no pool, no
    connection outlives its loop; a loop closed without shutting down its
    async generators is swept when the next pool is made."""
    cache = native_cache("redis", "loops")
    cache.set("k", "v")
    native = cache.binding.native
    opened: list[str] = []

    async def read(call):
        value = await call
        [client, _, _] = native._clients[asyncio.get_running_loop()]
        for conn in client.connection_pool._available_connections:
            host, port = conn._writer.get_extra_info("sockname")[:2]
            opened.append(f"{host}:{port}")
        return value

    for _ in range(10):
        assert async_to_sync(read)(cache.aget("k")) == "v"
        assert native.loops == 0
        assert asyncio.run(read(cache.aget_or_set("k", "never"))) == "v"
        assert native.loops == 0
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(read(cache.aget("k"))) == "v"
    loop.close()  # no shutdown_asyncgens: its pool stays registered...
    assert native.loops == 1
    assert asyncio.run(cache.aget("k")) == "v"
    assert native.loops == 0  # ... until the next pool is made
    assert len(opened) == 21
    # the server no longer knows any of those connections (the suite's
    # other clients come and go: only these are counted)
    deadline = time.monotonic() + 5
    while (still := _still_open(opened)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still


def _still_open(addresses):
    known = {entry["addr"] for entry in raw_redis().client_list()}
    return [a for a in addresses if a in known]


def _concurrent_requests(port, path, n, peak, name=None):
    """``n`` concurrent requests to ``path``, each in its own
    ThreadSensitiveContext as Django's ASGI handler runs them; ``peak``
    records the connections the server saw meanwhile (from a connection of
    its own, outside every pool): those named ``name`` (the native pool's),
    or all of them."""
    import redis

    def seen():
        found = counter.client_list()
        return len(found) if name is None else sum(1 for c in found if c.get("name") == name)

    client = AsyncClient()
    stop = threading.Event()
    counter = redis.Redis(port=port, single_connection_client=True)

    def watch():
        while not stop.is_set():
            peak.append(seen())
            time.sleep(0.005)

    async def one():
        async with ThreadSensitiveContext():
            return await client.get(path)

    async def burst():
        return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

    peak.append(seen())  # the base (this connection counted, when all are)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return asyncio.run(burst())
    finally:
        stop.set()
        watcher.join()
        counter.close()


@override_settings(ROOT_URLCONF="tests.helpers.async_urls")
def test_a_thousand_concurrent_requests_stay_within_the_pool(redis_server):
    """1,000 concurrent requests × 10 hits: every one answered, and the
    server never sees more than ASYNC_POOL's 20 connections from them.
    Through the thread path (``ASYNC_POOL: False``) each request's thread
    holds its own connection: the control, which exceeds the bound (or
    runs out of connections: django-redis's pool refuses past 100)."""
    for alias in ("dp_async", "dp_async_threads"):
        cache = caches[alias]
        for i in range(10):
            cache.set(f"k{i}", f"made {i}")
    peak: list[int] = []
    # the native pool's connections, by the name they give themselves: the
    # process's other threads (the stats publisher, a tag table's listener)
    # may open connections of their own meanwhile
    responses = _concurrent_requests(redis_server.port, "/native/", 1000, peak, CLIENT_NAME)
    base = peak[0]
    failures = [r for r in responses if isinstance(r, BaseException) or r.status_code != 200]
    assert not failures, failures[:3]
    assert {r.content for r in responses} == {b",".join(f"made {i}".encode() for i in range(10))}
    assert max(peak) - base <= 20, (max(peak), base)
    control: list[int] = []
    answered = _concurrent_requests(redis_server.port, "/threads/", 300, control)
    refused = [r for r in answered if isinstance(r, BaseException) or r.status_code != 200]
    assert max(control) - control[0] > 20 or refused  # the bound is the native path's doing


@override_settings(ROOT_URLCONF="tests.helpers.async_urls")
def test_an_async_page_is_served_over_the_native_path(redis_server):
    """dogpile_cache_page on an async view: its hits read on the loop (the
    executor is kept busy meanwhile; the view is called as the handler calls
    it, since the handler's own request signals take the thread)."""
    from tests.helpers.async_urls import page

    cache = caches["dp_async"]
    cache.clear()
    client = AsyncClient()
    free = threading.Event()

    async def scenario():
        first = await client.get("/page/")
        busy = asyncio.ensure_future(sync_to_async(free.wait)(10))
        await asyncio.sleep(0.05)
        try:
            second = await asyncio.wait_for(page(AsyncRequestFactory().get("/page/")), 2)
        finally:
            free.set()
            await busy
        return first, second

    first, second = asyncio.run(scenario())
    assert first.content == second.content == b"the page"
    assert first["X-Dogpile-Cache"].startswith("MISS") and second["X-Dogpile-Cache"] == "HIT"


def test_a_caller_waits_for_a_free_connection_then_takes_the_thread(redis_server):
    """With every connection of ASYNC_POOL in use for longer than its
    TIMEOUT, a read is not refused: it waits that long, then reads in the
    thread; once a connection is free the loop reads again."""
    cache = native_cache("redis", "pool-wait", ASYNC_POOL={"MAX_CONNECTIONS": 1, "TIMEOUT": 0.2})
    cache.set("k", "v")

    async def scenario():
        assert await cache.aget("k") == "v"  # the loop's pool, made
        free = cache.binding.native._clients[asyncio.get_running_loop()][2]
        await free.acquire()  # its one connection taken
        started = time.monotonic()
        value = await cache.aget_or_set("k", "never")
        waited = time.monotonic() - started
        free.release()
        return value, waited, await cache.aget("k")

    value, waited, after = asyncio.run(scenario())
    assert value == after == "v"
    assert 0.2 <= waited < 2


async def _asgi_get(app, path):
    """One request through Django's ASGIHandler, as an ASGI server sends it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    done = asyncio.Event()
    sent: list[dict] = []

    async def receive():
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    return sent[1]["status"]


@override_settings(ROOT_URLCONF="tests.helpers.async_urls")
def test_requests_through_the_asgi_handler_share_one_reader(redis_server):
    """Django's ``caches`` is per context: under an ASGI server each request
    builds its own DogpileCache.  They share the process's one reader of the
    store, so 3 waves of 40 requests open no more connections than the
    first wave did (a reader per request opened one per request)."""
    import redis
    from django.core.handlers.asgi import ASGIHandler

    from django_dogpile.stores import native_client

    for i in range(10):
        caches["dp_async"].set(f"k{i}", f"made {i}")
    counter = redis.Redis(port=redis_server.port, single_connection_client=True)
    seen = []

    async def server():
        app = ASGIHandler()
        for _ in range(3):
            statuses = await asyncio.gather(*(_asgi_get(app, "/native/") for _ in range(40)))
            assert set(statuses) == {200}
            seen.append((len(counter.client_list()), len(native_client._every)))

    try:
        # the server's loop starts in a context of its own, as uvicorn's does
        runner = threading.Thread(target=lambda: asyncio.run(server()))
        runner.start()
        runner.join()
    finally:
        counter.close()
    assert seen[2] == seen[1] == seen[0], seen


@pytest.mark.parametrize("store", NATIVE)
def test_a_timeout_of_zero_or_a_bad_one_is_read_as_the_sync_call_reads_it(server, store):
    """Stale, its lease held elsewhere: the native UPDATING answer is given
    only for a timeout the sync call would store under."""
    cache = native_cache(store, f"timeouts-{store}")
    cache.set("k", "old")
    cache.invalidate("k")
    lock = hold_lease(cache, "k")
    try:
        assert cache.get_or_set_status("k", "new", timeout=0) == ("new", "MISS")
        assert asyncio.run(cache.aget_or_set_status("k", "new", timeout=0)) == ("new", "MISS")
        for call in (
            lambda: cache.get_or_set_status("k", "new", timeout="soon"),
            lambda: asyncio.run(cache.aget_or_set_status("k", "new", timeout="soon")),
        ):
            with pytest.raises(TypeError):
                call()
        assert asyncio.run(cache.aget_or_set_status("k", "new")) == ("old", "UPDATING")
    finally:
        client_of(cache).delete(lock)


def test_two_store_aliases_on_one_server_each_decode_their_own(redis_server):
    """One reader per store alias: a compressed store and a plain one on the
    same server and prefix never read each other's records with the wrong
    decoder."""
    from django.conf import settings

    zlib = {
        **settings.CACHES["redis"],
        "OPTIONS": {
            **settings.CACHES["redis"].get("OPTIONS", {}),
            "COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor",
        },
    }
    with override_settings(CACHES={**settings.CACHES, "redis_zlib": zlib}):
        plain = native_cache("redis", "decoders")
        packed = native_cache("redis_zlib", "decoders-z")
        plain.set("k", "x" * 500)
        packed.set("k", "y" * 500)

        async def both():
            return await plain.aget("k"), await packed.aget("k")

        assert asyncio.run(both()) == ("x" * 500, "y" * 500)
        assert plain.binding.native is not packed.binding.native


@pytest.mark.cluster
def test_cluster_reads_are_native_and_their_pools_close_with_their_loops(redis_cluster):
    """On django-valkey's cluster store: ``aget_many`` of keys in many slots
    (one ``MGET`` per node), and one cluster client per loop, closed with it:
    the connections the nodes see do not grow with the loops."""
    import valkey

    cache = native_cache("cluster", "loops-cluster")
    values = {f"k{i}": i for i in range(20)}  # 20 records: slots on every primary
    cache.set_many(values)
    probes = [valkey.Valkey(port=port) for port in redis_cluster.ports]

    def seen():
        return sum(len(probe.client_list()) for probe in probes)

    assert asyncio.run(cache.aget_many(list(values))) == cache.get_many(list(values)) == values
    after_one = seen()
    for _ in range(10):
        assert asyncio.run(cache.aget("k3")) == 3
        assert async_to_sync(cache.aget_many)(["k1", "k2"]) == {"k1": 1, "k2": 2}
    assert seen() <= after_one
    assert cache.binding.native.loops == 0
    for probe in probes:
        probe.close()
