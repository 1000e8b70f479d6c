"""Redis-protocol stores we script: django-redis, django-valkey (one node,
Sentinel, shards, cluster) and Django's own ``RedisCache``.

:func:`redis_access` finds the native client of such a store;
:class:`RedisAdapter` runs the lease and the explicit writes as Lua scripts
(:mod:`django_dogpile.stores.redis_lease`) on the record's primary, values
encoded by the store's own serializer (so its ``get`` reads what a script
wrote).  :class:`OmittingStore` applies ``IGNORE_EXCEPTIONS`` where a cluster
store does not.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_dogpile import degraded
from django_dogpile.stores.base import StoreAdapter, is_outage
from django_dogpile.stores.pubsub import is_cluster
from django_dogpile.stores.redis_lease import RedisLease, RedisScripts

__all__ = ["OmittingStore", "RedisAccess", "RedisAdapter", "is_django_redis", "redis_access"]

log = logging.getLogger(__name__)

#: the degraded-mode cause of a write the store's outage dropped (IGNORE_EXCEPTIONS)
NOT_WRITTEN = "store unavailable; value not written"

#: Django's own Redis backend (5.0+: 4.2 has it too)
DJANGO_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def _inherits(store: Any, path: str) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" == path for c in type(store).__mro__)


def _module_of(store: Any, *packages: str) -> bool:
    return any(c.__module__.split(".")[0] in packages for c in type(store).__mro__)


def is_django_redis(store: Any) -> bool:
    """True for django-redis's (or django-valkey's) cache with a scriptable client."""
    client = getattr(store, "client", None) if _module_of(store, "django_redis", "django_valkey") else None
    return (
        client is not None
        and hasattr(client, "decode")
        and (hasattr(client, "get_server") or hasattr(client, "get_client"))
    )


@dataclass(frozen=True)
class RedisAccess:
    """How to run the lease's scripts on one Redis-protocol store.

    ``client_for(made_key)`` is the client of the server that holds the
    record ``skey`` (its primary): the lock key of a record always goes
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
                f"{name} (shards)",
                wrapper.get_server,
                lambda: list(wrapper._serverdict.values()),
                wrapper.encode,
                wrapper.decode,
                errors,
                ignore,
            )
        primary = wrapper.get_client(write=True)
        if is_cluster(primary):
            # the cluster client routes each command (and each script, by its
            # keys' one slot) to the primary that serves the slot
            name = f"{name} (cluster)"
        return RedisAccess(
            name,
            lambda key: primary,
            lambda: [primary],
            wrapper.encode,
            wrapper.decode,
            errors,
            ignore,
            is_cluster(primary),
        )
    if _inherits(store, DJANGO_REDIS_CACHE):
        inner = store._cache
        serializer = inner._serializer
        main = inner.get_client(write=True)
        return RedisAccess(
            "Django's RedisCache",
            lambda key: main,
            lambda: [main],
            serializer.dumps,
            serializer.loads,
            _connection_errors("redis"),
            False,
        )
    return None


class RedisAdapter(StoreAdapter):
    """A Redis-protocol store: scripts on the record's primary, values encoded
    by the store's own serializer (so its ``get`` reads what a script wrote)."""

    fenced_by_lease = True

    def __init__(self, store: Any, access: RedisAccess, lock_timeout: float, alias: str = "?") -> None:
        super().__init__(store, "redis", lock_timeout, set_reports=is_django_redis(store))
        #: the store's alias: what its degraded-mode warnings are aggregated by
        self.alias = alias
        #: the clients (shards) whose last write an outage dropped
        self._down: set[int] = set()
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

    def _write(self, script: Any, skey: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        px = 0 if timeout is None else max(int(timeout * 1000), 1)
        key, lock = self.raw_key(skey), self.raw_key(lock_key)
        client = self.client_for(key)
        try:
            written = bool(
                script(keys=[key, lock, lock + ":retry"], args=[self.encode(record), px], client=client)
            )
        except self.errors as exc:
            if self.ignore and is_outage(exc):
                self._down.add(id(client))
                degraded.warn(
                    log, self.alias, NOT_WRITTEN, "%s: %s (%s: %s)", self.alias, NOT_WRITTEN, exc, skey
                )
                return False
            raise
        if self._down:  # over once every client that dropped a write took one again
            self._down.discard(id(client))
            if not self._down:
                degraded.recovered(log, self.alias, NOT_WRITTEN)
        return written

    def set(self, skey: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """``SET`` that also revokes a running regeneration's lease."""
        try:
            return self._write(self.scripts.set, skey, record, timeout, lock_key)
        finally:
            self.wrote(skey)

    def add(self, skey: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        added = self._write(self.scripts.add, skey, record, timeout, lock_key)
        if added:
            self.wrote(skey)
        return added

    def delete(self, skey: str, lock_key: str) -> bool:
        """``DEL`` that also ends a hold and revokes a regeneration's lease."""
        key, lock = self.raw_key(skey), self.raw_key(lock_key)
        try:
            return bool(
                self.scripts.delete(
                    keys=[key, lock, lock + ":retry"],
                    client=self.client_for(key),
                )
            )
        except self.errors as exc:
            if self.ignore and is_outage(exc):
                return False
            raise
        finally:
            self.wrote(skey)

    def delete_many(self, skeys: list[str], lock_keys: list[str]) -> None:
        """One ``DEL`` per server (per slot on a cluster): each record with
        its lock and hold."""
        by_server: dict[Any, tuple[Any, list[str]]] = {}
        for record, lock in zip(skeys, lock_keys):
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
            for record in skeys:
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
