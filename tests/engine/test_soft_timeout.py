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


# --- found by a review ----------------------------------------------------------


class SlowPickle:
    """A value whose pickling takes 0.3 s: the store write outlasts the creator."""

    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        time.sleep(0.3)
        return (SlowPickle, (self.v,))

    def __str__(self):
        return self.v


def test_a_stale_value_served_past_the_soft_timeout_bubbles_its_own_tags():
    # the pool thread set the new value's stamp before its (slow) write
    # ended; the caller served the stale value under that stamp, so the page
    # built on it was stored as current for the tag
    cache = make_cache("locmem", "softstamp", SOFT_TIMEOUT=0.1, LOCK_TIMEOUT=5)
    cache.get_or_set("price", lambda: SlowPickle("price=10"), tags=["price"])
    cache.invalidate_tags("price")

    def page():
        fresh = cache.get_or_set("price", lambda: SlowPickle("price=12"), tags=["price"])
        return "page shows " + str(fresh)

    assert cache.get_or_set_status("page", page) == ("page shows price=10", "MISS")
    assert wait_for(lambda: str(cache.get("price")) == "price=12")
    value, status = cache.get_or_set_status("page", lambda: "page shows (regenerated)")
    assert (value, status) == ("page shows (regenerated)", "EXPIRED")  # behind the tag: not current


def test_a_value_landed_meanwhile_is_served_as_a_hit_not_the_stale_one(redis_server):
    cache = make_cache("redis", "softlanded", SOFT_TIMEOUT=0.5)
    stale(cache, "k")
    raw = cache.store.get(cache.binding.store_key("k"))  # what this caller read
    cache.set("k", "fresh-from-other")  # another caller stores between that read and the lock
    assert cache.regeneration.run("k", cache.binding.store_key("k"), raw, slow("mine", 0, []), 60) == (
        "fresh-from-other",
        "HIT",
    )


def test_a_failing_detach_gives_its_budget_slot_back():
    cache = make_cache("locmem", "softbudget", SOFT_TIMEOUT=1, REGENERATION_BUDGET=1, WAIT_TIMEOUT=0.5)

    def creator():
        return "new"

    def broken():
        raise RuntimeError("cannot copy the request")

    creator.detach = broken
    stale(cache, "a")
    with pytest.raises(RuntimeError, match="cannot copy"):
        cache.get_or_set("a", creator)
    stale(cache, "b")
    assert cache.get_or_set_status("b", lambda: "new-b") == ("new-b", "EXPIRED")  # the slot is free


def test_a_fragment_made_from_the_visitors_state_is_theirs_under_a_soft_timeout():
    # the fragment's "served, never stored" (a CSRF token) is a BaseException
    # the pool thread did not hand back: the visitor got the stale fragment
    from django.conf import settings
    from django.core.cache.utils import make_template_fragment_key
    from django.template import engines
    from django.test import RequestFactory

    alias = {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "KEY_PREFIX": "softfrag",
        "OPTIONS": {"SOFT_TIMEOUT": 1.0, "LOCK_TIMEOUT": 5},
    }
    source = (
        '{% load dogpile %}{% dogpile_cache 300 "frag" using="dp_softfrag" %}'
        "{% if form %}<form>{% csrf_token %}</form>{% else %}n={{ n }}{% endif %}{% enddogpile_cache %}"
    )
    with override_settings(CACHES={**settings.CACHES, "dp_softfrag": alias}):
        template = engines["django"].from_string(source)
        rf = RequestFactory()
        assert template.render({"n": 1}, request=rf.get("/")) == "n=1"
        from django.core.cache import caches

        caches["dp_softfrag"].invalidate(make_template_fragment_key("frag"))
        mine = template.render({"form": True}, request=rf.get("/"))
    assert "csrfmiddlewaretoken" in mine, mine
