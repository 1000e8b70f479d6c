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

    return DogpileCache(location, {"TIMEOUT": timeout, "KEY_PREFIX": prefix, "OPTIONS": options})


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


def hammer(prefix, key, threads, delay, counter, start_at, options, results, location="redis"):
    """`threads` threads call get_or_set once, all at time `start_at`."""
    _setup()
    cache = make_cache(location, prefix, **options)
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


def regenerate_keys(location, prefix, keys, start_at, delay, log_path, options, results):
    """Two threads each call get_or_set on every key; creations are logged."""
    _setup()
    cache = make_cache(location, prefix, **options)

    def creator(key):
        def create():
            with open(log_path, "a") as f:  # one small O_APPEND write: atomic
                f.write(f"{key}\n")
            time.sleep(delay)
            return f"new-{key}"

        return create

    errors = []

    def run(order):
        time.sleep(max(0, start_at - time.time()))
        for key in order:
            try:
                cache.get_or_set(key, creator(key), 60)
            except Exception as exc:  # reported, never swallowed
                errors.append(repr(exc))

    ts = [threading.Thread(target=run, args=(o,)) for o in (keys, list(reversed(keys)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put(errors or "done")


def slow_regeneration(location, prefix, key, delay, options, started, results):
    """Regenerate a stale ``key`` for ``delay`` seconds (outliving its lease)."""
    _setup()
    cache = make_cache(location, prefix, **options)

    def create():
        started.set()
        time.sleep(delay)
        return "from the old holder"

    results.put(cache.get_or_set(key, create, 60))


def hold_forever_on(location, prefix, key, options, started):
    """Win the lock on a cold key, then hang in the creator until killed."""
    _setup()
    cache = make_cache(location, prefix, **options)

    def create():
        started.set()
        time.sleep(3600)

    cache.get_or_set(key, create)


def get_or_set_at(location, prefix, key, value, options, at, results):
    """One get_or_set at time ``at``; report (value got, creator called)."""
    _setup()
    cache = make_cache(location, prefix, **options)
    called = []

    def create():
        called.append(1)
        return value

    time.sleep(max(0, at - time.time()))
    results.put((cache.get_or_set(key, create, 60), bool(called)))


def set_value(location, prefix, key, value, timeout, options, results):
    _setup()
    cache = make_cache(location, prefix, **options)
    cache.set(key, value, timeout)
    results.put("set")


def hits_then_linger(location_alias, key, n, results):
    """``n`` get_or_set calls on a DogpileCache alias, then live on long
    enough for the counters thread to publish them; exit cleanly (the
    setting stays on to the end: the exit folds the counters)."""
    _setup()
    from django.core.cache import caches
    from django.test import override_settings

    override_settings(DOGPILE={"STATS_INTERVAL": 0.2}).enable()
    cache = caches[location_alias]
    for _ in range(n):
        cache.get_or_set(key, "v", 60)
    results.put("done")
    time.sleep(1.0)


def near_reader(prefix, options, start_at, until, results):
    """Read key 'k' in a loop; report each change of value as
    (start of the previous read, start of this read, value)."""
    _setup()
    cache = make_cache("redis", prefix, **options)
    cache.get("k")  # connect; the near cache's listener subscribes
    bus = cache.store._bus
    assert bus.subscribed.wait(10)
    changes = []
    last, prev_start = object(), 0.0
    time.sleep(max(0, start_at - time.time()))
    while (started := time.time()) < until and last != "done":
        value = cache.get("k")
        if value != last:
            changes.append((prev_start, started, value))
            last = value
        prev_start = started
        # a read every millisecond, as a busy worker's requests come: not a
        # spin that starves the listener thread of its own process on 2 cores
        time.sleep(0.001)
    results.put(changes)


def failover_load(configs, keys, threads, timeout, delay, log_path, ready, go, stop, results):
    """Load for the Sentinel failover test: for each ``(tag, location,
    options)`` in ``configs``, ``threads`` threads call ``get_or_set`` on every
    key in turn, from ``go`` until ``stop``.

    Every answer is recorded as ``(started, ended, key, problem)``: ``problem``
    is None for a good answer (a value this key's creator made), else the
    exception or the wrong value.  Every creator call appends ``time tag key
    pid`` to ``log_path`` with one ``O_APPEND`` write, so the count survives
    whatever the store loses.  Results go to ``results`` as ``({tag: answers},
    [(alias, warning)]``: the package's log warnings are kept, not printed.
    """
    import logging

    _setup()
    from django_dogpile.stores.base import is_outage

    warned = []

    class Count(logging.Handler):
        def emit(self, record):
            warned.append((getattr(record, "dogpile_alias", "?"), f"{record.name}: {record.getMessage()}"))

    package_log = logging.getLogger("django_dogpile")
    package_log.addHandler(Count(logging.WARNING))
    package_log.propagate = False

    caches = {tag: make_cache(location, tag, timeout, **options) for tag, location, options in configs}
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    pid = os.getpid()

    def creator(tag, key):
        def create():
            os.write(fd, f"{time.time():.6f} {tag} {key} {pid}\n".encode())
            time.sleep(delay)
            return f"{key}@{time.time():.6f}"

        return create

    answers = {tag: [] for tag in caches}

    def run(tag, offset):
        cache, out = caches[tag], answers[tag]
        order = keys[offset % len(keys) :] + keys[: offset % len(keys)]
        go.wait()
        while not stop.is_set():
            for key in order:
                t0 = time.time()
                try:
                    value = cache.get_or_set(key, creator(tag, key))
                    problem = None if str(value).startswith(f"{key}@") else f"value {value!r}"
                except Exception as exc:  # a store outage, or a bug: reported as such
                    kind = "store error" if is_outage(exc) else "OTHER"
                    problem = f"{kind} {type(exc).__module__}.{type(exc).__name__}: {exc}"
                out.append((t0, time.time(), key, problem))
                time.sleep(0.02)

    ts = [threading.Thread(target=run, args=(tag, i)) for tag in caches for i in range(threads)]
    for t in ts:
        t.start()
    ready.put(pid)
    for t in ts:
        t.join()
    os.close(fd)
    results.put((answers, warned))


def fork_after_use(alias, hits, results):
    """A preloading server: the parent uses ``alias`` (``hits`` hits), then
    forks a worker; the worker reports its counters and what it published."""
    _setup()
    import json

    from django.core.cache import caches
    from django.test import override_settings

    from django_dogpile.engine.shared_stats import shared_stats
    from django_dogpile.stats import get_stats

    with override_settings(DOGPILE={"STATS_INTERVAL": 0.2}):
        cache = caches[alias]
        cache.set("warm", "up")
        for _ in range(hits):
            cache.get_or_set("warm", "never")
        parent = get_stats(alias)["HIT"]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(read)
                inherited = get_stats(alias)["HIT"]
                cache.get_or_set("warm", "never")
                cache.get_or_set("warm", "never")
                time.sleep(0.8)  # a few publishing intervals
                procs = shared_stats(alias)["processes"]
                mine = {k: v["HIT"] for k, v in procs.items() if k.endswith(f".{os.getpid()}")}
                os.write(write, json.dumps({"inherited": inherited, "published": mine}).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        child = json.loads(os.read(read, 65536).decode())
        results.put({"parent": parent, **child})


def near_reader_keys(location, prefix, keys, options, start_at, until, results):
    """Read every key of ``keys`` in turn; report each change of a key's value
    as (key, start of the previous read of it, start of this read, value)."""
    _setup()
    cache = make_cache(location, prefix, **options)
    cache.get("connect")
    assert cache.store._bus.subscribed.wait(10)
    last = {k: object() for k in keys}
    prev = dict.fromkeys(keys, 0.0)
    changes = []
    time.sleep(max(0, start_at - time.time()))
    while time.time() < until and not all(v == "done" for v in last.values()):
        for key in keys:
            started = time.time()
            value = cache.get(key)
            if value != last[key]:
                changes.append((key, prev[key], started, value))
                last[key] = value
            prev[key] = started
        time.sleep(0.001)
    results.put(changes)


def near_writer(location, prefix, options, commands, acks):
    """Another process's writes: ``(key, value)`` from ``commands`` is set
    through a near-cached DogpileCache; ``None`` ends it."""
    _setup()
    cache = make_cache(location, prefix, **options)
    cache.get("connect")
    acks.put("ready")
    while (command := commands.get(timeout=120)) is not None:
        key, value = command
        cache.set(key, value)
        acks.put(time.time())


def batch_keys(location, prefix, keys, start_at, delay, log_path, options, results):
    """Two threads each call get_or_set_many on every key (one in reverse
    order); the creator logs each key it makes, one call per line."""
    _setup()
    cache = make_cache(location, prefix, **options)

    def creator(asked):
        with open(log_path, "a") as f:  # one small O_APPEND write: atomic
            f.write(" ".join(asked) + "\n")
        time.sleep(delay)
        return {key: f"new-{key}" for key in asked}

    out = []

    def run(order):
        time.sleep(max(0, start_at - time.time()))
        try:
            out.append(cache.get_or_set_many(order, creator, 60))
        except Exception as exc:  # reported, never swallowed
            out.append(repr(exc))

    ts = [threading.Thread(target=run, args=(o,)) for o in (keys, list(reversed(keys)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put(out)


def deploy_load(location, prefix, keys, version, options, start_at, until, delay, log_path, results):
    """Two threads call get_or_set over ``keys`` in turn from ``start_at``
    to ``until`` with the alias at ``VERSION`` ``version``; the creator logs
    each key it makes.  ``options`` None: Django's own store alias instead
    (its ``get_or_set``, ``version=``).  Reports the status words and how
    long each call took, with its status (``took``)."""
    _setup()
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    if options is None:
        store = caches[location]

        def get(key, create):
            made = []
            value = store.get_or_set(f"{prefix}:{key}", lambda: made.append(1) or create(), version=version)
            return value, "MADE" if made else "HIT"
    else:
        cache = DogpileCache(
            location, {"TIMEOUT": 60, "KEY_PREFIX": prefix, "VERSION": version, "OPTIONS": options}
        )

        def get(key, create):
            return cache.get_or_set_status(key, create)

    def creator(key):
        def create():
            with open(log_path, "a") as f:  # one small O_APPEND write: atomic
                f.write(f"{key}\n")
            time.sleep(delay)
            return f"v{version}-{key}"

        return create

    statuses, took, errors = {}, [], []
    get("warm-up", lambda: "warm")  # connect (and load the scripts) before the clock starts

    def run(offset):
        time.sleep(max(0, start_at - time.time()))
        i = offset
        while time.time() < until:
            key = keys[i % len(keys)]
            i += 1
            t0 = time.perf_counter()
            try:
                _, status = get(key, creator(key))
            except Exception as exc:  # reported, never swallowed
                errors.append(repr(exc))
                continue
            took.append((status, time.perf_counter() - t0))
            statuses[status] = statuses.get(status, 0) + 1

    ts = [threading.Thread(target=run, args=(o,)) for o in (0, len(keys) // 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    results.put({"statuses": statuses, "took": took, "errors": errors})
