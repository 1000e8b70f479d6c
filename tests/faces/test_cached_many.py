"""``cached_many``: ``cached()`` for a function of many items (``in_bulk``):
each item's result cached on its own, the missing ones made in one call."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from django_dogpile.decorators import cached_many
from django_dogpile.results import CacheResult
from django_dogpile.testing import Clock

DOGPILE = {"CACHE_ALIAS": "dp_locmem"}


@pytest.fixture(autouse=True)
def fresh_caches():
    from django.core.cache import caches

    caches["dp_locmem"].clear()
    caches["locmem"].clear()
    with override_settings(DOGPILE=DOGPILE):
        yield


def test_one_call_for_the_items_not_cached_and_one_read_on_a_hit():
    calls = []

    @cached_many(60)
    def squares(ids):
        calls.append(list(ids))
        return {i: i * i for i in ids if i != 13}

    assert squares([1, 2, 3]) == {1: 1, 2: 4, 3: 9}
    assert squares([2, 3, 4, 13]) == {2: 4, 3: 9, 4: 16}
    assert calls == [[1, 2, 3], [4, 13]]  # only what was missing
    assert squares([1, 2, 3, 4]) == {1: 1, 2: 4, 3: 9, 4: 16}
    assert calls == [[1, 2, 3], [4, 13]]
    assert squares([13]) == {}  # left out: never cached
    assert calls[-1] == [13]


def test_keys_are_cached_per_item_and_invalidated_softly():
    calls = []

    @cached_many(60)
    def names(ids):
        calls.append(list(ids))
        return {i: f"n{i}-{len(calls)}" for i in ids}

    assert names([1, 2]) == {1: "n1-1", 2: "n2-1"}
    assert names.key_for(1) != names.key_for(2)
    assert names.key_for(1) == names.key_for(1)
    assert names.invalidate(1) is True
    assert names([1, 2]) == {1: "n1-2", 2: "n2-1"}  # one regenerated, in one call
    assert calls[-1] == [1]


def test_per_item_tags_and_self_timed_results():
    from django.core.cache import caches

    @cached_many(60, tags=lambda i: [f"product:{i}"])
    def products(ids):
        return {i: CacheResult(f"p{i}", timeout=5) if i == 2 else f"p{i}" for i in ids}

    assert products([1, 2]) == {1: "p1", 2: "p2"}
    caches["dp_locmem"].invalidate_tags("product:1")
    cache = caches["dp_locmem"]
    assert cache.get(products.key_for(1)) is None  # behind its tag
    assert cache.get(products.key_for(2)) == "p2"
    with Clock() as clock:
        clock.advance(6)
        assert cache.get(products.key_for(2)) is None  # its own 5 s


def test_async_function():
    calls = []

    @cached_many(60)
    async def doubles(ids):
        calls.append(list(ids))
        await asyncio.sleep(0)
        return {i: i * 2 for i in ids}

    assert asyncio.run(doubles([1, 2])) == {1: 2, 2: 4}
    assert asyncio.run(doubles([1, 2, 3])) == {1: 2, 2: 4, 3: 6}
    assert calls == [[1, 2], [3]]


def test_a_plain_django_cache_works_without_the_dogpile_cure():
    calls = []

    @cached_many(60, cache="locmem")
    def triples(ids):
        calls.append(list(ids))
        return {i: CacheResult(i * 3) for i in ids}

    assert triples([1, 2]) == {1: 3, 2: 6}
    assert triples([1, 2]) == {1: 3, 2: 6}
    assert calls == [[1, 2]]


def test_clear_errors():
    with pytest.raises(TypeError, match="cached_many"):

        @cached_many("60")
        def bad(ids):
            return {}

    @cached_many(60)
    def listy(ids):
        return [1]

    with pytest.raises(TypeError, match="must return a dict of its items, not list"):
        listy([1])


def test_a_plain_django_cache_keeps_what_the_creator_decided():
    from django.core.cache import caches

    from django_dogpile.decorators import cached
    from django_dogpile.results import dont_store

    @cached_many(60, cache="locmem")
    def values(ids):
        return {
            i: CacheResult(f"u{i}", store=False) if i == 1 else CacheResult(f"t{i}", timeout=1) for i in ids
        }

    assert values([1, 2]) == {1: "u1", 2: "t2"}
    plain = caches["locmem"]
    assert plain.get(values.key_for(1)) is None  # store=False: not stored
    assert plain.get(values.key_for(2)) == "t2"

    calls = []

    @cached(60, cache="locmem")
    def one(x):
        calls.append(x)
        if x == "skip":
            dont_store()
        return CacheResult(x * 2)

    assert one("ab") == "abab"  # the value, never the wrapper
    assert one("ab") == "abab" and calls == ["ab"]
    assert one("skip") == "skipskip" and one("skip") == "skipskip"
    assert calls == ["ab", "skip", "skip"]  # dont_store(): made each time


def test_an_item_that_cannot_be_pickled_asks_for_key():
    @cached_many(60)
    def f(items):
        return {}

    with pytest.raises(
        TypeError, match=r"cached_many\(.*\.f\): the item .* cannot be pickled into a key .* key=lambda item"
    ):
        f([lambda: 1])
