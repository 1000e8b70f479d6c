"""What every store kind provides: a lease, an adapter, one error classifier.

A store kind (the table: :mod:`django_dogpile.stores.kinds`) is one module
here: its lease and, where the store needs one, its adapter.  One interface
(:class:`Lease`) for the lease a :class:`~django_dogpile.engine.locks.KeyMutex`
takes: ``acquire`` (a blocking call may return :data:`LANDED`: the record
arrived instead of the lock), ``release``, ``hold`` (release, leaving a
``RETRY_AFTER`` retry hold only the stale path reads), ``store`` (the fenced
write) and ``snapshot`` (the record read with the lock, if the lease reads it).

* :class:`~django_dogpile.stores.redis_lease.RedisLease` -- Redis: Lua
  scripts; owner-checked, pub/sub wake-up; token check + ``SET`` + release
  in one script.
* :class:`AddLease` (here) -- ``cache.add()`` (memcached, any store whose
  ``add()`` is atomic), polled with back-off.
* :class:`~django_dogpile.stores.file.FileLease` -- Django's file cache: a
  lease file under ``flock``.
* :class:`~django_dogpile.stores.database.DatabaseLease` -- Django's
  database cache: a lease row taken by primary key.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from django.core.cache.backends.base import default_key_func

from django_dogpile.records import MISSING

__all__ = [
    "LANDED",
    "AddLease",
    "Lease",
    "LeaseUnavailable",
    "StoreAdapter",
    "class_path",
    "is_outage",
    "plain_keys",
    "store_ident",
]

log = logging.getLogger(__name__)


#: Errors a Redis-protocol server raises for every write, whatever the key:
#: the store is down for writing, as if unreachable.
_OUTAGES = frozenset(
    {
        "ConnectionError",  # unreachable, reset, refused (LOADING is one too)
        "TimeoutError",
        "OutOfMemoryError",  # OOM: maxmemory reached under noeviction
        "ReadOnlyError",  # READONLY: a replica (a failover demoted the primary)
        "MasterDownError",  # MASTERDOWN: a replica cut from its primary
        "ClusterDownError",  # CLUSTERDOWN
        "TryAgainError",  # TRYAGAIN
        "RedisClusterException",  # a cluster client that reaches no node
        "ValkeyClusterException",
        "ConnectionInterrupted",  # django-redis / django-valkey's wrapper of the above
    }
)


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` means the store takes no write at all (an outage for
    the stale path and for ``IGNORE_EXCEPTIONS``), False for an error of
    this one call (a wrong type, a script error), which is always raised.

    The one place store errors are classified: the leases, the writes and
    the near cache's listener all ask here.
    """
    if any(cls.__name__ in _OUTAGES for cls in type(exc).__mro__):
        return True
    return str(exc).startswith(_OUTAGE_REPLIES)


#: error replies (no class of their own in redis-py) that refuse every write
_OUTAGE_REPLIES = (
    "MISCONF",  # RDB snapshots failing with stop-writes-on-bgsave-error
    "NOREPLICAS",  # min-replicas-to-write not met
    "BUSY ",  # a script or function past busy-reply-threshold
    "CLUSTERDOWN",  # the cluster cannot serve the slot (mid-failover)
    "TRYAGAIN",  # a multi-key call during a slot migration
)


class LeaseUnavailable(Exception):
    """The lease's store is down and the store is set to ignore errors."""


#: What a blocking ``Lease.acquire`` returns when, instead of the lock, it
#: found the record that the holder just stored (see :class:`KeyMutex`).
LANDED = object()


class Lease(Protocol):
    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any: ...

    def release(self) -> None: ...

    def hold(self, seconds: float) -> None: ...

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None: ...

    def snapshot(self) -> Any: ...


# --- any other shared Django cache ------------------------------------------


class AddLease:
    """A lease made with ``cache.add()``; see the module docstring.

    ``add()`` must be atomic in the store (memcached, the database cache on
    a database that serialises the insert of one primary key).
    """

    __slots__ = ("cache", "lock_key", "record_key", "timeout", "token", "_snapshot", "check_hold", "waited")

    released_by_store = False

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        self.cache = store
        self.lock_key = lock_key
        self.record_key = record_key
        self.timeout = lock_timeout
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING
        #: look for a RETRY_AFTER hold on the stale path (the alias sets
        #: RETRY_AFTER; without it no hold is ever left: no round trip)
        self.check_hold = True
        #: a blocking acquire found another holder and waited (a ``WAITS``)
        self.waited = False

    def _take(self) -> bool:
        return bool(self.cache.add(self.lock_key, self.token, timeout=self.timeout))

    def holds(self) -> bool:
        return self.cache.get(self.lock_key) == self.token

    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any:
        """Take the lease; a blocking call may return :data:`LANDED` instead.

        A non-blocking call (the stale path) fails while a retry hold is on.
        """
        if not wait and self.check_hold and self.cache.get(self.lock_key + ":retry") is not None:
            return False
        self._snapshot = MISSING  # an unusable record seen before is no answer now
        delay = 0.005
        while True:
            if self._take():
                return True
            remaining = deadline - time.monotonic()
            if not wait or remaining <= 0:
                return False
            self.waited = True
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
            if landed_ok:
                record = self.cache.get(self.record_key, MISSING)
                if record is not MISSING:
                    self._snapshot = record
                    return LANDED

    def snapshot(self) -> Any:
        return self._snapshot

    def _holder(self) -> Any:
        return self.cache.get(self.lock_key)

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        """Write ``record`` if the record is the one the regeneration started
        from and no other caller holds the lease (ours, or none left).

        Not atomic: the window is one round trip, between the checks and
        the write.
        """
        if not unchanged():
            return None
        holder = self._holder()
        if holder is not None and holder != self.token:
            return None
        return self._write(record, timeout)

    def _write(self, record: Any, timeout: float | None) -> bool:
        result: Any = self.cache.set(self.record_key, record, timeout=timeout)
        return result is not False

    def hold(self, seconds: float) -> None:
        self.cache.set(self.lock_key + ":retry", 1, timeout=seconds)
        self.release()

    def _drop(self) -> bool:
        if self.holds():
            self.cache.delete(self.lock_key)
            return True
        return False

    def release(self) -> None:
        # Not atomic on stores without compare-and-delete: the window is the
        # time between these two calls, and only matters if the lease ran out
        # just then.
        if not self._drop():
            log.warning(
                "lease %s was gone at release (LOCK_TIMEOUT %ss, or an explicit set revoked it)",
                self.lock_key,
                self.timeout,
            )


