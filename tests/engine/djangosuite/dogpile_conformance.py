"""Django's ``BaseCacheTests``, unchanged, against DogpileCache.

Over locmem and over django-redis, each through the sync methods and
through the ``a*`` methods, and over Django's RedisCache and memcached
(pymemcache) through the sync methods (:class:`ThroughAsync` runs
every sync call of the tests as ``async_to_sync(cache.aX)``).  Each alias of
Django's test setting (``default``, ``prefix``, ``v2``, ``custom_key``...)
is a DogpileCache with that alias's own parameters over a store alias; the
``cull`` aliases get stores with their ``MAX_ENTRIES`` and
``CULL_FREQUENCY``, since those act on the store.
"""

from __future__ import annotations

import os
from typing import Any

from asgiref.sync import async_to_sync
from unittest import mock

from cache.tests import BaseCacheTests, CacheMiddlewareTest, caches_setting_for_tests
from django.test import TestCase, override_settings

from django_dogpile.cache import DogpileCache
from django_dogpile.decorators import dogpile_cache_page

REDIS_URL = os.environ.get("DOGPILE_TEST_REDIS_URL", "redis://127.0.0.1:1/0")

_SHARED = ("default", "prefix", "v2", "custom_key", "custom_key2")


def dogpile_caches(backend: str, store: dict[str, Any], exclude: set[str] | None = None) -> dict[str, Any]:
    """Django's test CACHES, each alias a ``backend`` over a store alias."""
    setting = caches_setting_for_tests(BACKEND=backend, exclude=exclude)
    result: dict[str, Any] = {}
    for alias, params in setting.items():
        store_alias = "store_shared" if alias in _SHARED else f"store_{alias}"
        store_params = {**store, "OPTIONS": {**store.get("OPTIONS", {}), **params.get("OPTIONS", {})}}
        if store_alias != "store_shared" and "LOCATION" not in store:
            store_params["LOCATION"] = store_alias
        if store_alias != "store_shared" and "LOCATION" in store:  # one server: own prefix
            store_params["KEY_PREFIX"] = store_alias
        result.setdefault(store_alias, store_params)
        result[alias] = {**params, "LOCATION": store_alias}
    return result


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "shared"}
REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}


class ThroughAsync:
    """A DogpileCache driven only through its ``a*`` methods.

    Each sync method of the tests is ``async_to_sync(inner.aX)``; everything
    else (``make_key``, ``aget``..., attributes) is the inner DogpileCache's.
    """

    _ASYNC = (
        "add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "decr",
        "set_many", "delete_many", "clear", "incr_version", "decr_version", "get_or_set",
        "close", "invalidate",
    )

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        object.__setattr__(self, "_inner", DogpileCache(location, params))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_inner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_inner"), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(object.__getattribute__(self, "_inner"), name)

    def __contains__(self, key: Any) -> bool:
        return self.has_key(key)  # type: ignore[attr-defined]


def _through(name: str) -> Any:
    def method(self: ThroughAsync, *args: Any, **kwargs: Any) -> Any:
        inner = object.__getattribute__(self, "_inner")
        return async_to_sync(getattr(inner, "a" + name))(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in ThroughAsync._ASYNC:
    setattr(ThroughAsync, _name, _through(_name))


@override_settings(CACHES=dogpile_caches("django_dogpile.cache.DogpileCache", LOCMEM))
class DogpileOverLocMemTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=dogpile_caches("dogpile_conformance.ThroughAsync", LOCMEM))
class DogpileOverLocMemAsyncTests(BaseCacheTests, TestCase):
    pass


# As Django's own RedisCacheTests: Redis has no MAX_ENTRIES, no cull aliases.
_NO_CULL = {"cull", "zero_cull"}


@override_settings(CACHES=dogpile_caches("django_dogpile.cache.DogpileCache", REDIS, _NO_CULL))
class DogpileOverRedisTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=dogpile_caches("dogpile_conformance.ThroughAsync", REDIS, _NO_CULL))
class DogpileOverRedisAsyncTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=dogpile_caches(
    "django_dogpile.cache.DogpileCache",
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
    _NO_CULL,
))
class DogpileOverDjangoRedisTests(BaseCacheTests, TestCase):
    """Over Django's own RedisCache (the native lease, Django's serializer)."""


# As Django's own memcached tests: no MAX_ENTRIES, no cull aliases.
MEMCACHED = {
    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
    "LOCATION": os.environ.get("DOGPILE_TEST_MEMCACHED", "127.0.0.1:1"),
}


@override_settings(CACHES=dogpile_caches("django_dogpile.cache.DogpileCache", MEMCACHED, _NO_CULL))
class DogpileOverMemcachedTests(BaseCacheTests, TestCase):
    pass


# --- dogpile_cache_page in place of cache_page, in Django's decorator tests ---

_PAGE_TESTS = [
    "test_view_decorator",
    "test_cache_page_timeout",
    "test_cache_control_not_cached",
    "test_vary_asterisk_not_cached",
    "test_vary_on_authorization_for_authorization_header",
    "test_no_vary_on_authorization_for_empty_authorization_header",
    "test_authorization_header_exceptions",
    "test_304_response_has_http_caching_headers_but_not_cached",
    "test_cache_control_max_age",
]


@override_settings(
    CACHES={
        "default_store": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "other_store": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "other"},
        "default": {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "default_store"},
        "other": {
            "BACKEND": "django_dogpile.cache.DogpileCache",
            "LOCATION": "other_store",
            "TIMEOUT": "1",
        },
    },
)
class DogpileCachePageTests(CacheMiddlewareTest):
    """Django's ``cache_page`` tests, with ``dogpile_cache_page`` as ``cache_page``."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch("cache.tests.cache_page", dogpile_cache_page)
        patcher.start()
        self.addCleanup(patcher.stop)


for _name in list(vars(CacheMiddlewareTest)):
    if _name.startswith("test_") and _name not in _PAGE_TESTS:
        setattr(DogpileCachePageTests, _name, None)


# --- Redis Cluster: django-valkey's ClusterValkeyCache -------------------------

CLUSTER = {
    "BACKEND": "django_valkey.cluster_cache.cache.ClusterValkeyCache",
    "LOCATION": os.environ.get("DOGPILE_TEST_CLUSTER", "valkey://127.0.0.1:1"),
}


@override_settings(CACHES=dogpile_caches("django_dogpile.cache.DogpileCache", CLUSTER, _NO_CULL))
class DogpileOverClusterTests(BaseCacheTests, TestCase):
    """Over a 6-node Redis Cluster: hash-tagged records, leases, holds."""


@override_settings(CACHES=caches_setting_for_tests(exclude=_NO_CULL, **CLUSTER))
class PlainClusterTests(BaseCacheTests, TestCase):
    """The cluster store itself: what DogpileCache over it is compared with."""
