"""Results that decide their own fate (``django_dogpile.results``): a
creator's own timeout, its tags, "serve but don't store" -- returned as a
``CacheResult`` or said with ``expires_in()`` / ``dont_store()`` -- on
every face, on locmem, Redis and memcached, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from django.core.cache import caches
from django.http import HttpResponse
from django.template import Context, Template
from django.test import RequestFactory

from django_dogpile.decorators import cached, dogpile_cache_page
from django_dogpile.records import CREATED, EXPIRES
from django_dogpile.results import CacheResult, dont_store, expires_in
from tests.helpers.procs import make_cache
from tests.helpers.stores import stores

SHARED = stores("locmem", "redis", "memcached")


def freshness(cache, key):
    raw = cache.store.get(cache.binding.store_key(key))
    return None if raw is None else round(raw[EXPIRES] - raw[CREATED], 3)


def counting(value):
    calls = []

    def creator():
        calls.append(1)
        return value() if callable(value) else value

    return creator, calls


@pytest.mark.parametrize("store", SHARED)
def test_a_creator_sets_its_own_timeout(store):
    cache = make_cache(store, f"own-{store}", timeout=300)
    assert cache.get_or_set("empty", lambda: CacheResult([], timeout=10)) == []
    assert freshness(cache, "empty") == 10
    assert cache.get_or_set("full", lambda: CacheResult([1], timeout=None)) == [1]
    assert cache.store.get(cache.binding.store_key("full"))[EXPIRES] is None  # forever
    assert cache.get_or_set("said", lambda: expires_in(20) and "said") == "said"
    assert freshness(cache, "said") == 20
    assert cache.get_or_set("plain", lambda: "plain") == "plain"
    assert freshness(cache, "plain") == 300


@pytest.mark.parametrize("store", SHARED)
def test_serve_but_dont_store(store):
    cache = make_cache(store, f"nostore-{store}", timeout=300)
    for made in (lambda: CacheResult("error page", store=False), lambda: dont_store() and "error page"):
        creator, calls = counting(made)
        key = f"k{id(made)}"
        assert cache.get_or_set(key, creator) == "error page"
        assert cache.get_or_set(key, creator) == "error page"
        assert len(calls) == 2 and cache.get(key) is None  # served each time, never kept
        assert cache.get_or_set(key, "then stored") == "then stored" and cache.get(key) == "then stored"


def test_a_result_of_zero_or_less_is_not_stored_and_timeout_zero_unwraps():
    cache = make_cache("locmem", "zero")
    assert cache.get_or_set("a", lambda: CacheResult("v", timeout=0)) == "v"
    assert cache.get("a") is None
    assert cache.get_or_set("b", lambda: CacheResult("w", timeout=60), timeout=0) == "w"  # never the wrapper


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_results_tags_invalidate_it(store):
    cache = make_cache(store, f"restags-{store}")
    assert cache.get_or_set("t", lambda: CacheResult("tagged", tags=["partner"])) == "tagged"
    assert cache.get_or_set_status("t", "new")[1] == "HIT"
    cache.invalidate_tags("partner")
    assert cache.get_or_set_status("t", "new") == ("new", "EXPIRED")


def test_the_shortest_word_wins_and_the_innermost_value_is_the_one_decided():
    cache = make_cache("locmem", "nested", timeout=300)

    def inner():
        dont_store()
        return "inner"

    def outer():
        expires_in(50)
        expires_in(30)  # the shortest
        return cache.get_or_set("inner", inner) + "+outer"

    assert cache.get_or_set("outer", outer) == "inner+outer"
    assert freshness(cache, "outer") == 30 and cache.get("inner") is None


def test_outside_a_creator_the_words_do_nothing_and_bad_ones_fail():
    assert expires_in(10) is False and dont_store() is False
    with pytest.raises(TypeError, match="expires_in"):
        expires_in("10")
    with pytest.raises(TypeError, match="CacheResult"):
        CacheResult(1, timeout="soon")
    with pytest.raises(TypeError, match="store"):
        CacheResult(1, store="no")


@pytest.mark.parametrize("store", ["dp_locmem", "dp_redis"])
def test_cached_functions_and_their_refresh(store):
    calls = []

    @cached(300, cache=store)
    def offers(shop):
        calls.append(shop)
        return CacheResult([], timeout=10) if shop == "empty" else [shop]

    assert offers("empty") == [] and offers("a") == ["a"]
    cache = caches[store]
    assert freshness(cache, offers.key_for("empty")) == 10
    assert freshness(cache, offers.key_for("a")) == 300
    assert offers.refresh("empty") == [] and freshness(cache, offers.key_for("empty")) == 10


@pytest.mark.parametrize("store", ["dp_locmem", "dp_redis"])
def test_async_creators_decide_too(store):
    cache = caches[store]

    async def made():
        return CacheResult({"v": 1}, timeout=7)

    async def unkept():
        dont_store()
        return "unkept"

    async def scenario():
        return await cache.aget_or_set("async-own", made), await cache.aget_or_set("async-unkept", unkept)

    assert asyncio.run(scenario()) == ({"v": 1}, "unkept")
    assert freshness(cache, "async-own") == 7 and cache.get("async-unkept") is None


def test_a_fragment_decides_its_own_fate():
    template = Template(
        '{% load dogpile %}{% dogpile_cache 300 "frag" using="dp_locmem" %}{{ decide }}{% enddogpile_cache %}'
    )
    calls = []

    def decide():
        calls.append(1)
        expires_in(15)
        return "fragment"

    assert template.render(Context({"decide": decide})) == "fragment"
    assert template.render(Context({"decide": decide})) == "fragment" and len(calls) == 1
    cache = caches["dp_locmem"]
    skey = next(k for k in cache.store._cache if "template.cache.frag" in k)
    raw = cache.store.get(skey.split(":", 2)[2])
    assert round(raw[EXPIRES] - raw[CREATED], 3) == 15


@pytest.mark.parametrize("use_async", [False, True])
def test_a_page_decides_its_lifetime_and_whether_it_is_kept(use_async):
    rf = RequestFactory()
    runs = []

    def body(request):
        runs.append(request.path)
        if request.path == "/down/":
            dont_store()
        else:
            expires_in(20)
        return HttpResponse("page")

    if use_async:

        async def view(request):
            return body(request)
    else:
        view = body
    page = dogpile_cache_page(300, cache="dp_locmem", key_prefix=f"res{use_async}")(view)

    def get(path):
        response = page(rf.get(path))
        return asyncio.run(response) if use_async else response

    first, again = get("/up/"), get("/up/")
    assert (first["X-Dogpile-Cache"], again["X-Dogpile-Cache"]) == ("MISS", "HIT")
    assert "max-age=20" in first["Cache-Control"]
    down, down_again = get("/down/"), get("/down/")
    assert (down["X-Dogpile-Cache"], down_again["X-Dogpile-Cache"]) == ("MISS", "MISS")
    assert "max-age=0" in down["Cache-Control"]
    assert runs == ["/up/", "/down/", "/down/"]


# --- found by a review ----------------------------------------------------------


def test_an_inner_creator_that_stores_nothing_speaks_for_itself_only():
    cache = make_cache("locmem", "inner-unstored", timeout=300, WAIT_TIMEOUT=0.2)

    def quiet():
        dont_store()
        return "i"

    def outer():
        return "o+" + cache.get_or_set("inner", quiet, timeout=0)  # computed, never stored

    assert cache.get_or_set("outer", outer) == "o+i"
    assert freshness(cache, "outer") == 300  # the inner's word was not the outer's


@pytest.mark.parametrize("store", ["dp_locmem", "dp_redis"])
def test_coroutines_that_wait_on_an_unstored_value_make_their_own(store):
    cache = caches[store]
    made = []

    async def creator():
        made.append(1)
        await asyncio.sleep(0.05)
        return CacheResult(f"v{len(made)}", store=False)

    async def scenario():
        return await asyncio.gather(
            *(cache.aget_or_set_status(f"unstored-{store}", creator) for _ in range(4))
        )

    results = asyncio.run(scenario())
    assert sorted(value for value, _ in results) == ["v1", "v2", "v3", "v4"]  # each its own, as sync threads
    assert cache.get(f"unstored-{store}") is None
