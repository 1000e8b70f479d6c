"""DogpileCache: a Django cache backend that never stampedes.

Configure it over another cache alias, the *store*::

    CACHES = {
        "store": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://..."},
        "default": {
            "BACKEND": "django_dogpile.cache.DogpileCache",
            "LOCATION": "store",
            "TIMEOUT": 300,
            "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 30},
        },
    }

The contract, method by method, is Django's ``BaseCache``; how each method
counts a *stale* record is in its docstring.  The rules:

* Every key holds one record ``(value, created, expires, cost)``; the store
  keeps it for ``TIMEOUT + GRACE`` seconds.  A record is *fresh* before
  ``expires``, *stale* until ``expires + GRACE``, then gone.
* ``get``, ``has_key``, ``get_many``, ``touch``, ``incr``... have Django's
  meaning: a stale record is a miss.  ``set(timeout=0)`` or a negative
  timeout deletes, ``timeout=None`` never expires.
* ``get_or_set`` is dogpile-protected: a fresh hit is one store read; past
  that, :mod:`django_dogpile.regeneration` (one caller regenerates, in any
  thread, process or host; the others get the stale value, or wait for a
  first one).  Async: :mod:`django_dogpile.bridge`.  The lock per store:
  :mod:`django_dogpile.stores`.  The store binding and key making:
  :mod:`django_dogpile.binding`; the ``*_many`` methods:
  :mod:`django_dogpile.bulk`.
* A regeneration's write is fenced: an explicit ``set()`` or ``add()`` that
  lands while it runs wins.
* ``invalidate(key)`` makes a value stale (for every host, whatever its
  clock) but servable: the next ``get_or_set`` regenerates it once.
  ``delete`` removes it.
* ``RETRY_AFTER`` holds back only regeneration of a stale value; ``set`` and
  ``delete`` end it.
* Every outcome is counted (:mod:`django_dogpile.stats`), signalled
  (:mod:`django_dogpile.signals`) and logged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

from . import bridge, entries, state
from .apps import warn_if_not_installed
from .conf import (
    BackendOptions,
    ConfigError,
    improperly_configured,
    parse_backend_options,
    parse_timeout,
)
from .entries import INVALIDATED, Entry, is_entry, is_fresh, store_timeout
from .locks import MISSING, fallbacks, retry_after
from .regeneration import LOCK_SUFFIX, Regeneration
from .binding import StoreBinding
from .bulk import BulkOperations
from .stats import key_stats_for, stats_for
from .stores import StoreAdapter

__all__ = ["DogpileCache", "LOCK_SUFFIX"]

log = logging.getLogger(__name__)

class DogpileCache(StoreBinding, BulkOperations, Regeneration, BaseCache):
    """A Django cache backend over another alias; see the module docstring.

    :param location: the alias of the store (``LOCATION`` in ``CACHES``).
    :param params: the rest of the alias's settings.  ``TIMEOUT`` is the
     freshness; ``OPTIONS`` takes ``GRACE``, ``LOCK_TIMEOUT``,
     ``WAIT_TIMEOUT``, ``BACKGROUND``, ``BACKGROUND_WORKERS``,
     ``SERVE_STALE_ON_ERROR``, ``EARLY_REFRESH``, ``LOCK``, ``KEY_STATS`` and
     ``RETRY_AFTER`` (and ``BaseCache``'s ``MAX_ENTRIES``/``CULL_FREQUENCY``,
     which act on the store alias, not here).
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        warn_if_not_installed()  # the tag and the checks need the app
        params = dict(params)
        #: the settings as Django passed them (they tell which alias this is)
        self._params = dict(params)
        # A bad setting must reach `manage.py check` as django_dogpile.E00x,
        # and Django's own cache checks instantiate every alias: so the error
        # is kept here and raised, clearly, on first use instead.
        self._config_error: ImproperlyConfigured | None = None
        timeout: float | None = 300
        self.options: BackendOptions = parse_backend_options({})
        try:
            timeout = parse_timeout(params.get("TIMEOUT", params.get("timeout", 300)))
            self.options = parse_backend_options(params.get("OPTIONS"))
        except ConfigError as exc:
            self._config_error = improperly_configured(exc, "DogpileCache")
        if not location or not isinstance(location, str):
            self._config_error = ImproperlyConfigured(
                "DogpileCache: LOCATION must name the cache alias that stores "
                "the data, e.g. 'store'. [django_dogpile.E001]"
            )
            location = ""
        # BaseCache reads MAX_ENTRIES/CULL_FREQUENCY from OPTIONS; they act on
        # the store alias (a check warns), ours are not its business.
        params["OPTIONS"] = {}
        params.pop("TIMEOUT", None)
        super().__init__(params)
        self.default_timeout = timeout  # BaseCache would truncate floats
        self.location = location
        self._rename(self._find_alias(location, self._params))
        self._plain_keys = False  # known once connected (binding)
        self._store_cache: BaseCache | None = None
        self._adapter: StoreAdapter = None  # type: ignore[assignment]  # set by _connect
        #: user key (or (key, version)) -> store key, for str keys.
        self._made: dict[Any, str] = {}
        self._early_refresh = self.options.early_refresh

    def _rename(self, alias: str) -> None:
        """Count, signal and publish as ``alias``."""
        self.alias = alias
        self._stats = stats_for(alias)
        self._hit = self._stats.hit
        self._keys = key_stats_for(alias, self.options.key_stats) if self.options.key_stats else None

    # --- the fresh hit ------------------------------------------------------

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Return the value of ``key``, letting one caller (re)create it.

        A fresh value costs one store read.  A stale one is served to every
        caller but one, which regenerates it; a missing one is created by one
        caller while the others wait (:mod:`django_dogpile.regeneration`).

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
        """
        # The fresh hit, inline: this is the path every request takes.
        # (str keys only: the memo also holds (key, version) tuples)
        made = self._made.get(key) if version is None and type(key) is str else None
        if made is None:
            made = self.make_and_validate_key(key, version)
        raw = (self._store_cache or self.store).get(made, MISSING)
        if type(raw) is tuple and len(raw) == 4:
            expires = raw[2]
            if expires is None or (
                entries.now() < expires
                and not (self._early_refresh and self._early(raw, entries.now()))
            ):
                self._hit()
                if self._keys is not None:
                    self._keys.incr(key, "HIT")
                return raw[0]
        return self._dogpile(key, made, raw, default, timeout)[0]

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Async :meth:`get_or_set`; ``default`` may also be an async callable."""
        return (await self.aget_or_set_status(key, default, timeout, version))[0]

    def get_or_set_status(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> tuple[Any, str]:
        """As :meth:`get_or_set`, returning ``(value, status)``.

        ``status`` says how the value was obtained, in nginx's words:
        ``"HIT"``, ``"UPDATING"`` (stale, another caller regenerates),
        ``"STALE"`` (stale, regeneration failed), ``"EXPIRED"`` (stale,
        regenerated by this caller) or ``"MISS"``.
        """
        made = self.make_and_validate_key(key, version)
        raw = (self._store_cache or self.store).get(made, MISSING)
        if self._fresh_hit(key, raw):
            return raw[0], "HIT"
        return self._dogpile(key, made, raw, default, timeout)

    async def aget_or_set_status(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> tuple[Any, str]:
        """Async :meth:`get_or_set_status`; ``default`` may be async.

        See :mod:`django_dogpile.bridge` for what runs where.
        """
        made = self.make_and_validate_key(key, version)
        self.store  # noqa: B018 - connect, which tells whether the store is local
        return await bridge.aget_or_set_status(self, key, made, default, timeout)

    # --- Django's API -------------------------------------------------------

    def _record(self, value: Any, fresh_for: float | None) -> tuple[tuple[Any, ...], float | None]:
        """A new record for ``value`` and the store timeout that keeps it."""
        now = entries.now()
        expires = None if fresh_for is None else now + fresh_for
        return tuple(Entry(value, now, expires, 0.0)), store_timeout(expires, self.options.grace, now)

    def _forget(self, made: str) -> None:
        """An explicit write or delete ends this process's memory of the key."""
        ident = self.ident(made)
        fallbacks.discard(ident)
        retry_after.forget(ident)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Set a value if the key holds no fresh value; return True if set.

        A stale record counts as absent (as an expired key does in Django);
        replacing it holds the key's lock (in-process and lease), as a
        regeneration does.  An add that lands while a regeneration runs
        wins over it.
        """
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            return not self.has_key(key, version)
        record, ttl = self._record(value, fresh_for)
        self.store  # noqa: B018 - connect
        with self._pickling(f"the value for key {key!r}"):
            added = self._adapter.add(made, record, ttl, made + LOCK_SUFFIX)
        if added:
            self._forget(made)
            return True
        with self._exclusive(key, made):
            raw = self._adapter.backing.get(made, MISSING)  # not a near copy
            if is_fresh(raw, entries.now()):
                return False
            record, ttl = self._record(value, fresh_for)
            with self._pickling(f"the value for key {key!r}"):
                self.store.set(made, record, timeout=ttl)
            self._forget(made)
            return True

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return await bridge.run(self.add, key, value, timeout, version)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value if it is fresh, else ``default`` (stale is a miss)."""
        raw = self.store.get(self.make_and_validate_key(key, version), MISSING)
        if raw is not MISSING and is_entry(raw):
            expires = raw[2]
            if expires is None or entries.now() < expires:
                return raw[0]
        return default

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        self.store  # noqa: B018 - connect
        if self._adapter.local:  # a dict lookup: no lock, no I/O
            return self.get(key, default, version)
        return await bridge.run(self.get, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        """Set a value; ``timeout`` 0 or negative deletes, ``None`` keeps it forever.

        Wins over a regeneration running meanwhile, ends a ``RETRY_AFTER``
        hold and this process's outage fallback for the key.
        """
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            self.delete(key, version)
            return
        record, ttl = self._record(value, fresh_for)
        self.store  # noqa: B018 - connect
        with self._pickling(f"the value for key {key!r}"):
            self._adapter.set(made, record, ttl, made + LOCK_SUFFIX)
        self._forget(made)
        if self.options.retry_after and self._adapter.kind != "redis":
            # (Redis ends it in the same script; without RETRY_AFTER in this
            # alias's OPTIONS -- the same in every worker -- no hold is ever
            # left, and no round trip is spent looking)
            self._adapter.end_hold(made + LOCK_SUFFIX)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        return await bridge.run(self.set, key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a fresh value a new timeout; return False if there is none."""
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        with self._exclusive(key, made):
            raw = self._adapter.backing.get(made, MISSING)  # not a near copy
            now = entries.now()
            if not is_fresh(raw, now):
                return False
            if fresh_for is not None and fresh_for <= 0:
                self.store.delete(made)
                return True
            expires = None if fresh_for is None else now + fresh_for
            self.store.set(
                made,
                (raw[0], raw[1], expires, raw[3]),
                timeout=store_timeout(expires, self.options.grace, now),
            )
            return True

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return await bridge.run(self.touch, key, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove the key, fresh or stale; return True if it existed.

        Wins over a regeneration running meanwhile (its value is not stored
        after the delete); ends a ``RETRY_AFTER`` hold and this process's
        outage fallback.
        """
        made = self.make_and_validate_key(key, version)
        self._forget(made)
        self.store  # noqa: B018 - connect
        deleted = self._adapter.delete(made, made + LOCK_SUFFIX)
        if self.options.retry_after and self._adapter.kind != "redis":
            # (Redis ends it in the same script; without RETRY_AFTER in this
            # alias's OPTIONS -- the same in every worker -- no hold is ever
            # left, and no round trip is spent looking)
            self._adapter.end_hold(made + LOCK_SUFFIX)
        return deleted

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await bridge.run(self.delete, key, version)

    def invalidate(self, key: Any, version: int | None = None) -> bool:
        """Make the value stale but keep it servable for ``GRACE`` seconds.

        The next :meth:`get_or_set` regenerates it once while concurrent
        callers keep getting the old value; :meth:`get` sees a miss.  Stale
        for every host whatever its clock (the record's expiry becomes the
        epoch).  Return True if there was a value to invalidate.
        """
        made = self.make_and_validate_key(key, version)
        with self._exclusive(key, made):
            raw = self._adapter.backing.get(made, MISSING)  # not a near copy
            now = entries.now()
            if not self._live(raw, now):
                return False
            if raw[2] is not None and raw[2] <= now:
                return True  # already stale; keep its grace period
            self.store.set(
                made,
                (raw[0], raw[1], INVALIDATED, raw[3]),
                timeout=self.options.grace,
            )
            return True

    async def ainvalidate(self, key: Any, version: int | None = None) -> bool:
        return await bridge.run(self.invalidate, key, version)

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
        made = self.make_and_validate_key(key, version)
        with self._exclusive(key, made):
            raw = self._adapter.backing.get(made, MISSING)  # not a near copy
            now = entries.now()
            if not is_fresh(raw, now):
                raise ValueError(f"Key '{key}' not found")
            value = raw[0] + delta
            self.store.set(
                made,
                (value, raw[1], raw[2], raw[3]),
                timeout=store_timeout(raw[2], self.options.grace, now),
            )
            return value

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await bridge.run(self.incr, key, delta, version)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract ``delta``; see :meth:`incr`."""
        return self.incr(key, -delta, version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await bridge.run(self.incr, key, -delta, version)

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version + delta``; return that."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version)
        self.store  # noqa: B018 - connect
        raw = self._adapter.backing.get(old, MISSING)  # not a near copy
        now = entries.now()
        if not is_fresh(raw, now):
            raise ValueError(f"Key '{key}' not found")
        new = self.make_and_validate_key(key, version + delta)
        self.store.set(new, raw, timeout=store_timeout(raw[2], self.options.grace, now))
        self.store.delete(old)
        return version + delta

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await bridge.run(self.incr_version, key, delta, version)

    def decr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version - delta``; return that."""
        return self.incr_version(key, -delta, version)

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await bridge.run(self.incr_version, key, -delta, version)

    def clear(self) -> None:
        """Clear the *store* (every key of the wrapped alias).

        Everything this process remembers about the store is forgotten too
        (:mod:`django_dogpile.state`): outage fallbacks, retry holds, the
        page decorator's learnt ``Vary`` names and hit-for-miss marks.
        """
        state.forget(self.location)
        self.store.clear()

    async def aclear(self) -> None:
        return await bridge.run(self.clear)

    def close(self, **kwargs: Any) -> None:
        """Close the store's connections (Django calls this per request)."""
        if self._store_cache is not None:
            self._store_cache.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        if self._store_cache is not None:
            return await bridge.run(self.close, **kwargs)
