"""The native asyncio reads take the store's settings as its sync client
does (found by a review: each case below once diverged from the sync
call), and one connection per Redis store and settings serves every
request of the process (under ASGI each request builds its own backend)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import warnings

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import CacheKeyWarning
from django.test import override_settings

from django_dogpile.cache import DogpileCache
from tests.helpers.procs import make_cache

pytestmark = pytest.mark.redis


def _with_store(name, conf):
    return override_settings(CACHES={**settings.CACHES, name: conf})


def _both(cache, key):
    """The sync and the async reads of ``key`` (``aget``, ``aget_many``,
    ``ahas_key``, ``aget_or_set``)."""

    async def reads():
        return (
            await cache.aget(key),
            await cache.aget_many([key]),
            await cache.ahas_key(key),
            await cache.aget_or_set(key, "made"),
        )

    return (
        cache.get(key),
        cache.get_many([key]),
        cache.has_key(key),
        cache.get_or_set(key, "made"),
    ), asyncio.run(reads())


@pytest.mark.parametrize(
    "backend", ["django_redis.cache.RedisCache", "django.core.cache.backends.redis.RedisCache"]
)
def test_pool_arguments_in_the_url_are_the_pools_not_the_connections(redis_server, backend):
    # ?timeout= is a BlockingConnectionPool's wait; a connection refuses it
    pool = {"CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool"}
    if "django_redis" not in backend:
        pool = {"pool_class": "redis.BlockingConnectionPool"}
    url = redis_server.url.rstrip("/") + "/5?timeout=3&max_connections=2"
    with _with_store("url_args", {"BACKEND": backend, "LOCATION": url, "OPTIONS": pool}):
        cache = make_cache("url_args", "urlargs")
        cache.set("k", "v")
        assert _both(cache, "k") == (("v", {"k": "v"}, True, "v"),) * 2
        native = cache.binding.native
        assert native is not None  # still read on the loop
        made = native._make_pool()
        assert "timeout" not in made.connection_kwargs and made.max_connections == native.size


def test_a_tls_connection_class_gets_its_asyncio_twin(redis_server):
    import redis
    import redis.asyncio

    tls = {"connection_class": redis.SSLConnection, "ssl_cert_reqs": "none"}
    # a db of its own: django-redis keeps one sync pool per URL in the process
    conf = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url.rstrip("/") + "/7"}
    with _with_store("tls", {**conf, "OPTIONS": {"CONNECTION_POOL_KWARGS": tls}}):
        cache = make_cache("tls", "tls")
        cache.binding.store  # noqa: B018 - connect (no command sent)
        native = cache.binding.native
        assert native is not None
        # made, never connected here (the suite's server speaks plain TCP)
        assert native._make_pool().connection_class is redis.asyncio.SSLConnection


def test_a_connection_class_of_the_sites_own_stays_on_the_thread_path(redis_server):
    import redis

    class Traced(redis.Connection):
        pass

    own = {"connection_class": Traced}
    conf = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url.rstrip("/") + "/8"}
    with _with_store("own_conn", {**conf, "OPTIONS": {"CONNECTION_POOL_KWARGS": own}}):
        cache = make_cache("own_conn", "own")
        cache.set("k", "v")
        assert cache.binding.native is None
        assert _both(cache, "k") == (("v", {"k": "v"}, True, "v"),) * 2


def test_a_new_compressor_on_the_same_alias_gets_a_new_reader(redis_server):
    conf = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url}
    zlib = {"COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor"}
    with _with_store("squeezed", conf):
        plain = make_cache("squeezed", "sq")
        plain.set("k", "v" * 100)
        assert asyncio.run(plain.aget("k")) == "v" * 100
    with _with_store("squeezed", {**conf, "OPTIONS": zlib}):
        assert caches["squeezed"] is not None  # Django's own, rebuilt by the override
        squeezed = make_cache("squeezed", "sq")
        squeezed.set("k", "w" * 100)
        assert squeezed.binding.native is not plain.binding.native
        assert _both(squeezed, "k") == (("w" * 100, {"k": "w" * 100}, True, "w" * 100),) * 2


@pytest.mark.parametrize("key", ["a b", "x" * 300])
def test_the_first_call_of_a_new_backend_may_use_a_key_django_warns_about(redis_server, key):
    # each thread (each ASGI request) builds its own backend: its first call
    # connects, whatever the key
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)  # as from Django's backends
        make_cache("redis", "firstcall").set(key, "v")
        for first in (lambda c: c.get(key), lambda c: c.get_or_set(key, "made")):
            thread = threading.Thread(
                target=lambda f=first: found.append(f(make_cache("redis", "firstcall")))
            )
            thread.start()
            thread.join()
    assert found == ["v", "v"]


def test_every_backend_of_a_redis_alias_shares_one_connection(redis_server):
    conf = {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "redis", "KEY_PREFIX": "shared"}
    first, second = DogpileCache("redis", dict(conf)), DogpileCache("redis", dict(conf))
    first.set("k", "v")
    assert second.get("k") == "v"
    assert second.binding.adapter is first.binding.adapter
    assert second.binding.native is first.binding.native
    assert second.binding.memo is first.binding.memo
    other = DogpileCache("redis", {**conf, "KEY_PREFIX": "another"})
    other.get("k")
    assert other.binding.adapter is not first.binding.adapter  # its own settings, its own


def test_a_locmem_backend_connects_per_backend_as_django_builds_them():
    conf = {"LOCATION": "locmem", "KEY_PREFIX": "per"}
    first, second = DogpileCache("locmem", dict(conf)), DogpileCache("locmem", dict(conf))
    first.get("k"), second.get("k")
    assert second.binding.adapter is not first.binding.adapter


_TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("test_tenant", default="-")


class TenantDogpile(DogpileCache):
    """A subclass that makes keys its own way: the tenant in each."""

    def make_key(self, key, version=None):
        return f"{_TENANT.get()}:" + super().make_key(key, version)


def test_a_subclass_with_its_own_keys_never_shares_a_plain_aliass_connection(redis_server):
    # found by a review: the class was not in the connection's identity, so
    # the subclass took the plain alias's key memo and read another tenant's value
    conf = {"LOCATION": "redis", "TIMEOUT": 300, "KEY_PREFIX": "subclass"}
    plain = DogpileCache("redis", dict(conf))
    plain.get("warm")  # the plain backend connects first
    tenants = TenantDogpile("redis", dict(conf))
    _TENANT.set("A")
    tenants.set("secret", "A's value")
    _TENANT.set("B")
    assert tenants.get("secret") is None
    assert tenants.get_or_set("secret", "B's value") == "B's value"
    _TENANT.set("A")
    assert tenants.get("secret") == "A's value"
    assert tenants.binding.plain_keys is False and tenants.binding.native is None
    assert tenants.binding.adapter is not plain.binding.adapter


def test_a_change_of_caches_forgets_the_shared_connections(redis_server):
    conf = {"LOCATION": "redis", "KEY_PREFIX": "forget"}
    first = DogpileCache("redis", dict(conf))
    first.get("k")
    with override_settings(CACHES={**settings.CACHES}):
        inside = DogpileCache("redis", dict(conf))
        inside.get("k")
    after = DogpileCache("redis", dict(conf))
    after.get("k")
    assert inside.binding.adapter is not first.binding.adapter
    assert after.binding.adapter is not inside.binding.adapter
