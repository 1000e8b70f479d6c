"""The leases a :class:`~django_dogpile.locks.KeyMutex` takes in a shared store.

One class per store kind (chosen by :mod:`django_dogpile.stores`), one
interface (:class:`Lease`): ``acquire`` (a blocking call may return
:data:`LANDED`: the record arrived instead of the lock), ``release``,
``hold`` (release, leaving a ``RETRY_AFTER`` hold only the stale path
reads), ``store`` (the fenced write) and ``snapshot`` (the record read with
the lock, if the lease reads it).

* :class:`~django_dogpile.redis_lease.RedisLease` -- django-redis: Lua
  scripts; owner-checked, pub/sub wake-up; token check + ``SET`` + release
  in one script (its own module).
* :class:`CacheLease` -- ``cache.add()`` (memcached, any store whose
  ``add()`` is atomic), polled with back-off.
* :class:`FileLease` -- Django's file cache: a lease file under ``flock``.
* :class:`DatabaseLease` -- Django's database cache: a lease row taken by
  primary key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import time
import uuid
from typing import Any, Callable, Iterator, Protocol

from .state import MISSING

__all__ = [
    "LANDED",
    "CacheLease",
    "DatabaseLease",
    "FileLease",
    "Lease",
    "LeaseUnavailable",
    "is_outage",
]

log = logging.getLogger(__name__)


#: Errors a Redis-protocol server raises for every write, whatever the key:
#: the store is down for writing, as if unreachable.
_OUTAGES = frozenset({
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
})


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


class CacheLease:
    """A lease made with ``cache.add()``; see the module docstring.

    ``add()`` must be atomic in the store (memcached, the database cache on
    a database that serialises the insert of one primary key).
    """

    __slots__ = ("cache", "lock_key", "record_key", "timeout", "token", "_snapshot", "check_hold")

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
        result: Any = self.cache.set(self.record_key, record, timeout=timeout)  # type: ignore[func-returns-value]
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
                "lease %s was gone at release (LOCK_TIMEOUT %ss, or an explicit "
                "set revoked it)", self.lock_key, self.timeout,
            )


# --- Django's file cache ----------------------------------------------------


class FileLease(CacheLease):
    """A lease file beside the file cache's own files, changed under ``flock``.

    ``FileBasedCache.add()`` is ``has_key()`` then ``set()``: two processes
    both "add" the same lock.  Here each check-and-write of a lease file
    happens under an exclusive ``flock`` of one guard file per cache
    directory, held for microseconds and dropped by the kernel if the
    process dies; the lease file holds the owner's token and the wall-clock
    time its lease runs out.  One host only, as the file cache is.
    """

    __slots__ = ("path", "guard")

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        super().__init__(store, lock_key, record_key, lock_timeout)
        directory = store._dir
        name = hashlib.md5(store.make_key(lock_key).encode(), usedforsecurity=False).hexdigest()
        self.path = os.path.join(directory, name + ".dogpile-lease")
        self.guard = os.path.join(directory, ".dogpile-guard")

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.guard), exist_ok=True)
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _read(self) -> tuple[str, float] | None:
        try:
            with open(self.path) as f:
                token, until = f.read().split()
            return token, float(until)
        except (OSError, ValueError):
            return None

    def _take(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[1] > time.time():
                return False
            with open(self.path, "w") as f:
                f.write(f"{self.token} {time.time() + self.timeout!r}")
            return True

    def holds(self) -> bool:
        with self._guarded():
            current = self._read()
        return current is not None and current[0] == self.token and current[1] > time.time()

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        with self._guarded():  # no other lease change while we check and write
            current = self._read()
            if current is not None and current[0] != self.token:
                return None  # another holder's lease, running or run out
            if not unchanged():
                return None
            self.cache.set(self.record_key, record, timeout=timeout)
            return True

    def _drop(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[0] == self.token:
                os.unlink(self.path)
                return current[1] > time.time()
        return False


# --- Django's database cache --------------------------------------------------


class DatabaseLease(CacheLease):
    """A lease row in the database cache's table, taken by primary key.

    ``DatabaseCache.add()`` over an *expired* row is SELECT then UPDATE: on a
    database that lets two transactions read the expired row (PostgreSQL's
    READ COMMITTED), both "add" it.  Here an expired lease row is deleted by
    a ``DELETE ... WHERE expires < now`` and the lease taken by a plain
    ``INSERT``, which the primary key lets exactly one caller win; expiry is
    kept to the microsecond (the cache itself truncates to seconds).  The
    store's own writes fail silently on a busy database (SQLite's "database
    is locked"): a fenced write is retried a few times and reported when it
    could not be made.
    """

    __slots__ = ()

    def _sql(self, statement: str, params: list[Any]) -> int:
        from django.db import connections, router

        store = self.cache
        db = router.db_for_write(store.cache_model_class)
        connection = connections[db]
        table = connection.ops.quote_name(store._table)
        with connection.cursor() as cursor:
            cursor.execute(statement.format(table=table), params)
            return cursor.rowcount

    def _take(self) -> bool:
        import base64

        from django.db import DatabaseError, connections, router, transaction
        from django.utils import timezone

        store = self.cache
        key = store.make_key(self.lock_key)
        now = timezone.now()
        expires = now + _timedelta(self.timeout)
        db = router.db_for_write(store.cache_model_class)
        ops = connections[db].ops
        value = base64.b64encode(pickle.dumps(self.token)).decode("latin1")
        try:
            with transaction.atomic(using=db):
                self._sql(
                    "DELETE FROM {table} WHERE cache_key = %s AND expires < %s",
                    [key, ops.adapt_datetimefield_value(now)],
                )
                self._sql(
                    "INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s)",
                    [key, value, ops.adapt_datetimefield_value(expires)],
                )
        except DatabaseError:  # the key is taken (or the database busy)
            return False
        return True

    def _write(self, record: Any, timeout: float | None) -> bool:
        store = self.cache
        key = store.make_key(self.record_key)
        for attempt in range(20):
            if store._base_set("set", key, record, timeout):
                return True
            time.sleep(0.005 * (attempt + 1))
        return False

    def _holder(self) -> Any:
        from django.db import DatabaseError

        for attempt in range(20):
            try:
                return self.cache.get(self.lock_key)
            except DatabaseError:  # busy: try again
                time.sleep(0.005 * (attempt + 1))
        raise LeaseUnavailable(f"{self.lock_key}: the database stayed busy")

    def holds(self) -> bool:
        return self._holder() == self.token

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        from django.db import DatabaseError

        try:
            return super().store(record, timeout, unchanged)
        except DatabaseError:  # the database stayed busy
            return False

    def _drop(self) -> bool:
        from django.db import DatabaseError

        if not self.holds():
            return False
        key = self.cache.make_key(self.lock_key)
        for attempt in range(20):
            try:
                self._sql("DELETE FROM {table} WHERE cache_key = %s", [key])
                return True
            except DatabaseError:  # busy: the row would block the key for LOCK_TIMEOUT
                time.sleep(0.005 * (attempt + 1))
        log.warning("%s: could not delete the lease row (database busy); it expires", self.lock_key)
        return True


def _timedelta(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)
