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

The rules:

* Every key holds one record ``(value, created, expires, cost)``; the store
  keeps it for ``TIMEOUT + GRACE`` seconds.  A record is *fresh* before
  ``expires``, *stale* until ``expires + GRACE``, then gone.
* ``get``, ``has_key``, ``get_many``, ``touch``, ``incr``... have Django's
  meaning: a stale record is a miss.  ``set(timeout=0)`` or a negative
  timeout deletes, ``timeout=None`` never expires.
* ``get_or_set`` is dogpile-protected:

  - fresh: one store read, nothing else;
  - stale: one caller (in any thread, process or host sharing the store)
    regenerates; every other caller gets the stale value at once.  With
    ``BACKGROUND`` even the winner gets the stale value and a worker thread
    regenerates;
  - missing: one caller creates, the others wait at most ``WAIT_TIMEOUT``
    seconds and are woken when the value lands; a caller whose wait runs
    out computes the value itself and does not store it;
  - the creator raising: the error reaches that caller only (or, with
    ``SERVE_STALE_ON_ERROR``, it gets the stale value and the error is
    logged); the lock is released either way -- or, with ``RETRY_AFTER``
    and a stale value to serve, kept that many seconds so that the failing
    work is retried once per period rather than by every request.

* The lock is an in-process lock per key, then a lease in the store (Redis
  ``SET NX PX`` on django-redis, ``add()`` elsewhere, none on locmem) that
  runs out after ``LOCK_TIMEOUT``; see :mod:`django_dogpile.locks`.
* ``invalidate(key)`` makes a value stale but servable: the next
  ``get_or_set`` regenerates it once.  ``delete`` removes it.
* Every outcome is counted (:mod:`django_dogpile.stats`), signalled
  (:mod:`django_dogpile.signals`) and logged on ``django_dogpile.cache``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import hashlib
import math
import pickle
import random
import time
import weakref
from typing import Any, Callable, Iterable, Iterator

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    memcache_key_warnings,
)
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

from . import entries, signals, state
from .conf import (
    BackendOptions,
    ConfigError,
    improperly_configured,
    parse_backend_options,
    parse_timeout,
)
from .core import Lock, NeedRegenerationException
from .entries import Entry, is_entry, is_fresh, store_timeout
from .exceptions import UncacheableValue, WaitTimeout
from .locks import (
    MISSING,
    CacheLease,
    KeyMutex,
    RedisLease,
    RedisScripts,
    fallbacks,
    key_lock,
)
from .runners import submit
from .stats import key_stats_for, stats_for

__all__ = ["DogpileCache"]

log = logging.getLogger(__name__)

#: ``default.detach`` when ``default`` has none: run it as it is.
_AS_IS: Any = object()

_FRESH = math.inf  # the "creation time" the core sees for a fresh value
_STALE = 1.0  # ... and for a stale one (> 0: there is a value; long expired)

_KEY_MEMO_SIZE = 4096  # made keys remembered per backend instance
LOCK_SUFFIX = ":dogpile-lock"  # the lock of a key is the key + this

_IN_PROCESS_STORES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_in_process(store: Any) -> bool:
    return any(
        f"{c.__module__}.{c.__qualname__}" in _IN_PROCESS_STORES
        for c in type(store).__mro__
    )


def _is_django_redis(store: Any) -> bool:
    client = getattr(store, "client", None) if any(
        c.__module__.startswith("django_redis") for c in type(store).__mro__
    ) else None
    return client is not None and hasattr(client, "get_client") and hasattr(
        client, "decode"
    )


class _Call:
    """What happened inside one dogpile-protected ``get_or_set``."""

    __slots__ = ("reads", "stale", "outcome", "first", "seen_created")

    def __init__(self, first: Any) -> None:
        self.first = first
        self.seen_created: float | None = None
        self.reads = 0
        self.stale: Any = MISSING
        self.outcome = "UPDATING"


