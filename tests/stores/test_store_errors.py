"""What a store does wrong, and what DogpileCache makes of it: a Redis that
takes no writes (out of memory, a read-only replica, failing snapshots), a
fenced write after the lease ran out, and memcached's limits on keys."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from django_dogpile.stores.base import is_outage
from tests.helpers.procs import make_cache
from tests.helpers.redis_server import RedisServer, free_port

# --- a Redis that takes no writes --------------------------------------------


def _break(raw, kind):
    if kind == "oom":
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", "1")
    elif kind == "readonly":  # a replica whose primary is gone (a failover half done)
        raw.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    elif kind == "noreplicas":  # min-replicas-to-write with no replica
        raw.config_set("min-replicas-to-write", "1")
    elif kind == "misconf":  # snapshots failing with stop-writes-on-bgsave-error
        raw.config_set("save", "3600 1")
        raw.config_set("dir", "/proc")
        raw.bgsave()
        deadline = time.monotonic() + 5
        while raw.info("persistence")["rdb_last_bgsave_status"] != "err" and time.monotonic() < deadline:
            time.sleep(0.05)


ERRORS = {
    "oom": OutOfMemoryError,
    "readonly": ReadOnlyError,
    "misconf": ResponseError,
    "noreplicas": ResponseError,
}


@pytest.fixture(params=["oom", "readonly", "misconf", "noreplicas"])
def unwritable(request, redis_server):
    """A redis-server of its own that holds a stale record, then refuses writes."""
    server = RedisServer(args=("--enable-protected-configs", "yes"))
    server.start()
    try:

        def store(ignore):
            return {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": server.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2, "IGNORE_EXCEPTIONS": ignore},
            }

        def dp(location):
            return {
                "BACKEND": "django_dogpile.cache.DogpileCache",
                "LOCATION": location,
                "TIMEOUT": 300,
                "KEY_PREFIX": "full",
                "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
            }

        with override_settings(
            CACHES={
                **settings.CACHES,
                "full_ignore": store(True),
                "full_strict": store(False),
                "dp_full_ignore": dp("full_ignore"),
                "dp_full_strict": dp("full_strict"),
            }
        ):
            caches["dp_full_ignore"].set("k", "old")
            caches["dp_full_ignore"].invalidate("k")
            raw = caches["full_strict"].client.get_client(write=True)
            _break(raw, request.param)
            yield request.param
    finally:
        # a throwaway server: no shutdown save (misconf's would fail, and
        # redis-server then refuses SIGTERM for the stop's 10 s)
        if server.proc is not None:
            server.proc.kill()
        server.cleanup()


def test_a_store_that_takes_no_writes_is_an_outage_for_the_stale_path(unwritable):
    """With IGNORE_EXCEPTIONS a stale get_or_set never raises: the callers of
    this process share one computation (as in any outage) or get the stale
    value; without it the store's error reaches the caller."""
    cache = caches["dp_full_ignore"]
    calls, results, errors = [], [], []

    def create():
        calls.append(1)
        time.sleep(0.1)
        return "new"

    def caller():
        try:
            for _ in range(3):
                results.append(cache.get_or_set("k", create))
        except Exception as exc:  # pragma: no cover - the failure asserted below
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert set(results) <= {"old", "new"} and len(results) == 24
    assert len(calls) == 1, "one computation per key per process during an outage"
    cache.set("other", 1)  # swallowed, as django-redis's own set() does
    cache.delete("other")

    strict = caches["dp_full_strict"]
    with pytest.raises(ERRORS[unwritable]):
        strict.get_or_set("k", create)
    with pytest.raises(ERRORS[unwritable]):
        strict.set("other", 1)


@pytest.mark.parametrize(
    "error, outage",
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
        (ReadOnlyError("You can't write against a read only replica."), True),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), True),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (ResponseError("BUSY Redis is busy running a script."), True),
        (ResponseError("CLUSTERDOWN The cluster is down"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (ResponseError("ERR Error running script"), False),
    ],
)
def test_store_errors_are_classified_once(error, outage):
    assert is_outage(error) is outage


