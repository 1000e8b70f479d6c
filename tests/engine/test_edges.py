"""Bad input at the edges: keys, values and timeouts, over every store.

Each case: a clear error or Django's own warning, and nothing already cached
is lost.
"""

from __future__ import annotations

import math
import warnings

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.core.cache.backends.base import memcache_key_warnings
from django.template import Context, Template
from django.test import Client, override_settings
from django.utils.html import escape

from django_dogpile.decorators import cached
from django_dogpile.testing import Clock

STORES = ["dp_locmem", pytest.param("dp_redis", marks=pytest.mark.redis), "dp_file"]


@pytest.fixture(params=STORES)
def cache(request):
    alias = request.param
    if "redis" in alias:
        request.getfixturevalue("redis_server")
    c = caches[alias]
    c.clear()
    c.set("keep", "precious")
    yield c
    assert c.get("keep") == "precious"  # no bad call lost what was cached
    c.clear()


def django_warnings(store_alias, key):
    """What Django's own backend says about ``key`` (the messages)."""
    store = caches[store_alias]
    return list(memcache_key_warnings(store.make_key(key)))


def caught(fn):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in seen if issubclass(w.category, CacheKeyWarning)]


@pytest.mark.parametrize(
    "key",
    ["has space", "tab\there", "new\nline", "del\x7fchar", "x" * 251, "ünïcode ok"],
    ids=["space", "tab", "newline", "del", "too-long", "unicode"],
)
def test_bad_keys_warn_once_per_call_exactly_as_django_and_still_work(cache, key):
    expected = django_warnings("locmem", key)  # the same prefix and version
    _, seen = caught(lambda: cache.set(key, "v"))
    assert seen == expected
    value, seen = caught(lambda: cache.get(key))
    assert value == "v" and seen == expected
    value, seen = caught(lambda: cache.get_or_set(key, "w"))
    assert value == "v" and seen == expected
    _, seen = caught(lambda: cache.get_or_set(key, "w"))  # and again: not memoised away
    assert seen == expected


def test_a_key_django_accepts_never_warns_through_the_wrapper(cache):
    """The wrapper's prefix inside the store's must not push a key over 250."""
    key = "k" * (250 - len(cache.make_key("")))  # exactly 250 once made
    assert django_warnings("locmem", key) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get_or_set(key, "long") == "long"
        assert cache.get(key) == "long"
        with Clock() as clock:  # the lock key is longer still
            cache.set(key, "old", timeout=5)
            clock.advance(6)
            assert cache.get_or_set(key, "new") == "new"


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_huge_values(cache, size):
    blob = b"\x00\xff" * (size // 2)
    assert cache.get_or_set("huge", lambda: blob) == blob
    assert cache.get("huge") == blob
    assert cache.get_or_set("huge", b"other") == blob


@pytest.mark.parametrize("bad", ["10", [1], math.nan, True, object()], ids=repr)
def test_bad_timeouts_are_a_clear_error_and_change_nothing(cache, bad):
    for call in (
        lambda: cache.set("keep", "lost", timeout=bad),
        lambda: cache.add("new", "x", timeout=bad),
        lambda: cache.touch("keep", timeout=bad),
        lambda: cache.set_many({"keep": "lost"}, timeout=bad),
        lambda: cache.get_or_set("keep2", "x", timeout=bad),
    ):
        with pytest.raises(TypeError, match="timeout must be None or a number of seconds"):
            call()
    assert cache.get("new") is None and cache.get("keep2") is None


def test_float_negative_zero_and_infinite_timeouts(cache):
    with Clock() as clock:
        cache.set("f", 1, timeout=0.5)
        assert cache.get("f") == 1
        clock.advance(0.6)
        assert cache.get("f") is None  # stale is a miss for get()
        assert cache.get_or_set("n", lambda: "computed", timeout=-1) == "computed"
        assert not cache.has_key("n")  # negative: computed, never stored (as Django's)
        cache.set("gone", 1)
        cache.set("gone", 2, timeout=0)  # 0 deletes, as in Django
        assert not cache.has_key("gone")
        cache.set("inf", "forever", timeout=math.inf)
        clock.advance(10**9)
        assert cache.get("inf") == "forever"


# --- the faces build keys that are always safe ---------------------------------

NASTY = [
    "a b",
    "line\nbreak\r\x00",
    "ü" * 300,
    "x" * 5000,
    "../../etc/passwd",
    "%0A%20",
]


def stored_keys():
    return [k for k in caches["locmem"]._cache]  # the locmem store's own keys


@pytest.fixture
def strict():
    caches["dp_locmem"].clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        yield
    for key in stored_keys():
        assert not list(memcache_key_warnings(key)), key


def test_user_input_in_urls_and_headers_never_makes_a_bad_key(strict):
    client = Client()
    for value in NASTY:
        for path in (f"/page/?q={value}", f"/varies/?q={value}"):
            response = client.get(path, HTTP_ACCEPT_LANGUAGE=value.replace("\n", " ")[:200])
            assert response.status_code == 200


def test_user_input_in_fragment_names_and_vary_on_never_makes_a_bad_key(strict):
    template = Template(
        "{% load dogpile %}{% dogpile_cache 60 frag value %}[{{ value }}]{% enddogpile_cache %}"
    )
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        for value in NASTY:
            assert template.render(Context({"value": value})) == f"[{escape(value)}]"


def test_user_input_in_cached_arguments_never_makes_a_bad_key(strict):
    @cached(60, cache="dp_locmem")
    def echo(text):
        return text

    @cached(60, cache="dp_locmem", key=lambda text: text)
    def echo_by_key(text):
        return text

    for value in NASTY:
        assert echo(value) == value
        assert echo_by_key(value) == value
