"""``OPTIONS["JITTER"]``: each stored freshness shortened at random by up
to a fraction of itself, so records written together expire apart -- on
every write path, on locmem, Redis and memcached; validated by the checks."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from django_dogpile.records import CREATED, EXPIRES
from tests.helpers.procs import make_cache
from tests.helpers.stores import stores

KEYS = [f"k{i}" for i in range(60)]


def freshness(cache, key):
    """Seconds the stored record of ``key`` is fresh for, from its creation."""
    raw = cache.store.get(cache.binding.store_key(key))
    return raw[EXPIRES] - raw[CREATED]


@pytest.mark.parametrize("store", stores("locmem", "redis", "memcached"))
def test_records_written_together_expire_apart(store):
    cache = make_cache(store, f"jitter-{store}", timeout=100, JITTER=0.5)
    cache.set_many({k: k for k in KEYS[:20]})
    for k in KEYS[20:40]:
        cache.set(k, k)
    for k in KEYS[40:]:
        assert cache.get_or_set(k, lambda k=k: k) == k  # a regeneration
    spans = {k: freshness(cache, k) for k in KEYS}
    assert all(50 <= span <= 100 for span in spans.values()), spans
    for part in (KEYS[:20], KEYS[20:40], KEYS[40:]):  # each write path spreads
        seen = [spans[k] for k in part]
        assert max(seen) - min(seen) > 10, seen
    assert cache.get_many(KEYS) == {k: k for k in KEYS}  # all still fresh


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_touch_and_add_are_spread_too(store):
    cache = make_cache(store, f"jitter-touch-{store}", timeout=100, JITTER=0.5)
    for k in KEYS[:20]:
        assert cache.add(k, k)
    added = [freshness(cache, k) for k in KEYS[:20]]
    for k in KEYS[:20]:
        assert cache.touch(k, 200)
    touched = [freshness(cache, k) for k in KEYS[:20]]
    assert max(added) - min(added) > 10 and all(50 <= s <= 100 for s in added), added
    # touch keeps the record's creation: its freshness is counted from there
    assert max(touched) - min(touched) > 10 and all(s <= 200 + 1 for s in touched), touched


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_without_jitter_every_record_is_fresh_for_its_timeout(store):
    cache = make_cache(store, f"nojitter-{store}", timeout=100)
    cache.set_many({k: k for k in KEYS[:10]})
    assert {round(freshness(cache, k), 6) for k in KEYS[:10]} == {100}


def test_forever_stays_forever_and_zero_still_stores_nothing():
    cache = make_cache("locmem", "jitter-edges", timeout=100, JITTER=0.9)
    cache.set("forever", 1, timeout=None)
    assert cache.store.get(cache.binding.store_key("forever"))[EXPIRES] is None
    cache.set("zero", 1, timeout=0)
    assert cache.get("zero") is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (0.25, True),
        ("0.25", True),
        (0.999, True),
        (1, False),
        (-0.1, False),
        ("x", False),
        (True, False),
        (None, False),
    ],
)
def test_the_checks_validate_jitter(value, ok):
    from django.conf import settings

    alias = {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "OPTIONS": {"JITTER": value},
    }
    with override_settings(CACHES={**settings.CACHES, "dp_jitter": alias}):
        found = [m for m in run_checks() if "JITTER" in m.msg]
    if ok:
        assert found == []
    else:
        assert [m.id for m in found] == ["django_dogpile.E008"], found
        assert "dp_jitter" in found[0].msg or "dp_jitter" in str(found[0].obj), found[0]
