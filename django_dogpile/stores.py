"""Store adapters: what kind of cache holds the data, and its lease.

Chosen once, in :func:`adapter_for`, when a ``DogpileCache`` first touches
its store:

=================  ===============================  =========================
store              lease                            fenced write
=================  ===============================  =========================
django-redis       ``SET NX PX`` script, pub/sub    token check + ``SET`` in
                   wake-up (:class:`RedisLease`)    one script
file cache         lock file under ``flock``        lease check, then the
                   (:class:`FileLease`)             record's creation time
database cache     lease row: delete-expired, then  lease check, then the
                   primary-key ``INSERT``           record's creation time;
                   (:class:`DatabaseLease`)         writes retried when busy
other shared       ``cache.add()``                  lease check, then the
(memcached)        (:class:`CacheLease`)            record's creation time
locmem, dummy      none: the in-process lock        the record's creation
                                                    time
=================  ===============================  =========================

"Fenced": a regeneration's value reaches the store only while its lease is
still held and only over the record it started from.  On Redis, an explicit
``set``/``add`` also revokes a running regeneration's lease, so the
explicit write wins; elsewhere the regeneration reads the record just
before writing and gives up if its creation time changed (the window left is
the time between that read and the write, one store round trip).
"""

from __future__ import annotations

import logging
import importlib
import math
import threading
import pickle
from dataclasses import dataclass
from typing import Any, Callable

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from .exceptions import UncacheableValue
from .leases import CacheLease, DatabaseLease, FileLease, is_outage
from .pubsub import is_cluster
from .redis_lease import RedisLease, RedisScripts

__all__ = [
    "RedisAccess", "StoreAdapter", "adapter_for", "class_path", "is_django_redis", "is_in_process",
    "redis_access",
]

log = logging.getLogger(__name__)

_IN_PROCESS_STORES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
_FILE_STORE = "django.core.cache.backends.filebased.FileBasedCache"
_DB_STORE = "django.core.cache.backends.db.DatabaseCache"
_DJANGO_REDIS_STORE = "django.core.cache.backends.redis.RedisCache"
_MEMCACHED_STORE = "django.core.cache.backends.memcached.BaseMemcachedCache"


def class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _inherits(store: Any, paths: tuple[str, ...]) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in paths for c in type(store).__mro__)


def is_in_process(store: Any) -> bool:
    """True for a store that lives in this process (locmem, dummy)."""
    return _inherits(store, _IN_PROCESS_STORES)


def is_memcached(store: Any) -> bool:
    return _inherits(store, (_MEMCACHED_STORE,))


def _whole_seconds(timeout: Any) -> Any:
    """A positive timeout as memcached needs it to last at least that long;
    others unchanged.

    memcached's clock ticks once a second and an item set with ``n`` expires
    at the ``n``-th tick from now, the first of which may come a moment
    later: it lives between ``n - 1`` and ``n`` seconds.  So: rounded up,
    plus one.
    """
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return math.ceil(timeout) + 1
    return timeout


class MemcachedStore:
    """A memcached store as DogpileCache uses it (Django's own instance is
    left untouched for everyone else).

    * Each call goes to a client of **this thread's** own: Django's
      memcached clients (pymemcache without pooling, pylibmc) are not
      thread-safe; sharing one between threads interleaved the protocol
      (seen: ``MemcacheUnknownError: b'STORED'``, values read under the
      wrong key).  Not ``caches[alias]``: under ASGI that instance is shared
      by the threads ``sync_to_async`` runs one request's calls in (seen:
      ``Bad file descriptor`` with concurrent async requests).
    * Timeouts are rounded **up** to whole seconds, plus one.  memcached
      counts whole seconds of its own clock and Django truncates, so a 0.5 s
      lease became "expired at once" (every caller took it), and a 1 s lease
      could end a moment after it was taken (at the server's next tick).
    * A value over memcached's item size limit raises
      :class:`~django_dogpile.exceptions.UncacheableValue` (the server's
      "object too large" error, which pymemcache raises from ``set``), which
      the backend reports with the key: not a miss on every request.
    """

    def __init__(self, store: Any, alias: str | None) -> None:
        from django.core.cache import caches

        if alias is None:  # not from CACHES: one instance is all there is
            self._here: Callable[[], Any] = lambda: store
            return
        local = threading.local()

        def here() -> Any:
            found = getattr(local, "store", None)
            if found is None:
                found = local.store = caches.create_connection(alias)
            return found

        self._here = here

    def __getattr__(self, name: str) -> Any:
        return getattr(self._here(), name)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._here().get(key, default, version)

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        return self._here().get_many(keys, version)

    def _too_large(self, exc: Exception, values: Any) -> UncacheableValue:
        size = sum(len(pickle.dumps(v, pickle.HIGHEST_PROTOCOL)) for v in values)
        return UncacheableValue(
            f"{size} bytes pickled is over memcached's item size limit "
            f"(memcached -I, 1 MB by default): {exc}"
        )

    @staticmethod
    def _is_too_large(exc: Exception) -> bool:
        text = str(exc).lower()
        return "too large" in text or "too big" in text or type(exc).__name__ == "TooBig"

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        try:
            self._here().set(key, value, _whole_seconds(timeout), version)
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, [value]) from exc
            raise

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        try:
            return bool(self._here().add(key, value, _whole_seconds(timeout), version))
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, [value]) from exc
            raise

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        try:
            return list(self._here().set_many(data, _whole_seconds(timeout), version) or [])
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, data.values()) from exc
            raise

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._here().touch(key, _whole_seconds(timeout), version))


