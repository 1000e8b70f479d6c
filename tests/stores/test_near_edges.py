"""The near cache at its edges: settings swapped under it, two near-cached
aliases over one store, and a pub/sub connection a middlebox silently
dropped."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from django_dogpile.stores.near import PING_INTERVAL, PONG_WITHIN, NearStore
from tests.helpers.proxy import Proxy

NEAR = {"MAX_ENTRIES": 100, "MAX_BYTES": 1 << 20, "MAX_AGE": 30}
#: the documented bound: a silent connection stops near hits within this
DETECTION_BOUND = PING_INTERVAL + PONG_WITHIN + 0.1


def _dp(location, prefix="", **options):
    return {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": location,
        "TIMEOUT": 300,
        "KEY_PREFIX": prefix,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, **options},
    }


def test_a_near_cache_follows_caches_swapped_by_override_settings():
    """Under new CACHES the same alias names reach another store: what the
    near cache kept of the old one is not served."""
    old = {
        "default": settings.CACHES["default"],
        "s": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "swap-a"},
        "dp": _dp("s", NEAR_CACHE=NEAR),
    }
    new = {**old, "s": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "swap-b"}}
    with override_settings(CACHES=old):
        caches["s"].clear()
        caches["dp"].set("k", "written under the old settings")
        assert caches["dp"].get("k") == "written under the old settings"
        assert caches["dp"].get_or_set("k", "never") == "written under the old settings"
    with override_settings(CACHES=new):
        caches["s"].clear()
        assert caches["dp"].get("k") is None
        assert caches["dp"].get_or_set("k", "new store") == "new store"
    with override_settings(CACHES=old):
        assert caches["dp"].get("k") == "written under the old settings"


STORES = [
    pytest.param(
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "two-near"}, id="locmem"
    ),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.mark.parametrize("store", STORES)
def test_two_near_cached_aliases_over_one_store_evict_each_other_at_once(store):
    store = settings.CACHES[store] if isinstance(store, str) else store
    with override_settings(
        CACHES={
            "default": settings.CACHES["default"],
            "s": store,
            "a": _dp("s", NEAR_CACHE=NEAR),
            "b": _dp("s", NEAR_CACHE={**NEAR, "MAX_AGE": 20}),  # another near cache
            "plain": _dp("s"),  # no near cache of its own
        }
    ):
        a, b, plain = caches["a"], caches["b"], caches["plain"]
        a.clear()
        b.set("k", 1)
        assert a.get("k") == 1 and a.get("k") == 1  # kept near in a
        for write, expected in [
            (lambda: b.set("k", 2), 2),
            (lambda: b.delete("k"), None),
            (lambda: b.set("k", 3), 3),
            (lambda: plain.set("k", 4), 4),
            (lambda: plain.invalidate("k"), None),
            (lambda: b.set_many({"k": 5}), 5),
            (lambda: b.delete_many(["k"]), None),
        ]:
            a.get("k")  # (re)fill a's near copy when there is a value
            write()
            assert a.get("k") == expected  # at once, not after MAX_AGE


@pytest.mark.parametrize("store", STORES)
def test_two_store_aliases_over_one_server_are_one_store_for_the_near_cache(store):
    """Two store aliases set to the same server (same URL, same locmem
    name): a write through one evicts the near copy kept through the other."""
    store = settings.CACHES[store] if isinstance(store, str) else store
    with override_settings(
        CACHES={
            "default": settings.CACHES["default"],
            "s1": store,
            "s2": {**store, "OPTIONS": {**store.get("OPTIONS", {})}, "TIMEOUT": 77},  # set apart
            "reader": _dp("s1", NEAR_CACHE=NEAR),
            "writer": _dp("s2"),
        }
    ):
        reader, writer = caches["reader"], caches["writer"]
        reader.clear()
        writer.set("k", "v1")
        assert reader.get("k") == "v1" and reader.get("k") == "v1"  # kept near
        writer.set("k", "v2")
        assert reader.get("k") == "v2"
        writer.clear()
        assert reader.get("k") is None


@pytest.mark.redis
@pytest.mark.slow
def test_a_silently_dead_pubsub_connection_is_noticed_within_the_bound(redis_server):
    """The listener's connection goes through a proxy that stops forwarding
    without closing (a middlebox's idle timeout).  A write made elsewhere
    is served within DETECTION_BOUND, then the listener is back on a new
    connection and broadcasts arrive again."""
    proxy = Proxy(redis_server.port)
    try:
        with override_settings(
            CACHES={
                **settings.CACHES,
                "via_proxy": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": proxy.url,
                    "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 5},
                },
                "reader": _dp("via_proxy", "silent", NEAR_CACHE=NEAR),
                "writer": _dp("redis", "silent", NEAR_CACHE=NEAR),  # elsewhere: its own bus
            }
        ):
            reader, writer = caches["reader"], caches["writer"]
            reader.get("connect")
            writer.get("connect")
            assert isinstance(reader.store, NearStore)
            bus = reader.store._bus
            assert bus.subscribed.wait(5)
            writer.set("k", "old")
            time.sleep(1.5 * PING_INTERVAL)  # its broadcast arrives; pings answered meanwhile
            assert reader.get("k") == "old"
            assert reader.store._ident(reader.make_and_validate_key("k")) in reader.store._near._data
            assert reader.store._near.ready
            assert proxy.freeze_subscribers() == 1
            time.sleep(0.05)
            writer.set("k", "new")
            written = time.monotonic()
            while reader.get("k") != "new" and time.monotonic() - written < 5:
                time.sleep(0.005)
            stale_for = time.monotonic() - written
            print(
                f"\nsilent pub/sub: old value served for {stale_for * 1000:.0f} ms after the write "
                f"(bound {DETECTION_BOUND * 1000:.0f} ms)"
            )
            assert stale_for <= DETECTION_BOUND, stale_for
            # the listener gives up on the silent connection and subscribes anew
            deadline = time.monotonic() + 5
            while not (bus.subscribed.is_set() and reader.store._near.ready) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reader.store._near.ready, "the listener did not come back"
            reader.get("k")  # near again
            writer.set("k", "newer")
            written = time.monotonic()
            while reader.get("k") != "newer" and time.monotonic() - written < 2:
                time.sleep(0.002)
            assert time.monotonic() - written < 0.5  # broadcast, not a ping timeout
    finally:
        proxy.close()