# --- the adapter every store kind has ------------------------------------------


def class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class StoreAdapter:
    """The lease factory of one store, and its store-specific writes.

    ``kind`` is the lock in force: ``"redis"``, ``"file"``, ``"cache"`` or
    ``"local"`` (see :mod:`django_dogpile.stores.kinds`).
    """

    #: a write through the lease checks the token atomically
    fenced_by_lease = False
    #: a Redis Cluster (keys hash-tagged: see :mod:`django_dogpile.stores.pubsub`)
    cluster = False

    #: the record of a store key changed: called after every write (a near
    #: cache in front of the store replaces it with its eviction)
    wrote: Callable[[str], None] = staticmethod(lambda skey: None)

    def __init__(
        self,
        store: Any,
        kind: str,
        lock_timeout: float,
        lease: Callable[[Any, str, str, float], Any] | None = None,
        *,
        in_process: bool = False,
        set_reports: bool = False,
        retry_holds: bool = True,
    ) -> None:
        """``kind`` is the ``LOCK`` in force; ``lease`` the class of its lease
        (None: the in-process lock alone); ``retry_holds``: the alias sets
        ``RETRY_AFTER``, so a lease may find a retry hold."""
        self.store = store
        #: the store itself, never a near cache in front of it: what a
        #: read-modify-write or a fence must read (``store`` may become a
        #: NearStore, whose copies may be older than the store's record)
        self.backing = store
        self.kind = kind
        self.lock_timeout = lock_timeout
        #: the store lives in this process (locmem): no I/O, no lease
        self.in_process = in_process
        # django-redis's set() returns True, or None when IGNORE_EXCEPTIONS
        # swallowed an error; Django's own backends return None on success.
        self.set_reports = set_reports
        self.lease: Callable[[str, str], Any] | None = None
        if lease is not None:
            factory = lease

            def new_lease(lock_key: str, record_key: str) -> Any:
                taken = factory(store, lock_key, record_key, lock_timeout)
                taken.check_hold = retry_holds
                return taken

            self.lease = new_lease

    def set(self, skey: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """Store ``record`` for an explicit ``set()``; True if stored."""
        result: Any = self.store.set(skey, record, timeout=timeout)
        return bool(result) if self.set_reports else result is not False

    def add(self, skey: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        return bool(self.store.add(skey, record, timeout=timeout))

    def delete(self, skey: str, lock_key: str) -> bool:
        """Delete for an explicit ``delete()``; True if the key existed."""
        return bool(self.store.delete(skey))

    def delete_many(self, skeys: list[str], lock_keys: list[str]) -> None:
        self.store.delete_many(skeys)

    def end_hold(self, lock_key: str) -> None:
        """End a ``RETRY_AFTER`` hold on the key (``set``/``delete`` do)."""
        if self.kind in ("cache", "file"):
            self.store.delete(lock_key + ":retry")


# --- store keys ------------------------------------------------------------------


def plain_keys(cache: Any) -> bool:
    """True if ``cache`` makes a key from the key alone (its prefix and
    version aside): Django's key function, and a ``make_key`` that only
    applies it.  Another key function, or a ``make_key`` of its own, may
    read the request (a tenant)."""
    if getattr(cache, "key_func", default_key_func) is not default_key_func:
        return False
    make_key = getattr(type(cache), "make_key", None)
    return make_key is None or getattr(make_key, "__qualname__", "") in _PLAIN_MAKE_KEYS


#: ``make_key`` methods known to apply the key function and nothing else
_PLAIN_MAKE_KEYS = frozenset({"BaseCache.make_key", "BaseValkeyCache.make_key"})


def store_ident(store: Any, plain: bool | None = None) -> Callable[[str], str]:
    """How a near cache names the record ``skey``: by the store's own key.

    With plain keys (:func:`plain_keys`) that is ``skey`` itself (the
    store's prefix and version are the same for every key); another key
    function or ``make_key`` may put the request's tenant in the key, and
    then the store's key it is.
    """
    if plain is None:
        plain = plain_keys(store)
    if plain:
        return _same
    return lambda skey: str(store.make_key(skey))


def _same(skey: str) -> str:
    return skey