def is_file(store: Any) -> bool:
    return _inherits(store, (_FILE_STORE,))


def _module_of(store: Any, *packages: str) -> bool:
    return any(c.__module__.split(".")[0] in packages for c in type(store).__mro__)


def is_django_redis(store: Any) -> bool:
    """True for django-redis's (or django-valkey's) cache with a scriptable client."""
    client = getattr(store, "client", None) if _module_of(store, "django_redis", "django_valkey") else None
    return client is not None and hasattr(client, "decode") and (
        hasattr(client, "get_server") or hasattr(client, "get_client")
    )


@dataclass(frozen=True)
class RedisAccess:
    """How to run the lease's scripts on one Redis-protocol store.

    ``client_for(made_key)`` is the client of the server that holds the
    record ``made_key`` (its primary): the lock key of a record always goes
    to the record's server, whatever a hash of the lock key would say, so a
    script touching both stays on one server (django-redis's ShardClient).
    """

    name: str
    client_for: Callable[[str], Any]
    clients: Callable[[], list[Any]]
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    errors: tuple[type[BaseException], ...]
    ignore: bool
    #: a Redis Cluster: keys are hash-tagged so a record, its lock and its
    #: retry hold share a slot; wake-ups and broadcasts are sharded
    cluster: bool = False


def _connection_errors(package: str) -> tuple[type[BaseException], ...]:
    """What a Redis call is guarded with; :func:`is_outage` tells which of
    those are an outage (the rest are raised as they are)."""
    exceptions = importlib.import_module(f"{package}.exceptions")
    cluster = getattr(exceptions, "ValkeyClusterException", None) or getattr(
        exceptions, "RedisClusterException", None
    )
    found = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ResponseError)
    return found + ((cluster,) if cluster is not None else ())




def redis_access(store: Any) -> RedisAccess | None:
    """The native access to ``store``, or None when it is not a Redis we script.

    Known: django-redis (default, Sentinel, Herd and Shard clients),
    django-valkey (the same clients), Django's own ``RedisCache`` (single
    server or primary + replicas: scripts run on the first ``LOCATION``).
    """
    if is_django_redis(store):
        wrapper = store.client
        valkey = _module_of(store, "django_valkey")
        name = "django-valkey" if valkey else "django-redis"
        errors = _connection_errors("valkey" if valkey else "redis")
        ignore = bool(getattr(store, "_ignore_exceptions", False))
        if hasattr(wrapper, "get_server") and hasattr(wrapper, "_serverdict"):
            return RedisAccess(
                f"{name} (shards)", wrapper.get_server, lambda: list(wrapper._serverdict.values()),
                wrapper.encode, wrapper.decode, errors, ignore,
            )
        primary = wrapper.get_client(write=True)
        if is_cluster(primary):
            # the cluster client routes each command (and each script, by its
            # keys' one slot) to the primary that serves the slot
            name = f"{name} (cluster)"
        return RedisAccess(
            name, lambda key: primary, lambda: [primary], wrapper.encode, wrapper.decode, errors, ignore,
            is_cluster(primary),
        )
    if _inherits(store, (_DJANGO_REDIS_STORE,)):
        inner = store._cache
        serializer = inner._serializer
        main = inner.get_client(write=True)
        return RedisAccess(
            "Django's RedisCache", lambda key: main, lambda: [main],
            serializer.dumps, serializer.loads, _connection_errors("redis"), False,
        )
    return None


