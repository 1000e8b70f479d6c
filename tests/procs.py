"""Worker processes for the cross-process tests (started with 'spawn')."""

from __future__ import annotations

import os
import threading
import time


def _setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def make_cache(location: str, prefix: str, timeout: float = 300, **options):
    from django_dogpile.cache import DogpileCache

    return DogpileCache(
        location, {"TIMEOUT": timeout, "KEY_PREFIX": prefix, "OPTIONS": options}
    )


def raw_redis():
    from django.core.cache import caches

    return caches["redis"].client.get_client(write=True)


def counting_creator(counter: str, delay: float, value: str = "v"):
    """A creator that counts its calls and its overlap in Redis."""

    def create():
        r = raw_redis()
        r.incr(counter)
        active = r.incr(counter + ":active")
        r.set(counter + ":max", max(int(r.get(counter + ":max") or 0), active))
        try:
            time.sleep(delay)
            r.set(counter + ":landed", repr(time.time() + 0.001))
            return value
        finally:
            r.decr(counter + ":active")

    return create


def hammer(prefix, key, threads, delay, counter, start_at, options, results):
    """`threads` threads call get_or_set once, all at time `start_at`."""
    _setup()
    cache = make_cache("redis", prefix, **options)
    create = counting_creator(counter, delay)
    out = []

    def run():
        time.sleep(max(0, start_at - time.time()))
        t0 = time.time()
        value = cache.get_or_set(key, create)
        out.append((value, t0, time.time()))

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put(out)


def hold_forever(prefix, key, options, started):
    """Win the lock on a cold key, then hang in the creator until killed."""
    _setup()
    cache = make_cache("redis", prefix, **options)

    def create():
        started.set()
        time.sleep(3600)

    cache.get_or_set(key, create)


def incr_many(prefix, key, threads, n, start_at, results):
    """`threads` threads each increment `key` `n` times, from time `start_at`."""
    _setup()
    cache = make_cache("redis", prefix, LOCK_TIMEOUT=5)

    def run():
        time.sleep(max(0, start_at - time.time()))
        for _ in range(n):
            cache.incr(key)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put("done")
