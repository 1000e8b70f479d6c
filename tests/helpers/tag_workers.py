"""Worker processes for the tag invalidation load test (started with 'spawn').

Each worker warms every key (a "page" tagged ``category:shoes``), reports,
waits for the test to invalidate the tag, then reads every key over and
over until it has seen each one regenerated.  Each creation is logged as
one line ``key gen start end`` (one small ``O_APPEND`` write: atomic), so
the test counts creations per key and how many ran at once.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter


def _creator(key, invalidated, log_path, delay):
    def create():
        gen = 2 if invalidated.is_set() else 1
        start = time.time()
        time.sleep(delay)
        end = time.time()
        with open(log_path, "a") as f:
            f.write(f"{key} {gen} {start:.6f} {end:.6f}\n")
        return (key, gen)

    return create


def load(
    location, prefix, n_keys, options, threads, delay, log_path, warmed, invalidated, results, setup=True
):
    """Warm, wait for the invalidation, then read until every key is gen 2."""
    if setup:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        import django

        django.setup()
    from tests.helpers.procs import make_cache

    cache = make_cache(location, prefix, timeout=300, **options)
    # the warm-up is not what is measured: no budget (its cold callers would
    # poll for slots); the same prefix, so the same records and tags
    unbounded = make_cache(location, prefix, timeout=300, **{**options, "REGENERATION_BUDGET": None})
    keys = [f"page:{i}" for i in range(n_keys)]
    errors = []
    statuses = Counter()
    last_old_start = {}  # key -> when the last call that got gen 1 started
    first_new_return = {}  # key -> when the first call that got gen 2 returned
    lock = threading.Lock()

    def warm(order):
        for key in order:
            unbounded.get_or_set(key, _creator(key, invalidated, log_path, delay), tags=["category:shoes"])

    def hammer(order):
        seen = set()
        deadline = time.time() + 90
        while len(seen) < n_keys and time.time() < deadline:
            for key in order:
                t0 = time.time()
                try:
                    (k, gen), status = cache.get_or_set_status(
                        key, _creator(key, invalidated, log_path, delay), tags=["category:shoes"]
                    )
                except Exception as exc:  # reported, never swallowed
                    errors.append(repr(exc))
                    continue
                t1 = time.time()
                with lock:
                    statuses[status] += 1
                    if gen == 1:
                        last_old_start[key] = max(last_old_start.get(key, 0.0), t0)
                    else:
                        seen.add(key)
                        first_new_return[key] = min(first_new_return.get(key, t1), t1)

    orders = [random.sample(keys, len(keys)) for _ in range(threads)]
    ts = [threading.Thread(target=warm, args=(o,)) for o in orders]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    warmed.put("warm")
    assert invalidated.wait(60)
    ts = [threading.Thread(target=hammer, args=(o,)) for o in orders]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put(
        {
            "errors": errors,
            "statuses": dict(statuses),
            "last_old_start": last_old_start,
            "first_new_return": first_new_return,
        }
    )


def watch(location, prefix, key, ready, go, results):
    """Read ``key`` fresh, then, once told, poll until it is a miss: put how
    many seconds that took (None: never, within 10 s)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from tests.helpers.procs import make_cache

    cache = make_cache(location, prefix, timeout=300, LOCK_TIMEOUT=5, TAGS_MAX_AGE=1.0)
    assert cache.get(key) is not None
    time.sleep(0.3)  # the table's listener subscribes
    assert cache.get(key) is not None
    ready.set()
    assert go.wait(30)
    start = time.monotonic()
    while time.monotonic() - start < 10:
        if cache.get(key) is None:
            results.put(time.monotonic() - start)
            return
        time.sleep(0.01)
    results.put(None)