# --- the fenced write after the lease ran out ----------------------------------


def _late_regeneration_against_a_set(redis_server, key):
    cache = make_cache("redis", "latefence", LOCK_TIMEOUT=0.3)
    other = make_cache("redis", "latefence", LOCK_TIMEOUT=0.3)
    cache.set(key, [str(i) for i in range(300_000)])
    cache.invalidate(key)
    record_key = caches["redis"].make_key(cache.make_and_validate_key(key))
    created = threading.Event()
    created_at = [0.0]
    sent = threading.Event()

    def watch():
        sock = socket.create_connection(("127.0.0.1", redis_server.port))
        sock.sendall(b"MONITOR\r\n")
        sock.settimeout(0.05)
        buf = b""
        needle = f'"GET" "{record_key}"'.encode()  # a read outside any script
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                try:
                    buf += sock.recv(65536)
                except TimeoutError:
                    if created.is_set() and time.monotonic() > created_at[0] + 1:
                        break  # the late writer read nothing outside a script
                    continue
                if not created.is_set():
                    buf = buf[-4096:]
                    continue
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                if any(needle in line and b"lua]" not in line for line in lines):
                    break
        finally:
            sock.close()
        other.set(key, "explicit")
        sent.set()

    def slow():
        time.sleep(0.6)  # past LOCK_TIMEOUT
        created_at[0] = time.monotonic()
        created.set()
        return "regenerated"

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert cache.get_or_set(key, slow) == "regenerated"
    assert sent.wait(10)
    watcher.join(10)
    return cache.get(key)


@pytest.mark.redis
@pytest.mark.slow
def test_a_set_landing_while_a_late_regeneration_writes_wins(redis_server):
    """A creator slower than LOCK_TIMEOUT (nobody took the lease over) writes
    only over the very record it started from, atomically: an explicit set()
    landing at the moment it reads the record wins.  The set is sent the
    instant a MONITOR shows the late writer reading the record outside a
    script; the old value is large, so a check-then-write would still be
    unpickling it when the set lands.  Three rounds."""
    assert [_late_regeneration_against_a_set(redis_server, f"k{i}") for i in range(3)] == ["explicit"] * 3


# --- memcached: keys as memcached counts them ----------------------------------


@pytest.mark.memcached
def test_a_key_of_multibyte_characters_works_as_on_plain_memcached(memcached_server):
    """120 x 'é' is 120 characters (Django does not warn) and 240 bytes:
    with the prefix and the lock suffix over memcached's 250."""
    plain = caches["memcached"]
    key = "é" * 120
    plain.set(key, 1)  # Django's own backend takes it
    assert plain.get(key) == 1
    cache = make_cache("memcached", "", LOCK_TIMEOUT=5)
    assert cache.get_or_set(key, lambda: 1) == 1
    assert cache.incr(key) == 2
    cache.set(key, 5)
    assert cache.get(key) == 5
    assert cache.delete(key)


@pytest.mark.memcached
@pytest.mark.parametrize("length", range(224, 234))
def test_keys_near_the_limit_work_with_retry_after(memcached_server, length):
    """The retry hold (lock key + ':retry') is the longest key the wrapper
    makes: it is measured too."""
    cache = make_cache("memcached", "", LOCK_TIMEOUT=5, RETRY_AFTER=5, SERVE_STALE_ON_ERROR=True)
    key = "k" * length
    cache.set(key, "old")
    cache.invalidate(key)

    def fail():
        raise RuntimeError("the database is down")

    assert cache.get_or_set(key, fail) == "old"  # leaves a hold
    assert cache.get_or_set(key, lambda: "too early") == "old"  # held
    cache.set(key, "new")  # ends the hold
    assert cache.get(key) == "new"
    assert cache.delete(key)