class DogpileCache(BaseCache):
    """A Django cache backend over another alias; see the module docstring.

    :param location: the alias of the store (``LOCATION`` in ``CACHES``).
    :param params: the rest of the alias's settings.  ``TIMEOUT`` is the
     freshness; ``OPTIONS`` takes ``GRACE``, ``LOCK_TIMEOUT``,
     ``WAIT_TIMEOUT``, ``BACKGROUND``, ``BACKGROUND_WORKERS``,
     ``SERVE_STALE_ON_ERROR``, ``EARLY_REFRESH`` and ``LOCK``.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        params = dict(params)
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
        # BaseCache reads MAX_ENTRIES/CULL_FREQUENCY from OPTIONS; ours are
        # not its business.
        params["OPTIONS"] = {}
        super().__init__(params)
        self.default_timeout = timeout  # BaseCache would truncate floats
        self.location = location
        self.alias = self._find_alias(location, params)
        self._stats = stats_for(self.alias)
        self._hit = self._stats.hit
        self._keys = (
            key_stats_for(self.alias, self.options.key_stats) if self.options.key_stats else None
        )
        self._store_cache: BaseCache | None = None
        self._lease_factory: Callable[[str, str], Any] | None = None
        self._local = False
        self._set_reports = False
        #: user key (or (key, version)) -> store key, for str keys.
        self._made: dict[Any, str] = {}
        self._early_refresh = self.options.early_refresh

    @staticmethod
    def _find_alias(location: str, params: dict[str, Any]) -> str:
        for alias, conf in getattr(settings, "CACHES", {}).items():
            if conf.get("LOCATION") == location and conf.get("BACKEND", "").endswith(
                "DogpileCache"
            ) and conf.get("KEY_PREFIX", "") == params.get("KEY_PREFIX", ""):
                return alias
        return f"dogpile:{location}"

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
        if isinstance(store, DogpileCache):
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: LOCATION {self.location!r} is a "
                "DogpileCache itself; point it at the alias that holds the data. "
                "[django_dogpile.E002]"
            )
        self._local = _is_in_process(store)
        # django-redis's set() returns True, or None when IGNORE_EXCEPTIONS
        # swallowed an error; Django's own backends return None on success.
        self._set_reports = _is_django_redis(store)
        kind = self.options.lock
        if kind == "auto":
            kind = "redis" if _is_django_redis(store) else (
                "local" if self._local else "cache"
            )
        if kind == "redis":
            if not _is_django_redis(store):
                raise ImproperlyConfigured(
                    f"DogpileCache {self.alias!r}: LOCK 'redis' needs a django-redis "
                    f"store, and {self.location!r} is {_class_path(store)}. "
                    "[django_dogpile.E009]"
                )
            self._lease_factory = self._redis_lease_factory(store)
        elif kind == "cache":
            timeout = self.options.lock_timeout
            self._lease_factory = lambda lock_key, record_key: CacheLease(
                store, lock_key, record_key, timeout
            )
        else:
            self._lease_factory = None
        self._store_cache = store
        return store

    def _redis_lease_factory(self, store: Any) -> Callable[[str, str], Any]:
        client_wrapper = store.client
        redis = client_wrapper.get_client(write=True)
        scripts = RedisScripts(redis)
        ignore = bool(getattr(store, "_ignore_exceptions", False))
        timeout = self.options.lock_timeout

        def factory(lock_key: str, record_key: str) -> RedisLease:
            return RedisLease(
                redis,
                scripts,
                str(store.make_key(lock_key)),
                str(store.make_key(record_key)),
                timeout,
                client_wrapper.decode,
                ignore,
            )

        return factory

    def _mutex(self, made: str, *, exclusive: bool = False) -> KeyMutex:
        """The key's lock: for ``get_or_set``, or ``exclusive`` for a
        read-modify-write, which must hold it even when a value exists."""
        if self._store_cache is None:
            self._connect()
        factory = self._lease_factory
        lease = factory(made + LOCK_SUFFIX, made) if factory else None
        return KeyMutex(
            key_lock((self.location, made)),
            lease,
            self.options.wait_timeout,
            None if exclusive else (lambda record: self._live(record, entries.now())),
        )

    @contextlib.contextmanager
    def _exclusive(self, key: Any, made: str) -> Iterator[None]:
        """Hold the key's lock (in-process and lease) for a read-modify-write.

        ``get_or_set`` holds the same lock while it regenerates, so an
        ``incr``, ``touch``, ``invalidate`` or ``add`` over a stale value
        never interleaves with a regeneration, in any process.  Raises
        :class:`WaitTimeout` if the lock stays taken past ``WAIT_TIMEOUT``.
        """
        mutex = self._mutex(made, exclusive=True)
        try:
            mutex.acquire()
        except WaitTimeout:
            raise WaitTimeout(
                f"DogpileCache {self.alias!r}: key {key!r} stayed locked by a "
                f"regeneration for {self.options.wait_timeout}s (WAIT_TIMEOUT)"
            ) from None
        try:
            yield
        finally:
            mutex.release()

    # --- keys and records ---------------------------------------------------

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
        if not clean or any(memcache_key_warnings(self.store.make_key(made + LOCK_SUFFIX))):
            store_key = "dogpile.h." + hashlib.sha256(made.encode()).hexdigest()
        # Remember keys that passed cleanly (a bad key warns on every call,
        # as with Django's backends); str keys only, (key, version) when
        # a version is given.
        if clean and memo_key is not None:
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

    def _live(self, raw: Any, now: float) -> bool:
        """True if ``raw`` is a record still servable (fresh or stale)."""
        if not is_entry(raw):
            return False
        expires = raw[2]
        return expires is None or now < expires + self.options.grace

    def _store_entry(
        self,
        key: Any,
        made: str,
        value: Any,
        fresh_for: float | None,
        cost: float = 0.0,
        mutex: KeyMutex | None = None,
    ) -> bool:
        now = entries.now()
        expires = None if fresh_for is None else now + fresh_for
        record = tuple(Entry(value, now, expires, cost))
        with self._pickling(f"the value for key {key!r}"):
            result: Any = self.store.set(  # type: ignore[func-returns-value]
                made, record, timeout=store_timeout(expires, self.options.grace, now)
            )
        stored = bool(result) if self._set_reports else result is not False
        if mutex is not None and stored:
            mutex.local.publish(record)
        return stored

    @contextlib.contextmanager
    def _pickling(self, what: str) -> Iterator[None]:
        """Turn the store's pickling errors into :class:`UncacheableValue`."""
        try:
            yield
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UncacheableValue(
                f"DogpileCache {self.alias!r}: {what} cannot be stored: {exc}"
            ) from exc

    def _count(self, name: str, key: Any) -> None:
        self._stats.incr(name)
        if self._keys is not None:
            self._keys.incr(key, name)

    def _early(self, raw: Any, now: float) -> bool:
        """The XFetch rule: refresh before expiry, likelier as it nears."""
        beta = self.options.early_refresh
        if not beta or raw[2] is None:
            return False
        cost = raw[3] or 0.0
        return now - cost * beta * math.log(random.random() or 1e-12) >= raw[2]

    # --- Django's API -------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Set a value if the key holds no fresh value; return True if set.

        A stale record counts as absent (as an expired key does in Django);
        replacing it holds the key's lock (in-process and lease), as a
        regeneration does.
        """
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            return not self.has_key(key, version)
        now = entries.now()
        expires = None if fresh_for is None else now + fresh_for
        with self._pickling(f"the value for key {key!r}"):
            added = self.store.add(
                made,
                tuple(Entry(value, now, expires, 0.0)),
                timeout=store_timeout(expires, self.options.grace, now),
            )
        if added:
            return True
        with self._exclusive(key, made):
            raw = self.store.get(made, MISSING)
            if is_fresh(raw, entries.now()):
                return False
            return self._store_entry(key, made, value, fresh_for)

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return await self._async(self.add, key, value, timeout, version)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value if it is fresh, else ``default``."""
        raw = self.store.get(self.make_and_validate_key(key, version), MISSING)
        if raw is not MISSING and is_entry(raw):
            expires = raw[2]
            if expires is None or entries.now() < expires:
                return raw[0]
        return default

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await self._async(self.get, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        """Set a value; ``timeout`` 0 or negative deletes, ``None`` keeps it forever."""
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            self.store.delete(made)
            return
        self._store_entry(key, made, value, fresh_for)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        return await self._async(self.set, key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a fresh value a new timeout; return False if there is none."""
        made = self.make_and_validate_key(key, version)
        fresh_for = self._freshness(timeout)
        with self._exclusive(key, made):
            raw = self.store.get(made, MISSING)
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
        return await self._async(self.touch, key, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove the key, fresh or stale; return True if it existed."""
        made = self.make_and_validate_key(key, version)
        fallbacks.discard((self.location, made))
        return bool(self.store.delete(made))

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._async(self.delete, key, version)

    def invalidate(self, key: Any, version: int | None = None) -> bool:
        """Make the value stale but keep it servable for ``GRACE`` seconds.

        The next :meth:`get_or_set` regenerates it once while concurrent
        callers keep getting the old value; :meth:`get` sees a miss.
        Return True if there was a value to invalidate.
        """
        made = self.make_and_validate_key(key, version)
        with self._exclusive(key, made):
            raw = self.store.get(made, MISSING)
            now = entries.now()
            if not self._live(raw, now):
                return False
            if raw[2] is not None and raw[2] <= now:
                return True  # already stale; keep its grace period
            self.store.set(
                made,
                (raw[0], raw[1], now, raw[3]),
                timeout=store_timeout(now, self.options.grace, now),
            )
            return True

    async def ainvalidate(self, key: Any, version: int | None = None) -> bool:
        return await self._async(self.invalidate, key, version)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return True if the key holds a fresh value."""
        return self.get(key, MISSING, version) is not MISSING

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._async(self.has_key, key, version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return a dict of the fresh values among ``keys``."""
        made = {self.make_and_validate_key(k, version): k for k in keys}
        if not made:
            return {}
        now = entries.now()
        found = {}
        for mk, raw in self.store.get_many(list(made)).items():
            if is_fresh(raw, now):
                found[made[mk]] = raw[0]
        return found

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return await self._async(self.get_many, list(keys), version)

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        """Set several values; return the keys that failed to be stored."""
        fresh_for = self._freshness(timeout)
        made = {self.make_and_validate_key(k, version): k for k in data}
        if fresh_for is not None and fresh_for <= 0:
            self.store.delete_many(list(made))
            return []
        now = entries.now()
        expires = None if fresh_for is None else now + fresh_for
        records = {mk: (data[k], now, expires, 0.0) for mk, k in made.items()}
        with self._pickling(f"a value among keys {list(data)!r}"):
            failed = self.store.set_many(
                records, timeout=store_timeout(expires, self.options.grace, now)
            )
        return [made.get(mk, mk) for mk in failed or []]

    async def aset_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        return await self._async(self.set_many, data, timeout, version)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove several keys."""
        made = [self.make_and_validate_key(k, version) for k in keys]
        for one in made:
            fallbacks.discard((self.location, one))
        if made:
            self.store.delete_many(made)

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        return await self._async(self.delete_many, list(keys), version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to a fresh value, keeping its expiry; return the sum.

        Raise :class:`ValueError` if the key holds no fresh value.  The
        read-modify-write holds the key's lock (the in-process lock and the
        store lease), so concurrent increments from several processes do
        not lose updates.
        """
        made = self.make_and_validate_key(key, version)
        with self._exclusive(key, made):
            raw = self.store.get(made, MISSING)
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
        return await self._async(self.incr, key, delta, version)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract ``delta``; see :meth:`incr`."""
        return self.incr(key, -delta, version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await self._async(self.incr, key, -delta, version)

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version + delta``; return that."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version)
        raw = self.store.get(old, MISSING)
        now = entries.now()
        if not is_fresh(raw, now):
            raise ValueError(f"Key '{key}' not found")
        new = self.make_and_validate_key(key, version + delta)
        self.store.set(new, raw, timeout=store_timeout(raw[2], self.options.grace, now))
        self.store.delete(old)
        return version + delta

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self._async(self.incr_version, key, delta, version)

    def decr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a fresh value to version ``version - delta``; return that."""
        return self.incr_version(key, -delta, version)

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self._async(self.incr_version, key, -delta, version)

    def clear(self) -> None:
        """Clear the *store* (every key of the wrapped alias).

        Everything this process remembers about the store is forgotten too
        (:mod:`django_dogpile.state`): outage fallbacks, retry holds, the
        page decorator's learnt ``Vary`` names and hit-for-miss marks.
        """
        state.forget(self.location)
        self.store.clear()

    async def aclear(self) -> None:
        return await self._async(self.clear)

    def close(self, **kwargs: Any) -> None:
        """Close the store's connections (Django calls this per request)."""
        if self._store_cache is not None:
            self._store_cache.close(**kwargs)

    async def aclose(self, **kwargs: Any) -> None:
        if self._store_cache is not None:
            return await self._async(self.close, **kwargs)

    async def _async(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a sync method without blocking the event loop.

        An in-process store (locmem) never waits on I/O, so it is called
        directly; any other store runs in a worker thread.
        """
        self.store  # noqa: B018 - connect, which tells whether the store is local
        if self._local:
            return fn(*args, **kwargs)
        return await sync_to_async(fn, thread_sensitive=False)(*args, **kwargs)

    # --- the dogpile path ---------------------------------------------------

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Return the value of ``key``, letting one caller (re)create it.

        :param key: the cache key.
        :param default: the value, or a callable making it, used when the
         key is missing or stale.  Only one caller at a time calls it per
         key, across threads and processes sharing the store.
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

    def _fresh_hit(self, key: Any, raw: Any) -> bool:
        """True (and counted) if ``raw`` is a record to serve as a hit now.

        ``get_or_set`` has the same test inline: it is the hot path.
        """
        if not is_entry(raw):
            return False
        now = entries.now()
        if raw[2] is None or (
            now < raw[2] and not (self._early_refresh and self._early(raw, now))
        ):
            self._hit()
            if self._keys is not None:
                self._keys.incr(key, "HIT")
            return True
        return False

    def _dogpile(self, key: Any, made: str, raw: Any, default: Any, timeout: Any) -> Any:
        fresh_for = self._freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            self._count("MISS", key)
            return (default() if callable(default) else default), "MISS"
        mutex = self._mutex(made)
        call = _Call(raw)

        def value_and_created() -> tuple[Any, float]:
            call.reads += 1
            if call.reads == 1:
                record = call.first
                call.first = None
            elif mutex.landed is not MISSING:
                # Waited, and the lease found the value instead of the lock:
                # serve it (this caller holds no lock, so never regenerate).
                return mutex.landed[0], _FRESH
            else:
                # After a wait: the Redis lease read the record atomically
                # with taking the lock, so only other stores are read again.
                record = mutex.snapshot()
                if record is MISSING:
                    record = self.store.get(made, MISSING)
            now = entries.now()
            if not self._live(record, now):
                kept = fallbacks.get((self.location, made), now)
                if kept is not MISSING:  # computed here while the store was down
                    return kept, _FRESH
                raise NeedRegenerationException()
            if call.reads > 1 and (record[2] is None or now < record[2]):
                return record[0], _FRESH  # another caller created it meanwhile
            call.stale = record[0]
            call.seen_created = record[1]
            return record[0], _STALE

        def creator() -> tuple[Any, float]:
            if call.reads == 1 and call.stale is not MISSING:
                # The core read once; somebody may have finished between that
                # read and our lock (a record with another creation time).
                # The Redis lease fetched the record with the lock, so this
                # costs no round trip there.
                record = mutex.snapshot()
                if record is MISSING:
                    record = self.store.get(made, MISSING)
                if is_fresh(record, entries.now()) and record[1] != call.seen_created:
                    call.outcome = "HIT"
                    return record[0], _FRESH
            call.outcome = "EXPIRED" if call.stale is not MISSING else "MISS"
            return self._create(key, made, default, fresh_for, mutex, call)

        async_creator = None
        detach = getattr(default, "detach", _AS_IS)
        if self.options.background and detach is not None:

            def async_creator(m: Any) -> None:
                # in the caller's thread: a creator that reads request state
                # hands the pool a copy of it (the template tag's context)
                job = default if detach is _AS_IS else detach()
                submit(
                    self.options.background_workers,
                    self._background,
                    key, made, job, fresh_for, m, call,
                )

        started = time.monotonic()
        try:
            with Lock(mutex, creator, value_and_created, 0, async_creator) as value:
                pass
        except WaitTimeout:
            return self._wait_timed_out(key, default, started), "MISS"
        return value, self._account(key, call, mutex, started)

    def _create(self, key: Any, made: str, default: Any, fresh_for: float | None, mutex: KeyMutex, call: _Call | None) -> tuple[Any, float]:
        started = time.monotonic()
        self._count("REGENERATIONS", key)
        try:
            value = default() if callable(default) else default
        except Exception as exc:
            self._count("ERRORS", key)
            signals.regeneration_failed.send(
                type(self), alias=self.alias, key=key, exception=exc
            )
            if self.options.retry_after and (call is None or call.stale is not MISSING):
                # a stale value is there: serve it, and retry only later
                mutex.hold_on_release(self.options.retry_after)
            if (
                call is not None
                and call.stale is not MISSING
                and self.options.serve_stale_on_error
            ):
                log.error(
                    "regenerating %r failed; serving the stale value", key, exc_info=True
                )
                call.outcome = "STALE"
                return call.stale, _STALE
            log.debug("regenerating %r failed", key, exc_info=True)
            raise
        cost = time.monotonic() - started
        stored = self._store_entry(key, made, value, fresh_for, cost, mutex)
        if mutex.degraded or not stored:
            # Serve it to this process while the store is unreachable: for
            # its freshness, and never more than a minute without one.
            expires = entries.now() + (60.0 if fresh_for is None else fresh_for)
            fallbacks.put((self.location, made), value, expires)
        else:
            fallbacks.discard((self.location, made))
        self._stats.last_regeneration = when = time.time()
        if self._keys is not None:
            self._keys.regenerated(key, when)
        log.debug("regenerated %r in %.3fs", key, cost)
        signals.value_regenerated.send(
            type(self), alias=self.alias, key=key, duration=cost,
            background=call is None,
        )
        return value, _FRESH

    def _background(self, key: Any, made: str, default: Any, fresh_for: float | None, mutex: KeyMutex, call: _Call) -> None:
        # A pool thread is outside any request: Django's request signals do
        # not close its database connections, so do what they do.
        close_old_connections()
        try:
            record = mutex.snapshot()
            if record is MISSING:
                record = self.store.get(made, MISSING)
            if is_fresh(record, entries.now()):
                return
            self._create(key, made, default, fresh_for, mutex, None)
        except Exception:
            log.exception("background regeneration of %r failed", key)
        finally:
            mutex.release()
            close_old_connections()

    def _account(self, key: Any, call: _Call, mutex: KeyMutex, started: float) -> str:
        outcome = call.outcome
        if outcome == "UPDATING" and call.reads > 1:
            outcome = "MISS"  # waited and then read what another caller made
        self._count(outcome, key)
        if mutex.waited:
            self._count("WAITS", key)
            signals.caller_waited.send(
                type(self), alias=self.alias, key=key,
                duration=time.monotonic() - started, timed_out=False,
            )
        if outcome in ("UPDATING", "STALE"):
            log.debug("served stale %r (%s)", key, outcome)
            signals.stale_served.send(
                type(self), alias=self.alias, key=key, reason=outcome
            )
        return outcome

    def _wait_timed_out(self, key: Any, default: Any, started: float) -> Any:
        waited = time.monotonic() - started
        self._count("WAIT_TIMEOUTS", key)
        self._count("MISS", key)
        log.warning(
            "waited %.1fs for %r to be created elsewhere; computing it here "
            "without storing it (WAIT_TIMEOUT)", waited, key,
        )
        signals.caller_waited.send(
            type(self), alias=self.alias, key=key, duration=waited, timed_out=True
        )
        return default() if callable(default) else default

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Async :meth:`get_or_set`; ``default`` may also be an async callable."""
        return (await self.aget_or_set_status(key, default, timeout, version))[0]

    async def aget_or_set_status(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> tuple[Any, str]:
        """Async :meth:`get_or_set_status`; ``default`` may be async.

        A fresh hit never leaves the event loop on an in-process store and
        costs one store read elsewhere.  Coroutines of one event loop asking
        for the same key share one regeneration; waiting happens in a worker
        thread, never on the loop.
        """
        made = self.make_and_validate_key(key, version)
        store = self.store
        raw = (
            store.get(made, MISSING)
            if self._local
            else await sync_to_async(store.get, thread_sensitive=False)(made, MISSING)
        )
        if self._fresh_hit(key, raw):
            return raw[0], "HIT"
        ident = (self.location, made)
        inflight = _inflight()
        while (pending := inflight.get(ident)) is not None:
            if self._live(raw, entries.now()):
                self._count("UPDATING", key)
                return raw[0], "UPDATING"
            future, followers = pending
            followers.append(1)
            try:
                blob = await asyncio.shield(future)
            except BaseException:
                if not future.done():
                    raise  # this caller itself was cancelled
                blob = None  # the leader failed: take our own turn
            if blob is not None:
                # each caller its own object, as if read from the store
                self._count("MISS", key)
                return pickle.loads(blob), "MISS"
            raw = (
                store.get(made, MISSING)
                if self._local
                else await sync_to_async(store.get, thread_sensitive=False)(made, MISSING)
            )
            if self._fresh_hit(key, raw):
                return raw[0], "HIT"
        future = asyncio.get_running_loop().create_future()
        followers: list[int] = []
        inflight[ident] = (future, followers)
        try:
            result = await sync_to_async(self._dogpile, thread_sensitive=False)(
                key, made, raw, _syncify(default), timeout
            )
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: followers may be none
            raise
        else:
            future.set_result(_copy_of(result[0]) if followers else None)
            return result
        finally:
            inflight.pop(ident, None)


def _copy_of(value: Any) -> bytes | None:
    """``value`` pickled for the callers that waited on one regeneration."""
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


_Inflight = dict[Any, tuple["asyncio.Future[Any]", list[int]]]
_loops: weakref.WeakKeyDictionary[Any, _Inflight] = weakref.WeakKeyDictionary()


def _inflight() -> _Inflight:
    loop = asyncio.get_running_loop()
    pending = _loops.get(loop)
    if pending is None:
        pending = _loops[loop] = {}
    return pending


def _syncify(default: Any) -> Any:
    """Make ``default`` callable from a worker thread, awaiting it if async."""
    if not callable(default):
        return default
    if inspect.iscoroutinefunction(default):
        return async_to_sync(default)

    def call() -> Any:
        result = default()
        if inspect.isawaitable(result):
            async def wait() -> Any:
                return await result

            return async_to_sync(wait)()
        return result

    detach = getattr(default, "detach", _AS_IS)
    if detach is not _AS_IS:
        call.detach = detach  # type: ignore[attr-defined]
    return call
