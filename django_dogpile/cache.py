"""DogpileCache: a Django cache backend that never stampedes.

Configured over another cache alias, the *store* (``LOCATION``); every
option is in the docs (configuration).

The contract, method by method, is Django's ``BaseCache``; how each method
counts a *stale* record is in its docstring.  The rules:

* Every key holds one record (:mod:`django_dogpile.records`); the store
  keeps it for ``TIMEOUT + GRACE`` seconds.  A record is *fresh* before
  ``expires`` (and while its tags are current), *stale* until ``expires +
  GRACE``, then gone.
* ``get``, ``has_key``, ``get_many``, ``touch``, ``incr``... have Django's
  meaning: a stale record is a miss.  ``set(timeout=0)`` or a negative
  timeout deletes, ``timeout=None`` never expires.
* ``get_or_set`` is dogpile-protected: a fresh hit is one store read; past
  that, the dogpile path (:mod:`django_dogpile.engine.path`: one caller
  regenerates, in any thread, process or host; the others get the stale
  value, or wait for a first one).
* A regeneration's write is fenced: an explicit ``set()`` or ``add()`` that
  lands while it runs wins.  ``invalidate(key)`` and ``invalidate_tags(*tags)``
  make values stale but servable: the next ``get_or_set`` regenerates each once.
* Every outcome is counted (:mod:`django_dogpile.stats`), signalled
  (:mod:`django_dogpile.signals`) and logged.

Each method makes the store key and calls what the backend holds: its
:class:`~django_dogpile.engine.binding.Binding` (the store, keys, the key's
lock), its :class:`~django_dogpile.engine.path.Regeneration` (the dogpile
path) and its :class:`~django_dogpile.engine.writes.Writes`; the async
twins go through :mod:`django_dogpile.engine.bridge`.  The stores, their
leases and the table of kinds: :mod:`django_dogpile.stores`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from django_dogpile import records
from django_dogpile.conf import alias_settings, warn_if_not_installed
from django_dogpile.engine import abatch, batch, bridge, memory
from django_dogpile.engine.binding import LOCK_SUFFIX, Binding
from django_dogpile.engine.path import Regeneration
from django_dogpile.engine.tags import bubble
from django_dogpile.engine.writes import Writes
from django_dogpile.records import MISSING, VALUE

__all__ = ["LOCK_SUFFIX", "DogpileCache"]


class DogpileCache(BaseCache):
    """A Django cache backend over another alias; see the module docstring.

    :param location: the alias of the store (``LOCATION`` in ``CACHES``).
    :param params: the rest of the alias's settings.  ``TIMEOUT`` is the
     freshness; ``OPTIONS`` are in the docs (configuration) and
     :mod:`django_dogpile.options` (``BaseCache``'s ``MAX_ENTRIES`` and
     ``CULL_FREQUENCY`` act on the store alias, not here).

    It holds :attr:`binding`, :attr:`regeneration`, :attr:`batch` and :attr:`writes`.
    Async methods not defined here are ``BaseCache``'s (the sync method in
    the request's thread-sensitive thread, as Django runs them).
    """

    #: what ``conf.dogpile_aliases()`` looks for (subclasses inherit it)
    dogpile_backend = True

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        warn_if_not_installed()  # the tag and the checks need the app
        given = dict(params)
        # A bad setting must reach `manage.py check` as django_dogpile.E00x,
        # and Django's own cache checks instantiate every alias: so the error
        # is kept and raised, clearly and naming the alias, on first use.
        location, timeout, options, config_error = alias_settings(location, given)
        params = dict(params)
        # BaseCache's MAX_ENTRIES/CULL_FREQUENCY act on the store alias
        params["OPTIONS"] = {}
        params.pop("TIMEOUT", None)
        super().__init__(params)
        self.default_timeout = timeout  # BaseCache would truncate floats
        self.location = location
        self.options = options
        #: the store, the keys, the key's lock, the counters
        self.binding = Binding(location, given, options, timeout, self, config_error)
        #: the dogpile path
        self.regeneration = Regeneration(self.binding, type(self))
        #: get_or_set_many
        self.batch = batch.Batch(self.regeneration)
        #: Django's writes over records
        self.writes = Writes(self.binding)

    @property
    def alias(self) -> str:
        """The ``CACHES`` alias this backend counts and signals as."""
        return self.binding.alias

    @property
    def store(self) -> BaseCache:
        """The wrapped cache (``caches[LOCATION]``), connected on first use."""
        return self.binding.store

    def make_and_validate_key(self, key: Any, version: int | None = None) -> str:
        """The store key of ``key`` (see :meth:`Binding.store_key`)."""
        return self.binding.store_key(key, version)

    def store_key(self, key: Any, version: int | None = None) -> str:
        """The key the store itself uses for ``key`` (both aliases' prefix,
        version and key function applied)."""
        return str(self.store.make_key(self.binding.store_key(key, version)))

    # --- the fresh hit ------------------------------------------------------

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Any = None,
    ) -> Any:
        """Return the value of ``key``, letting one caller (re)create it.

        A fresh value costs one store read.  A stale one is served to every
        caller but one, which regenerates it; a missing one is created by one
        caller while the others wait (:mod:`django_dogpile.engine.path`).

        :param key: the cache key.
        :param default: the value, or a callable making it, used when the
         key is missing or stale.  Only one caller at a time calls it per
         key, across threads and processes sharing the store.  If it has a
         ``detach()`` method, ``BACKGROUND`` calls it in the caller's thread
         for the callable to run in the pool (``detach = None``: regenerate
         in the caller instead).
        :param timeout: freshness of a newly created value, as in
         :meth:`set`; 0 or negative computes without storing.
        :param version: the key version.
        :param tags: a tag or a list of tags the value shows
         (:meth:`invalidate_tags`); stamped on it when it is made.
        """
        # The fresh hit, inline: this is the path every request takes.
        # (str keys only: the memo also holds (key, version) tuples; the
        # record's fields by position: 2 is EXPIRES, 0 is VALUE)
        b = self.binding
        skey = b.memo.get(key) if version is None and type(key) is str else None
        if skey is None:
            skey = b.store_key(key, version)
        raw = (b.connected or b.store).get(skey, MISSING)
        if type(raw) is tuple:
            n = len(raw)
            if n == 4 or (n == 5 and b.tags.view(raw) is raw):  # 5: tagged, and current
                expires = raw[2]
                if expires is None or (
                    records.now() < expires and not (b.early_refresh and b.early(raw, records.now()))
                ):
                    b.hit()
                    if b.keys is not None:
                        b.keys.incr(key, "HIT")
                    if n == 5:
                        bubble(raw[4])  # to the value being made, if any
                    return raw[0]
        return self.regeneration.run(key, skey, raw, default, timeout, b.tags.names(tags), version=version)[0]

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Any = None,
    ) -> Any:
        """Async :meth:`get_or_set`; ``default`` may also be an async callable."""
        skey = self.binding.store_key(key, version)
        self.store  # noqa: B018 - connect, which tells whether the store is local
        found = await bridge.aget_or_set_status(
            self, key, skey, default, timeout, self.binding.tags.names(tags), version
        )
        return found[0]

    def get_or_set_status(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Any = None,
    ) -> tuple[Any, str]:
        """As :meth:`get_or_set`, returning ``(value, status)``.

        ``status`` says how the value was obtained, in nginx's words:
        ``"HIT"``, ``"UPDATING"`` (stale, another caller regenerates),
        ``"STALE"`` (stale, regeneration failed), ``"EXPIRED"`` (stale,
        regenerated by this caller) or ``"MISS"``.
        """
        b = self.binding
        skey = b.store_key(key, version)
        raw = b.store.get(skey, MISSING)
        if b.fresh_hit(key, raw):
            return raw[VALUE], "HIT"
        return self.regeneration.run(key, skey, raw, default, timeout, b.tags.names(tags), version=version)

    async def aget_or_set_status(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Any = None,
    ) -> tuple[Any, str]:
        """Async :meth:`get_or_set_status` (:mod:`~django_dogpile.engine.bridge`)."""
        skey = self.binding.store_key(key, version)
        self.store  # noqa: B018 - connect, which tells whether the store is local
        return await bridge.aget_or_set_status(
            self, key, skey, default, timeout, self.binding.tags.names(tags), version
        )

    # one read for many keys, one creator call (:mod:`~django_dogpile.engine.batch`)
    get_or_set_many = batch.get_or_set_many
    aget_or_set_many = abatch.aget_or_set_many

    # --- Django's API -------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Set a value if the key holds no fresh value; return True if set.

        A stale record counts as absent (as an expired key does in Django);
        replacing it holds the key's lock (in-process and lease), as a
        regeneration does.  An add that lands while a regeneration runs
        wins over it.
        """
        skey = self.binding.store_key(key, version)
        fresh_for = self.binding.freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            return not self.has_key(key, version)
        return self.writes.add(key, skey, value, fresh_for)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value if it is fresh, else ``default`` (stale is a miss)."""
        return self.writes.get(self.binding.store_key(key, version), default)

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await bridge.aget(self, key, default, version)

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Any = None,
    ) -> None:
        """Set a value; ``timeout`` 0 or negative deletes, ``None`` keeps it forever.

        Wins over a regeneration running meanwhile, ends a ``RETRY_AFTER``
        retry hold and this process's outage fallback for the key.
        ``tags``: as :meth:`get_or_set`'s, their versions read now (or a
        :class:`~django_dogpile.engine.tags.Collector` that read them when
        the value's making started).
        """
        skey = self.binding.store_key(key, version)
        fresh_for = self.binding.freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            self.delete(key, version)
            return
        self.writes.set(key, skey, value, fresh_for, self.binding.tags.stamp_for(tags))

    aset = bridge.hop("set")

    def invalidate_tags(self, *tags: str, hard: bool = False) -> int:
        """Make every value carrying one of ``tags`` stale but servable, in
        every process on every host: the next caller of each gets the old
        value while one caller regenerates it.  ``hard=True``: misses
        instead (a cold single flight each).  O(1) in the number of values:
        one write and one broadcast per tag (:mod:`~django_dogpile.engine.tags`).
        Return how many of the tags were in use; an unknown tag costs one read.
        """
        return self.binding.tags.invalidate_named(tags, hard, type(self))

    ainvalidate_tags = bridge.hop("invalidate_tags")

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a fresh value a new timeout; return False if there is none."""
        skey = self.binding.store_key(key, version)
        return self.writes.touch(key, skey, self.binding.freshness(timeout))

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove the key, fresh or stale; return True if it existed.

        Wins over a regeneration running meanwhile (its value is not stored
        after the delete); ends a ``RETRY_AFTER`` retry hold and this
        process's outage fallback.
        """
        return self.writes.delete(key, version)

    def invalidate(self, key: Any, version: int | None = None) -> bool:
        """Make the value stale but keep it servable for ``GRACE`` seconds.

        The next :meth:`get_or_set` regenerates it once while concurrent
        callers keep getting the old value; :meth:`get` sees a miss.  Stale
        for every host whatever its clock (the record's expiry becomes the
        epoch).  Return True if there was a value to invalidate.
        """
        return self.writes.invalidate(key, self.binding.store_key(key, version))

    ainvalidate = bridge.hop("invalidate")

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return True if the key holds a fresh value."""
        return self.get(key, MISSING, version) is not MISSING

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self.aget(key, MISSING, version) is not MISSING

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to a fresh value, keeping its expiry; return the sum.

        Raise :class:`ValueError` if the key holds no fresh value.  The
        read-modify-write holds the key's lock (the in-process lock and the
        store lease), so concurrent increments from several processes do
        not lose updates.
        """
        return self.writes.incr(key, self.binding.store_key(key, version), delta)

    aincr = bridge.hop("incr")

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract ``delta``; see :meth:`incr`."""
        return self.incr(key, -delta, version)

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version + delta``; return that."""
        if version is None:
            version = self.version
        old = self.binding.store_key(key, version)
        self.writes.move(key, old, self.binding.store_key(key, version + delta), version)
        return version + delta

    aincr_version = bridge.hop("incr_version")

    def decr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version - delta``; return that."""
        return self.incr_version(key, -delta, version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return a dict of the fresh values among ``keys``.

        Keys that make the same store key (``1`` and ``"1"``) each get the
        value, as with Django's backends.
        """
        skeys: dict[str, list[Any]] = {}
        for key in keys:
            skeys.setdefault(self.binding.store_key(key, version), []).append(key)
        return self.writes.get_many(skeys)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return await bridge.aget_many(self, list(keys), version)

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Set several values; return the keys that failed to be stored."""
        fresh_for = self.binding.freshness(timeout)
        skeys = {self.binding.store_key(key, version): key for key in data}
        if fresh_for is not None and fresh_for <= 0:
            self.delete_many(list(data), version)
            return []
        return self.writes.set_many(data, skeys, fresh_for)

    aset_many = bridge.hop("set_many")

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove several keys; each wins over a regeneration running meanwhile."""
        self.writes.delete_many(list(keys), version)

    adelete_many = bridge.hop("delete_many")

    def clear(self) -> None:
        """Clear the *store* (every key of the wrapped alias).

        Everything this process remembers about the store is forgotten too
        (:mod:`django_dogpile.engine.memory`): outage fallbacks, retry holds,
        the page decorator's learnt ``Vary`` names and hit-for-miss marks.
        """
        memory.forget(self.location)
        self.store.clear()

    def close(self, **kwargs: Any) -> None:
        """Close the store's connections (Django calls this per request)."""
        if self.binding.connected is not None:
            self.binding.connected.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        if self.binding.connected is not None:
            return await bridge.run(self.close, **kwargs)
