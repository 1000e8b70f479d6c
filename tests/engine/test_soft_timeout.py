"""``OPTIONS["SOFT_TIMEOUT"]``: the caller that regenerates a stale value
waits at most that long for its creator, then serves the stale value while
the regeneration finishes in a pool thread (lease kept, write fenced); a
cold caller waits as ever.  On locmem, Redis and memcached."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from tests.helpers.procs import make_cache
from tests.helpers.stores import stores

SHARED = stores("locmem", "redis", "memcached")


def slow(value, seconds, calls):
    def creator():
        calls.append(threading.current_thread().name)
        time.sleep(seconds)
        return value

    return creator


def stale(cache, key, value="old"):
    cache.set(key, value)
    cache.invalidate(key)


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("store", SHARED)
def test_a_slow_regeneration_serves_stale_after_the_soft_timeout_and_finishes(store):
    cache = make_cache(store, f"soft-{store}", SOFT_TIMEOUT=0.1)
    stale(cache, "k")
    calls = []
    started = time.monotonic()
    assert cache.get_or_set_status("k", slow("new", 1.5, calls)) == ("old", "UPDATING")
    assert time.monotonic() - started < 1.0  # did not wait for the 1.5 s creator
    # the lease stays held: another caller serves stale, nobody else regenerates
    assert cache.get_or_set_status("k", slow("other", 0, calls)) == ("old", "UPDATING")
    assert wait_for(lambda: cache.get("k") == "new")  # finished, stored, fenced
    assert len(calls) == 1 and calls[0].startswith("django_dogpile")  # in a pool thread
    assert cache.get_or_set_status("k", slow("again", 0, calls)) == ("new", "HIT")


@pytest.mark.parametrize("store", SHARED)
def test_a_regeneration_within_the_soft_timeout_serves_the_new_value(store):
    cache = make_cache(store, f"softfast-{store}", SOFT_TIMEOUT=2)
    stale(cache, "k")
    calls = []
    before = cache.binding.stats.snapshot()
    assert cache.get_or_set_status("k", slow("new", 0.05, calls)) == ("new", "EXPIRED")
    after = cache.binding.stats.snapshot()
    assert after["EXPIRED"] - before["EXPIRED"] == 1 and after["REGENERATIONS"] - before["REGENERATIONS"] == 1
    assert cache.get("k") == "new" and len(calls) == 1


def test_a_cold_caller_waits_for_its_value_as_ever():
    cache = make_cache("locmem", "softcold", SOFT_TIMEOUT=0.05)
    calls = []
    started = time.monotonic()
    assert cache.get_or_set_status("cold", slow("made", 0.3, calls)) == ("made", "MISS")
    assert time.monotonic() - started >= 0.3 and calls == [threading.current_thread().name]


def test_a_failure_within_the_soft_timeout_is_the_callers_as_inline():
    def boom():
        raise ValueError("partner down")

    cache = make_cache("locmem", "softfail", SOFT_TIMEOUT=2)
    stale(cache, "k")
    with pytest.raises(ValueError, match="partner down"):
        cache.get_or_set("k", boom)
    serving = make_cache("locmem", "softfail2", SOFT_TIMEOUT=2, SERVE_STALE_ON_ERROR=True)
    stale(serving, "k")
    assert serving.get_or_set_status("k", boom) == ("old", "STALE")


def test_background_wins_over_a_soft_timeout():
    cache = make_cache("locmem", "softbg", SOFT_TIMEOUT=5, BACKGROUND=True)
    stale(cache, "k")
    started = time.monotonic()
    assert cache.get_or_set_status("k", slow("new", 0.3, [])) == ("old", "UPDATING")
    assert time.monotonic() - started < 0.25
    assert wait_for(lambda: cache.get("k") == "new")


@pytest.mark.parametrize(
    ("value", "ok"), [(None, True), (0.2, True), ("0.2", True), (0, False), (-1, False), ("x", False)]
)
def test_the_checks_validate_soft_timeout(value, ok):
    from django.conf import settings

    alias = {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "OPTIONS": {"SOFT_TIMEOUT": value},
    }
    with override_settings(CACHES={**settings.CACHES, "dp_soft": alias}):
        found = [m.id for m in run_checks() if "SOFT_TIMEOUT" in m.msg]
    assert found == ([] if ok else ["django_dogpile.E008"])