class StoreAdapter:
    """The lease factory of one store, and its store-specific writes.

    ``kind`` is ``"redis"``, ``"file"``, ``"cache"`` or ``"local"``.
    """

    #: a write through the lease checks the token atomically
    fenced_by_lease = False
    #: a Redis Cluster (keys hash-tagged: see :mod:`django_dogpile.pubsub`)
    cluster = False

    @staticmethod
    def wrote(made: str) -> None:
        """The record ``made`` changed (a near cache, when on, replaces this)."""

    def __init__(self, store: Any, kind: str, lock_timeout: float, holds: bool = True) -> None:
        self.store = store
        #: the store itself, never a near cache in front of it: what a
        #: read-modify-write or a fence must read (``store`` may become a
        #: NearStore, whose copies may be older than the store's record)
        self.backing = store
        self.kind = kind
        self.lock_timeout = lock_timeout
        self.local = is_in_process(store)
        # django-redis's set() returns True, or None when IGNORE_EXCEPTIONS
        # swallowed an error; Django's own backends return None on success.
        self.set_reports = is_django_redis(store)
        self.lease: Callable[[str, str], Any] | None = None
        factory: Any = None
        if kind == "cache":
            factory = DatabaseLease if _inherits(store, (_DB_STORE,)) else CacheLease
        elif kind == "file":
            factory = FileLease
        if factory is not None:
            def lease(lock_key: str, record_key: str) -> Any:
                made = factory(store, lock_key, record_key, lock_timeout)
                made.check_hold = holds
                return made

            self.lease = lease

    def set(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """Store ``record`` for an explicit ``set()``; True if stored."""
        result: Any = self.store.set(made, record, timeout=timeout)  # type: ignore[func-returns-value]
        return bool(result) if self.set_reports else result is not False

    def add(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        return bool(self.store.add(made, record, timeout=timeout))

    def delete(self, made: str, lock_key: str) -> bool:
        """Delete for an explicit ``delete()``; True if the key existed."""
        return bool(self.store.delete(made))

    def delete_many(self, made: list[str], lock_keys: list[str]) -> None:
        self.store.delete_many(made)

    def end_hold(self, lock_key: str) -> None:
        """End a ``RETRY_AFTER`` hold on the key (``set``/``delete`` do)."""
        if self.kind in ("cache", "file"):
            self.store.delete(lock_key + ":retry")


class RedisAdapter(StoreAdapter):
    """A Redis-protocol store: scripts on the record's primary, values encoded
    by the store's own serializer (so its ``get`` reads what a script wrote)."""

    fenced_by_lease = True

    def __init__(self, store: Any, access: RedisAccess, lock_timeout: float) -> None:
        super().__init__(store, "redis", lock_timeout)
        self.access = access
        self.client_for = access.client_for
        self.scripts = RedisScripts(access.clients()[0])
        self.encode = access.encode
        self.decode = access.decode
        self.errors = access.errors
        self.ignore = access.ignore
        self.cluster = access.cluster
        self.lease = self._lease

    def raw_key(self, key: str) -> str:
        return str(self.store.make_key(key))

    def _lease(self, lock_key: str, record_key: str) -> RedisLease:
        record = self.raw_key(record_key)
        return RedisLease(
            self.client_for(record),
            self.scripts,
            self.raw_key(lock_key),
            record,
            self.lock_timeout,
            self.encode,
            self.decode,
            self.ignore,
            self.errors,
        )

    def _write(self, script: Any, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        px = 0 if timeout is None else max(int(timeout * 1000), 1)
        key, lock = self.raw_key(made), self.raw_key(lock_key)
        try:
            return bool(script(
                keys=[key, lock, lock + ":retry"],
                args=[self.encode(record), px],
                client=self.client_for(key),
            ))
        except self.errors as exc:
            if self.ignore and is_outage(exc):
                log.warning("store unavailable (%s); %s not written", exc, made)
                return False
            raise

    def set(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """``SET`` that also revokes a running regeneration's lease."""
        try:
            return self._write(self.scripts.set, made, record, timeout, lock_key)
        finally:
            self.wrote(made)

    def add(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        added = self._write(self.scripts.add, made, record, timeout, lock_key)
        if added:
            self.wrote(made)
        return added

    def delete(self, made: str, lock_key: str) -> bool:
        """``DEL`` that also ends a hold and revokes a regeneration's lease."""
        key, lock = self.raw_key(made), self.raw_key(lock_key)
        try:
            return bool(self.scripts.delete(
                keys=[key, lock, lock + ":retry"], client=self.client_for(key),
            ))
        except self.errors as exc:
            if self.ignore and is_outage(exc):
                return False
            raise
        finally:
            self.wrote(made)

    def delete_many(self, made: list[str], lock_keys: list[str]) -> None:
        """One ``DEL`` per server (per slot on a cluster): each record with
        its lock and hold."""
        by_server: dict[Any, tuple[Any, list[str]]] = {}
        for record, lock in zip(made, lock_keys):
            key, lock = self.raw_key(record), self.raw_key(lock)
            client = self.client_for(key)
            group = client.keyslot(key) if self.cluster else id(client)
            by_server.setdefault(group, (client, []))[1].extend((key, lock, lock + ":retry"))
        try:
            for client, keys in by_server.values():
                client.delete(*keys)
        except self.errors as exc:
            if not (self.ignore and is_outage(exc)):
                raise
        finally:
            for record in made:
                self.wrote(record)


class OmittingStore:
    """A store that raises where its alias says ``IGNORE_EXCEPTIONS``:
    django-valkey's ``ClusterValkeyCache`` (0.4) does not apply the option,
    so a primary that died raised ``ConnectionInterrupted`` from every
    ``get``.  DogpileCache applies it itself, as django-valkey does on one
    node: during an outage a read is a miss, a write is not made (and says
    so), and any other error is raised."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _omit(self, name: str, failed: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._store, name)(*args, **kwargs)
        except Exception as exc:
            if not is_outage(exc):
                raise
            # debug, not warning: during an outage this is every read of
            # every request (the lease logs the outage once per call path)
            log.debug("store unavailable (%s); %s ignored (IGNORE_EXCEPTIONS)", exc, name)
            return failed

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._omit("get", default, key, default, version)

    def get_many(self, keys: Any, version: int | None = None) -> Any:
        return self._omit("get_many", {}, keys, version=version)

    def set(self, *args: Any, **kwargs: Any) -> Any:
        return self._omit("set", False, *args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        return self._omit("add", False, *args, **kwargs)

    def touch(self, *args: Any, **kwargs: Any) -> Any:
        return self._omit("touch", False, *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._omit("delete", False, *args, **kwargs)

    def set_many(self, data: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        return self._omit("set_many", list(data), data, *args, **kwargs)

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._omit("delete_many", None, *args, **kwargs)

    def clear(self) -> Any:
        return self._omit("clear", False)


def adapter_for(
    store: Any, lock: str, lock_timeout: float, alias: str | None = None, holds: bool = True,
) -> StoreAdapter:
    """Return the adapter for ``store`` (``caches[alias]``) under the ``LOCK`` option ``lock``.

    ``holds``: the alias sets ``RETRY_AFTER``, so a lease may find a hold
    (every worker shares the alias's OPTIONS; without it none is ever left).

    Raises :class:`ValueError` when ``lock`` asks for what the store cannot do.
    """
    access = redis_access(store)
    if lock == "auto":
        if access is not None:
            lock = "redis"
        elif is_in_process(store):
            lock = "local"
        elif is_file(store):
            lock = "file"
        else:
            lock = "cache"
    if lock == "redis":
        if access is None:
            raise ValueError(
                "LOCK 'redis' needs a Redis store (django-redis, django-valkey or "
                f"Django's RedisCache), not {class_path(store)}"
            )
        if access.cluster and access.ignore:
            store = OmittingStore(store)  # the option the cluster store does not apply
        return RedisAdapter(store, access, lock_timeout)
    if lock == "cache" and is_file(store):
        lock = "file"  # the file cache's add() is has_key() then set(): not a lock
    if is_memcached(store):
        return StoreAdapter(MemcachedStore(store, alias), lock, lock_timeout, holds)
    return StoreAdapter(store, lock, lock_timeout, holds)
