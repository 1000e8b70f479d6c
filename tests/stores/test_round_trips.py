"""Round trips per operation on the stores without scripts, counted by the
servers themselves (memcached's ``stats``, the database's queries): the
numbers in the README's store table."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from django_dogpile.testing import Clock, another_process
from tests.helpers.procs import make_cache


def _scenarios(cache, count):
    """Counts for a fresh hit, a stale hit while another process regenerates,
    and a regeneration."""
    cache.get_or_set("warm", 1)
    cache.set("k", "v")
    fresh = count(lambda: cache.get_or_set("k", "x"))
    with Clock() as clock:
        cache.set("s", "old")
        clock.advance(11)
        regen = count(lambda: cache.get_or_set("s", "new"))
        cache.set("b", "old")
        clock.advance(11)
        inside, release = threading.Event(), threading.Event()

        def slow():
            inside.set()
            release.wait(5)
            return "new"

        t = threading.Thread(target=lambda: cache.get_or_set("b", slow))
        t.start()
        assert inside.wait(5)
        try:
            with another_process():
                got = []
                stale = count(lambda: got.append(cache.get_or_set("b", "never")))
        finally:
            release.set()
            t.join(5)
        assert got == ["old"]
    return fresh, stale, regen


@pytest.mark.memcached
@pytest.mark.parametrize(
    "retry_after, expected",
    [
        # fresh: get; stale: get, add (refused); regeneration: get, add, re-read,
        # fence (creation time, holder), set, release (holder, delete)
        (0, ({"get": 1}, {"get": 1, "set": 1}, {"get": 5, "set": 2, "delete": 1})),
        # RETRY_AFTER: the stale path and a regeneration also look for a hold
        (5, ({"get": 1}, {"get": 2, "set": 1}, {"get": 6, "set": 2, "delete": 1})),
    ],
)
def test_memcached_round_trips(memcached_server, retry_after, expected):
    from pymemcache.client.base import Client

    server = Client(("127.0.0.1", memcached_server.port))
    names = {b"cmd_get": "get", b"cmd_set": "set", b"delete_hits": "delete", b"delete_misses": "delete"}

    def count(fn):
        before = server.stats()
        fn()
        after = server.stats()
        out: dict[str, int] = {}
        for stat, name in names.items():
            if after[stat] - before[stat]:
                out[name] = out.get(name, 0) + after[stat] - before[stat]
        return out

    cache = make_cache(
        "memcached", f"trips{retry_after}", timeout=10, LOCK_TIMEOUT=5, RETRY_AFTER=retry_after
    )
    cache.clear()
    assert _scenarios(cache, count) == expected


def test_database_round_trips():
    def count(fn):
        with CaptureQueriesContext(connections["files"]) as queries:
            fn()
        return len([q for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")])

    cache = make_cache("db", "trips", timeout=10, LOCK_TIMEOUT=5)
    cache.clear()
    fresh, stale, regen = _scenarios(cache, count)
    # fresh: SELECT; stale: SELECT, lease (delete-expired, INSERT refused);
    # regeneration: SELECT, lease (DELETE, INSERT), re-read, fence (creation
    # time, holder), Django's set() (COUNT, SELECT, UPDATE), release (SELECT, DELETE)
    assert (fresh, stale, regen) == (1, 3, 11)
