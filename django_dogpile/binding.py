"""What a :class:`~django_dogpile.cache.DogpileCache` is bound to: its store
(the ``LOCATION`` alias, connected on first use, with the lease adapter
:mod:`django_dogpile.stores` picks for it) and how its keys and timeouts
are made for that store."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, memcache_key_warnings
from django.core.exceptions import ImproperlyConfigured

from .pubsub import hash_tagged
from .regeneration import LOCK_SUFFIX
from .stores import StoreAdapter, adapter_for

__all__ = ["StoreBinding"]

_KEY_MEMO_SIZE = 4096  # made keys remembered per backend instance
#: the longest suffix the wrapper adds to a store key (a lock's retry hold)
_LONGEST_SUFFIX = LOCK_SUFFIX + ":retry"
#: memcached's limit on a key, in bytes (Django warns at 250 characters)
_MAX_KEY_BYTES = 250


class StoreBinding:
    """Mixed into ``DogpileCache``: the store, the adapter, keys, timeouts."""

    # provided by DogpileCache / BaseCache
    alias: str
    location: str
    options: Any
    default_timeout: float | None
    _config_error: ImproperlyConfigured | None
    _store_cache: BaseCache | None
    _adapter: StoreAdapter
    _made: dict[Any, str]
    make_key: Any
    validate_key: Any

    @staticmethod
    def _find_alias(location: str, params: dict[str, Any]) -> str:
        """The ``CACHES`` alias these settings came from (Django does not say).

        Django builds a backend from ``CACHES[alias]`` less ``BACKEND`` and
        ``LOCATION``: the alias is the one whose settings are exactly these.
        Two aliases set alike are told apart on first use
        (:meth:`_settle_alias`); a backend made by hand is ``dogpile:<LOCATION>``.
        """
        found = _aliases_set_as(location, params)
        return found[0] if found else f"dogpile:{location}"

    def _settle_alias(self) -> None:
        """Two aliases set alike: take the one ``caches`` holds this object as."""
        from django.core.cache import caches

        found = _aliases_set_as(self.location, self._params)
        if len(found) < 2:
            return
        connections = getattr(caches, "_connections", None)
        for alias in found:
            if getattr(connections, alias, None) is self:
                if alias != self.alias:
                    self._rename(alias)
                return

    def _rename(self, alias: str) -> None:  # pragma: no cover - DogpileCache's
        raise NotImplementedError

    # --- the store --------------------------------------------------------

    @property
    def store(self) -> BaseCache:
        """The wrapped cache (``caches[LOCATION]``)."""
        store = self._store_cache
        if store is None:
            store = self._connect()
        return store

    def _connect(self) -> BaseCache:
        if self._config_error is not None:
            raise self._config_error
        if self.location not in settings.CACHES:
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: LOCATION {self.location!r} is not a "
                f"cache alias; configured aliases: {', '.join(settings.CACHES)}. "
                "[django_dogpile.E001]"
            )
        store = caches[self.location]
        self._settle_alias()
        if isinstance(store, StoreBinding):
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: LOCATION {self.location!r} is a "
                "DogpileCache itself; point it at the alias that holds the data. "
                "[django_dogpile.E002]"
            )
        try:
            self._adapter = adapter_for(
                store, self.options.lock, self.options.lock_timeout, self.location,
                holds=bool(self.options.retry_after),
            )
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: {exc} ({self.location!r}). "
                "[django_dogpile.E009]"
            ) from None
        # Memos of made keys are sound only while a key is the same string
        # for every request: a KEY_FUNCTION may read the request (a tenant).
        from . import near

        self._plain_keys = near.plain_keys(self) and near.plain_keys(store)
        if self.options.near_cache is not None:
            front: Any = near.near_store(
                self.location, self._adapter.store, self.options.near_cache, self._adapter,
                self._plain_keys,
            )
        else:
            # no near cache of our own: still evict this process's others
            front = near.EvictingStore(self._adapter.store, self.location, self._plain_keys)
        self._adapter.store = front
        self._adapter.wrote = front.wrote
        # the adapter's view of the store (memcached: timeouts in whole seconds;
        # a near cache in front)
        store = self._store_cache = self._adapter.store
        from .shared_stats import start_publishing

        start_publishing(self.alias)
        return store

    def ident(self, made: str) -> tuple[str, str]:
        """What identifies the record ``made`` in this process's memory.

        The store's own key (its ``KEY_FUNCTION`` may put a tenant in it),
        with the store alias: every per-process memo -- the in-process
        lock and what it hands over, outage fallbacks, retry holds, the
        async in-flight table, the page memos -- is keyed by it, so no
        memo made for one tenant is ever found for another.
        """
        store = self._store_cache or self.store
        return (self.location, made if self._plain_keys else str(store.make_key(made)))

    def store_key(self, key: Any, version: int | None = None) -> str:
        """Return the key the store itself uses for ``key`` (prefix, version
        and both aliases' key functions applied)."""
        return str(self.store.make_key(self.make_and_validate_key(key, version)))

    # --- keys and timeouts -------------------------------------------------

    def make_and_validate_key(self, key: Any, version: int | None = None) -> str:
        """Return the key to use in the store, warning as Django's backends do.

        The key is made and validated exactly as by Django's own backends
        (``CacheKeyWarning`` for one over 250 characters or with spaces or
        control characters).  The store sees that key unless the store's
        own prefixing would make it (or its lock key) one the store warns
        about or rejects: then it sees a fixed-length digest of it instead.
        So a key Django accepts never fails in a memcached store because of
        the wrapper, and no call warns twice.
        """
        memo_key: Any = None
        if type(key) is str:
            memo_key = key if version is None else (key, version)
            made = self._made.get(memo_key)
            if made is not None:
                return made
        made = self.make_key(key, version=version)
        self.validate_key(made)
        clean = not any(memcache_key_warnings(made))
        store_key = made
        if not clean or _too_long(self.store.make_key(made + _LONGEST_SUFFIX)):
            store_key = "dogpile.h." + hashlib.sha256(made.encode()).hexdigest()
        if self._adapter.cluster:
            store_key = hash_tagged(store_key)  # record, lock and hold: one slot
        # Remember keys that passed cleanly (a bad key warns on every call,
        # as with Django's backends); str keys only, (key, version) when a
        # version is given; and only while both key functions are Django's
        # (another may read the request: a tenant's key is not another's).
        if clean and memo_key is not None and self._plain_keys:
            memo = self._made
            if len(memo) >= _KEY_MEMO_SIZE:
                memo.clear()
            memo[memo_key] = store_key
        return store_key

    def _freshness(self, timeout: Any) -> float | None:
        """Seconds a value set now stays fresh (``None``: forever).

        Raises :class:`TypeError` naming the alias for anything but None or
        a number (Django's backends fail on one with a bare arithmetic
        error, or silently treat it as forever).
        """
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
            raise TypeError(
                f"DogpileCache {self.alias!r}: timeout must be None or a number of "
                f"seconds, not {timeout!r}"
            )
        if timeout == math.inf:
            return None
        return timeout



def _too_long(store_key: Any) -> bool:
    """True if memcached would refuse ``store_key`` (or Django warn about it):
    memcached counts bytes, Django's warning characters."""
    key = str(store_key)
    return any(memcache_key_warnings(key)) or len(key.encode()) > _MAX_KEY_BYTES


def _aliases_set_as(location: str, params: dict[str, Any]) -> list[str]:
    """The DogpileCache aliases of ``CACHES`` set exactly as ``location`` + ``params``."""
    from .conf import dogpile_aliases

    found = []
    for alias in dogpile_aliases():
        conf = dict(settings.CACHES[alias])
        conf.pop("BACKEND", None)
        if conf.pop("LOCATION", "") == location and conf == params:
            found.append(alias)
    return found
